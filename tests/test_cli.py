"""The personae command line, end to end through a subprocess."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def personae(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "personae", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def test_version_and_help():
    r = personae("--version")
    assert r.returncode == 0 and r.stdout.startswith("personae ")
    r = personae("--help")
    assert r.returncode == 0
    for command in ("lint", "schema", "chat", "log"):
        assert command in r.stdout


def test_chat_with_piped_stdin_and_event_lines(persona_dir, tmp_path):
    db = tmp_path / "chat.db"
    r = personae(
        "chat",
        "lander",
        "--personas",
        str(persona_dir),
        "--db",
        str(db),
        "--user",
        "Ann",
        stdin="/status\nwhere are you?\n!event touchdown site=Agilkia\nwhere are you?\n{{ 7*7 }}\n",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "Lander: Phase cruise, battery 100%.",
        "Lander: Still aboard the orbiter.",
        "Lander: Touchdown at Agilkia!",
        "Orbiter: I can see his legs at Agilkia!",
        "Lander: On the comet, at Agilkia.",
        "Lander: I'm only a small lander.",
    ]
    assert r.stderr == ""
    count = sqlite3.connect(db).execute("SELECT count(*) FROM interactions WHERE direction='in'").fetchone()[0]
    assert count == 4


def test_chat_says_why_a_reaction_said_nothing(persona_dir):
    r = personae(
        "chat", "lander", "--personas", str(persona_dir), "--no-log", stdin="!event touchdown\n!event nope\n/status\n"
    )
    assert r.returncode == 0
    assert r.stdout == "Lander: Phase cruise, battery 100%.\n"  # the failed touchdown changed nothing
    problem, warning = r.stderr.splitlines()
    assert problem.startswith(f"{persona_dir / 'lander.yaml'}:10: error: undefined:") and "'site'" in problem
    assert warning == "warning: no persona reacts to event 'nope'"


def test_emit_raises_one_event_and_says_what_it_could_not_do(persona_dir, tmp_path):
    (persona_dir / "orbiter.yaml").write_text(
        "persona: orbiter\nname: Orbiter\nevents:\n  landed:\n    say: 'Welcome to {{ event.site }}.'\n    delay: 2m\n"
    )
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{persona_dir}/*.yaml"]\n[[adapters]]\ntype = "console"\npersona = "lander"\n'
    )
    ok = personae("emit", "touchdown", "site=Abydos", "--dry-run", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.endswith("  Lander: Touchdown at Abydos!\n")
    assert ok.stderr.startswith("note: 1 delayed reaction(s), the first due ")  # the orbiter's, 2 minutes later
    broken = personae("emit", "touchdown", "--dry-run", cwd=tmp_path)  # no site: the template fails
    assert broken.returncode == 1 and broken.stdout == ""
    assert broken.stderr.startswith(f"{persona_dir / 'lander.yaml'}:10: error: undefined")


def test_chat_state_persists_between_runs(persona_dir, tmp_path):
    db = tmp_path / "chat.db"
    personae("chat", "lander", "--personas", str(persona_dir), "--db", str(db), stdin="!event touchdown site=Abydos\n")
    r = personae("chat", "lander", "--personas", str(persona_dir), "--db", str(db), stdin="where are you\n")
    assert r.stdout == "Lander: On the comet, at Abydos.\n"


def test_chat_unknown_persona(persona_dir):
    r = personae("chat", "landr", "--personas", str(persona_dir), "--no-log")
    assert r.returncode == 1
    assert r.stderr == "error: unknown persona 'landr' (did you mean 'lander'?)\n"


def test_chat_with_broken_persona_is_one_clear_line(tmp_path):
    (tmp_path / "p.yaml").write_text("persona: p\nname: P\nreplies:\n  - when: {regexp: x}\n    say: hi\n")
    r = personae("chat", "p", "--personas", str(tmp_path), "--no-log")
    assert r.returncode == 1
    assert r.stderr == f"{tmp_path / 'p.yaml'}:4:12: replies[0].when: unknown key 'regexp' (did you mean 'regex'?)\n"
    assert "Traceback" not in r.stderr


def test_chat_with_non_sqlite_db(persona_dir, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite\n" * 200)
    r = personae("chat", "lander", "--personas", str(persona_dir), "--db", str(bad), stdin="hi\n")
    assert r.returncode == 1
    assert r.stderr == f"error: {bad}: not a SQLite database\n"


def test_lint_clean_and_json_errors(persona_dir, tmp_path):
    r = personae("lint", str(persona_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "b.yaml").write_text("persona: b\nname: B\nstate: {x: 1}\nfallback:\n  say: '{{ state.y }}'\n")
    r = personae("lint", str(bad), "--format", "json")
    assert r.returncode == 1
    assert json.loads(r.stdout) == [
        {
            "file": str(bad / "b.yaml"),
            "line": 5,
            "column": 8,
            "path": "fallback.say",
            "message": "unknown state key 'y'",
            "severity": "error",
        }
    ]


def test_lint_binary_and_empty_files(tmp_path):
    (tmp_path / "a.yaml").write_bytes(b"\x00\x01binary")
    (tmp_path / "b.yaml").write_text("")
    r = personae("lint", str(tmp_path))
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        f"{tmp_path / 'a.yaml'}:1:1: file is binary, not YAML text (NUL byte)",
        f"{tmp_path / 'b.yaml'}:1:1: file is empty",
    ]


def test_lint_missing_path():
    r = personae("lint", "does/not/exist")
    assert r.returncode == 1 and r.stderr == "error: no such file or folder: does/not/exist\n"


def test_schema_is_json_schema():
    r = personae("schema")
    schema = json.loads(r.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"persona", "name", "replies", "events"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_log_formats(persona_dir, tmp_path):
    db = tmp_path / "log.db"
    personae("chat", "lander", "--personas", str(persona_dir), "--db", str(db), stdin="/status\nhello\n")
    r = personae("log", "--db", str(db), "--format", "json", "--direction", "out")
    rows = json.loads(r.stdout)
    assert [row["text"] for row in rows] == ["Phase cruise, battery 100%.", "I'm only a small lander."]
    r = personae("log", "--db", str(db), "--format", "csv", "--limit", "1")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("id,ts,direction") and len(lines) == 2
    r = personae("log", "--db", str(db))
    assert r.returncode == 0 and "Phase cruise" in r.stdout
    personae("chat", "lander", "--personas", str(persona_dir), "--db", str(db), stdin="!event touchdown\n")
    table = personae("log", "--db", str(db), "--limit", "2").stdout
    assert "touchdown" in table and "error: undefined" in table  # the event, and why its reaction failed
    r = personae("log", "--db", str(db), "--limit", "-3")
    assert r.returncode == 2 and "--limit: -3 is negative" in r.stderr


def test_log_on_missing_db(tmp_path):
    r = personae("log", "--db", str(tmp_path / "none.db"))
    assert r.returncode == 1 and "no such database" in r.stderr


def test_shipped_personas_lint_clean():
    r = personae("lint", str(ROOT / "personas"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error" not in r.stdout
