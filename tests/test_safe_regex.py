"""Authors' regexes run in bounded time (RE2, or ``regex`` with a deadline) and mean what Python means."""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_runtime import Recorder

from personae import Chat, Event, Incoming, User
from personae.adapters.base import AdapterConfig
from personae.app.runtime import Bot, BotOptions
from personae.engine.engine import Engine
from personae.engine.regex_syntax import shape
from personae.engine.safe_regex import Budget, RegexTimeout, SafeRegex, compile_regex
from personae.language.lint import lint
from personae.language.loader import load_personas, parse_persona

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_TEXT = "a" * 40 + "!"
# Exponential for a backtracking engine on HOSTILE_TEXT; the first two run in RE2, the last needs the fallback.
HOSTILE = [r"(a+)+$", r"(a*)*(?P<end>b)", r"(a|aa)+\1b"]


def hostile_persona(*patterns: str, persona: str = "h") -> str:
    rules = "".join(f"  - when: {{regex: '{p}'}}\n    say: hostile\n" for p in patterns)
    return (
        f"persona: {persona}\nname: H\nevents:\n  tick:\n    say: tick\nreplies:\n{rules}"
        "  - when: {keywords: [hello]}\n    say: hi\n"
        "fallback: {say: nothing matched}\n"
    )


def message(text: str, persona: str = "h") -> Incoming:
    return Incoming(persona, "console", Chat("c"), User("u", "U"), text)


@pytest.mark.timeout(60)  # a backtracking engine needs 2**40 steps: the guard, not a timing assertion
@pytest.mark.parametrize("pattern", HOSTILE)
async def test_hostile_regex_and_message_complete(pattern):
    engine = Engine({"h": parse_persona(hostile_persona(pattern))})
    for _ in range(3):
        out = await engine.handle(message(HOSTILE_TEXT))
        assert [o.text for o in out] == ["nothing matched"]
    assert [o.text for o in await engine.handle(message("hello"))] == ["hi"]
    timeouts = [p for p in engine.problems if "regex ran out" in p.message]
    # The fallback rule that timed out is reported once, not once per message.
    assert len(timeouts) == (1 if compile_regex(pattern).engine == "regex" else 0)


def test_a_spent_budget_is_a_timeout_not_a_hang():
    rx = compile_regex(r"(a|aa)+\1b")
    assert rx.engine == "regex"
    with pytest.raises(RegexTimeout):
        rx.search(HOSTILE_TEXT, Budget.start(0.0))
    assert rx.search("aab") == {}


@pytest.mark.timeout(120)
async def test_a_running_bot_keeps_its_timeline_going_through_hostile_messages(tmp_path):
    from personae.storage.store import Store

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "h.yaml").write_text(hostile_persona(*HOSTILE))
    store = await Store(tmp_path / "bot.db").open()
    adapter = Recorder(AdapterConfig("tg", "h", channels=("-500",)))
    bot = Bot(load_personas([folder]), [adapter], store=store, options=BotOptions(seed=1))
    await bot.start(schedules=False)
    try:

        async def flood() -> None:
            for k in range(5):
                text = HOSTILE_TEXT
                await bot.on_message(Incoming("h", "telegram", Chat("100"), User("7", "A"), text, message_id=str(k)))
                await asyncio.sleep(0)

        async def timeline() -> None:
            for k in range(5):
                await bot.deliver(await bot.engine.dispatch(Event("tick", bot.engine.clock.now(), key=f"t{k}")))
                await asyncio.sleep(0)

        await asyncio.gather(flood(), timeline())
        await bot.drain()
    finally:
        await bot.stop()
        await store.close()
    texts = [(d.chat, d.text) for d in adapter.sent]
    assert texts.count(("-500", "tick")) == 5  # every event of the timeline went out
    assert texts.count(("100", "nothing matched")) == 5  # and every hostile message was answered


