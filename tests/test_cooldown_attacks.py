"""Cooldowns, limits and no_repeat, attacked from outside: damaged saved state, odd durations, other processes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from personae.language.loader import check_source
from personae.language.source import parse_yaml

HANG = 60  # seconds: a generous guard, never a timing assertion

PERSONA = """\
persona: p
name: P
no_repeat: 2
state: {n: 0}
chat_state: {m: 0}
limits: {messages: 50, per: 1m, notice: slow down}
phrases:
  greet: [hey, hello, howdy, yo, hi there]
replies:
  - when: {keywords: [hi]}
    say: ["{{ phrase('greet') }} a", "{{ phrase('greet') }} b", c, d]
    set: {n: "{{ state.n + 1 }}", chat.m: "{{ chat.state.m + 1 }}"}
  - when: {keywords: [x]}
    say: [x1, x2, x3]
    cooldown: {for: 1h, per: user}
    cooldown_say: [r1, r2, r3]
"""


def chat(cwd: Path, text: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "personae", "chat", "p", "--personas", "p.yaml", *args],
        cwd=cwd,
        input=text,
        capture_output=True,
        text=True,
        timeout=HANG,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    return done.stdout


def test_a_restart_on_damaged_saved_state_starts_those_records_afresh(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PERSONA, encoding="utf-8")
    first = chat(tmp_path, "hi\nx\n", "--db", "t.db")
    assert first.count("P: ") == 2
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as db, db:
        scopes = {s for (s,) in db.execute("SELECT scope FROM state")}
        assert {"persona", "chat", "limit", "cooldown", "recent"} <= scopes
        # Each kind of record, damaged as a hand edit or another version might leave it.
        db.execute("""UPDATE state SET data = '{"at": 5, "told": "x"}' WHERE scope = 'limit'""")
        db.execute(
            """UPDATE state SET data = '{"replies[0]:say": 7, "phrase:greet": {"a": 1}}' WHERE scope = 'recent'"""
        )
        db.execute("""UPDATE state SET data = '{"replies[1]": NaN}' WHERE scope = 'cooldown'""")
        db.execute("UPDATE state SET data = 'not json' WHERE scope = 'persona'")
        db.execute("UPDATE state SET data = '[1, 2]' WHERE scope = 'chat'")
    again = chat(tmp_path, "hi\nx\nx\n", "--db", "t.db").splitlines()
    assert len(again) == 3 and again[1] in ("P: x1", "P: x2", "P: x3") and again[2] in ("P: r1", "P: r2", "P: r3")
    # and the records are written again, whole
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as db:
        rows = dict(db.execute("SELECT scope, data FROM state WHERE scope IN ('persona', 'limit')").fetchall())
    assert rows["persona"] == '{"n": 1}' and '"at": [' in rows["limit"]


def test_the_same_seed_gives_the_same_conversation_in_other_processes(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PERSONA, encoding="utf-8")
    script = "hi\nhi\nhi\nx\nx\nx\nhi\nhi\nhi\nhi\n"
    runs = [chat(tmp_path, script, "--seed", "3", "--no-log", env={"PYTHONHASHSEED": h}) for h in ("1", "2")]
    assert runs[0] == runs[1] and runs[0].count("P: ") == 10


@pytest.mark.parametrize("value", [".nan", ".NaN", "-.inf", ".inf"])
def test_a_duration_that_is_not_a_number_is_one_clear_line(value: str) -> None:
    text = f"persona: p\nname: P\nreplies:\n  - when: {{keywords: [hi]}}\n    say: hi\n    cooldown: {value}\n"
    _, diags = check_source(parse_yaml(text, "p.yaml"))
    [line] = [str(d) for d in diags]
    assert line.startswith("p.yaml:6:15: replies[0].cooldown: ")
    assert any(w in line for w in ("is not a duration", "cannot be negative", "longer than a century")), line
