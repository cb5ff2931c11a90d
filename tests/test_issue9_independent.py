"""Issue 9, attacked again with inputs its implementers did not design for (independent review)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta

import pytest
from test_replay_exact import cast, personae, timeline
from test_safe_regex import hostile_persona, message

from personae.app.config import TimelineEntry
from personae.app.replay import parse_end
from personae.app.replay_control import parse_request
from personae.engine.engine import Engine
from personae.engine.safe_regex import Budget, RegexTimeout, compile_regex
from personae.language.lint import lint
from personae.language.loader import parse_persona
from personae.timing.timeline import parse_time

__all__ = ["cast"]  # a fixture of test_replay_exact

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


# --------------------------------------------------------------------------- --to a date, in every ISO 8601 spelling


@pytest.mark.parametrize("day", ["2014-11-13", "20141113", "2014-W46-4", " 2014-11-13 "])
def test_to_a_date_in_any_iso_spelling_is_its_whole_day(day):
    last = datetime(2014, 11, 13, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_end(day) == last
    assert parse_time(day) == datetime(2014, 11, 13, tzinfo=UTC)
    assert parse_request(f"to={day.strip()}").end == last
    assert TimelineEntry.model_validate({"file": "t.yaml", "to": day}).to == last


def test_to_a_time_is_that_instant():
    assert parse_end("2014-11-13T06:00Z") == datetime(2014, 11, 13, 6, tzinfo=UTC)
    assert parse_end("20141113T0600Z") == datetime(2014, 11, 13, 6, tzinfo=UTC)


def test_replay_to_a_basic_format_date_plays_that_day(cast, tmp_path):
    tl = timeline(tmp_path / "t.yaml", 6, step=timedelta(hours=10))  # the 12th 00:00 to the 14th 02:00
    r = personae(
        "replay", str(tl), "--personas", str(cast), "--speed", "max", "--dry-run", "--to", "20141113", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert sorted({line[:16] for line in r.stdout.splitlines()})[-2:] == ["2014-11-13 06:00", "2014-11-13 16:00"]


# --------------------------------------------------------------------------- adapter numbers in bot.toml


WRONG_NUMBERS = [
    ('per_chat_rate = "1/s"', "per_chat_rate must be a number above 0, not '1/s'"),
    ("per_chat_rate = nan", "per_chat_rate must be a number above 0, not nan"),
    ("group_per_minute = -1", "group_per_minute must be a number above 0, not -1"),
    ('concurrency = "many"', "concurrency must be a whole number above 0, not 'many'"),
    ("concurrency = 0", "concurrency must be a whole number above 0, not 0"),
    ("concurrency = 1.5", "concurrency must be a whole number above 0, not 1.5"),
    ("global_rate = true", "global_rate must be a number above 0, not True"),
]


@pytest.mark.parametrize(("option", "says"), WRONG_NUMBERS)
def test_adapters_refuse_a_wrong_number_naming_the_option(option, says):
    pytest.importorskip("telegram")
    from personae.adapters.base import AdapterConfig, OptionError
    from personae.adapters.telegram import TelegramAdapter

    key, value = option.split(" = ")
    options = tomllib.loads(f"x = {value}")
    with pytest.raises(OptionError) as caught:
        TelegramAdapter(AdapterConfig("tg", "h", options={key: options["x"]}), "123456:token")
    assert (caught.value.key, str(caught.value)) == (key, says)


@pytest.mark.parametrize(("option", "says"), [WRONG_NUMBERS[0], WRONG_NUMBERS[4]])
def test_a_wrong_adapter_number_is_one_line_at_its_position(tmp_path, option, says):
    pytest.importorskip("telegram")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "h.yaml").write_text(hostile_persona("x+y"))
    (tmp_path / "bot.toml").write_text(
        '[bot]\npersonas = ["p/*.yaml"]\ndatabase = "bot.db"\n\n[[adapters]]\ntype = "telegram"\npersona = "h"\n'
        f'token_env = "H_TOKEN"\nbase_url = "http://127.0.0.1:9/bot"\n{option}\n'
    )
    env = {**os.environ, "H_TOKEN": "123456:not-a-real-token"}
    r = subprocess.run(
        [sys.executable, "-m", "personae", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert (r.returncode, r.stderr) == (1, f"error: bot.toml:10: adapters[0].{option.split()[0]}: {says}\n")


# --------------------------------------------------------------------------- `personae log` reads what `run` wrote


def test_log_reads_the_database_bot_toml_names(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "h.yaml").write_text(hostile_persona("x+y"))
    (tmp_path / "bot.toml").write_text(
        '[bot]\npersonas = ["p/*.yaml"]\ndatabase = "data/bot.db"\n\n[[adapters]]\ntype = "console"\npersona = "h"\n'
    )
    (tmp_path / "data").mkdir()
    assert personae("emit", "tick", cwd=tmp_path).returncode == 0
    r = personae("log", "--format", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [row["text"] for row in json.loads(r.stdout) if row["direction"] == "out"] == ["tick"]


# --------------------------------------------------------------------------- lint: every problem in one run


def test_a_file_with_an_error_still_gets_its_regex_warnings(tmp_path):
    typo = "  - when: {exact: hi}\n    say: '{{ user.nmae }}'\nfallback:"
    text = hostile_persona(r"(a+)+$", r"(?<=a)b").replace("fallback:", typo)
    (tmp_path / "h.yaml").write_text(text)
    got = [str(d) for d in lint([tmp_path]).diagnostics]
    at = tmp_path / "h.yaml"
    assert any(s.startswith(f"{at}:7:19: warning: replies[0].when.regex: regex has a quantifier") for s in got), got
    assert any(s.startswith(f"{at}:9:19: warning: replies[1].when.regex: regex needs the fallback") for s in got), got
    assert any("'user' has no attribute 'nmae'" in s for s in got), got