def test_lint_flags_nested_quantifiers_and_fallback_rules(tmp_path):
    for i, pattern in enumerate([*HOSTILE, r"(a|a)*x", r"(?<=x)y", r"(?:ab|ac)+d"]):
        (tmp_path / f"h{i}.yaml").write_text(hostile_persona(pattern, persona=f"h{i}"))
    result = lint([tmp_path])
    got = sorted(str(d) for d in result.diagnostics if "regex" in d.message)
    p = tmp_path
    nested = "warning: replies[0].when.regex: regex has a"
    fallback = "warning: replies[0].when.regex: regex needs the fallback engine"
    assert any(s.startswith(f"{p / 'h0.yaml'}:7:19: {nested} quantifier inside a quantified group") for s in got)
    assert any(s.startswith(f"{p / 'h1.yaml'}:7:19: {nested} quantifier inside a quantified group") for s in got)
    assert any(s.startswith(f"{p / 'h2.yaml'}:7:19: {fallback} (a back-reference)") for s in got)
    assert any(s.startswith(f"{p / 'h3.yaml'}:7:19: {nested} repeated alternation") for s in got)
    assert any(s.startswith(f"{p / 'h4.yaml'}:7:19: {fallback} (a lookbehind)") for s in got)
    assert not any(s.startswith(f"{p / 'h5.yaml'}") for s in got)  # 'ab|ac' cannot match the same text
    assert not result.errors


def test_lint_cli_prints_the_warning_at_the_regex(tmp_path):
    (tmp_path / "h.yaml").write_text(hostile_persona("(a+)+$"))
    r = subprocess.run(
        [sys.executable, "-m", "personae", "lint", str(tmp_path / "h.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in r.stderr + r.stdout
    assert f"{tmp_path / 'h.yaml'}:7:19: warning: replies[0].when.regex: regex has a quantifier" in r.stdout + r.stderr


def test_shipped_personas_run_in_re2_without_lint_warnings():
    for path in sorted((ROOT / "personas").glob("*.yaml")):
        for rule in yaml.safe_load(path.read_text())["replies"]:
            pattern = rule["when"].get("regex")
            if pattern is not None:
                assert compile_regex(pattern).engine == "re2", pattern
                assert shape(pattern).nested == (), pattern


def _shipped_patterns() -> list[str]:
    out = []
    for path in sorted((ROOT / "personas").glob("*.yaml")):
        out += [r["when"]["regex"] for r in yaml.safe_load(path.read_text())["replies"] if "regex" in r["when"]]
    return [
        *sorted(set(out)),
        r"(?i)how far is (?P<what>\w+)",  # the test persona's
        r"^(?P<a>\d+)\s*(?P<b>\S+)$",
        r"(?m)^where\b.*$",
        r"(?s)are.you",
        r"(?i)[^a-z\s]+",
        r"\W+|\B",
        r"[\W\d]+(?P<x>\s)",
        r"(?a)\w+\s",
    ]


WORDS = ["where", "are", "you", "is", "philae", "Philae", "how", "far", "earth", "the", "away", "your", "name"]
ODD = ["é", "İ", "ı", "\u212a", "ſ", "ß", "Σ", "ς", "\u0345", "٣", "²", "\u00a0", "\u2028", "\n", "\x1c", "'", "_", "1"]
# Characters Python 3.11 calls unassigned may be letters in the engines' newer Unicode tables (documented).
assigned = st.characters(exclude_categories=("Cn", "Cs"))
texts = (
    st.lists(st.sampled_from([*WORDS, *ODD, " ", "  ", "?", "WHERE", "ARE"]), max_size=12).map("".join)
    | st.text(assigned, max_size=30)
    # ASCII texts run RE2's ASCII form of each pattern (\w as [A-Za-z0-9_]): every ASCII character.
    | st.text(st.characters(max_codepoint=0x7F), max_size=30)
)


@functools.cache
def compiled(pattern: str) -> SafeRegex:
    return compile_regex(pattern)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_shipped_patterns()), texts)
def test_re2_path_agrees_with_python_re(pattern, text):
    safe = compiled(pattern)
    m = re.search(pattern, text)
    expected = None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}
    assert safe.search(text) == expected
