"""Issue 9, attacked again with inputs its implementers did not design for (independent review)."""

from __future__ import annotations

import pytest
from test_safe_regex import hostile_persona, message

from personae.engine.engine import Engine
from personae.engine.safe_regex import Budget, RegexTimeout, compile_regex
from personae.language.lint import lint
from personae.language.loader import parse_persona

# RE2 accepts these, and stays linear in the text, but its cost per character grows with the
# unrolled repetition: four of the first spent ~3 s on one 4,000-character message.
BIG_COUNTS = [r"[\w\W]{1000}[\w\W]{1000}[\w\W]{1000}[\w\W]{1000}q", r"(?:.{20}){40}q", r"(?s:.){0,5000}q"]


@pytest.mark.parametrize("pattern", BIG_COUNTS)
def test_large_counted_repetitions_run_under_the_deadline(pattern):
    rx = compile_regex(pattern)
    assert rx.engine == "regex"
    with pytest.raises(RegexTimeout):
        rx.search("q " + "é" * 4000, Budget.start(0.0))


WORDS = "(?:" + "|".join(f"w{i}" for i in range(300)) + ")"


@pytest.mark.parametrize("pattern", [r"\d{4}-\d{2}-\d{2}", r"\w{1,100}!", WORDS])
def test_ordinary_counts_and_long_word_lists_stay_in_re2(pattern):
    assert compile_regex(pattern).engine == "re2"


@pytest.mark.timeout(120)  # RE2's slow path needs seconds here: the guard, not a timing assertion
async def test_a_message_against_large_counted_repetitions_completes_and_is_answered():
    engine = Engine({"h": parse_persona(hostile_persona(*(BIG_COUNTS[0].replace("q", f"q{i}") for i in range(5))))})
    text = "q0 q1 q2 q3 q4 " + "é" * 4000
    assert [o.text for o in await engine.handle(message(text))] == ["nothing matched"]
    assert [o.text for o in await engine.handle(message("hello"))] == ["hi"]


def test_lint_says_a_large_counted_repetition_needs_the_fallback(tmp_path):
    (tmp_path / "h.yaml").write_text(hostile_persona(r"(?:.{20}){40}q"))
    got = [str(d) for d in lint([tmp_path]).diagnostics]
    assert any("regex needs the fallback engine (counted repetitions unrolling to 800 positions" in s for s in got), got
