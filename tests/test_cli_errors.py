"""No traceback ever: hostile command lines, bad bytes on stdin, read-only logs, failed platform starts."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import LANDER, ORBITER, ROOT

MINI = """\
timeline: mini
cast: [lander, orbiter]
events:
  - {at: "2014-11-12T15:34:04Z", event: touchdown, data: {site: Abydos}}
  - {at: "2014-11-12T16:34:04Z", event: drain}
"""

BOT_TOML = """\
[bot]
personas = ["personas/*.yaml"]
database = "bot.db"
{bot}
[[adapters]]
type = "console"
persona = "lander"

[[timelines]]
file = "mini.yaml"
speed = {speed}
"""


def personae(*args: str, cwd: Path, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "personae", *args], input=stdin, capture_output=True, cwd=cwd, timeout=timeout
    )
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with personas, a timeline, a bot.toml, and files no command should accept."""
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "lander.yaml").write_text(LANDER)
    (tmp_path / "personas" / "orbiter.yaml").write_text(ORBITER)
    (tmp_path / "mini.yaml").write_text(MINI)
    (tmp_path / "bot.toml").write_text(BOT_TOML.format(bot="", speed='"max"'))
    for name, speed in {"inf": "inf", "nan": "nan", "neg": "-1", "huge": "1e308"}.items():
        (tmp_path / f"speed_{name}.toml").write_text(BOT_TOML.format(bot="", speed=speed))
    (tmp_path / "db_dir.toml").write_text(BOT_TOML.format(bot="", speed='"max"').replace('"bot.db"', '"personas"'))
    (tmp_path / "dir").mkdir()
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.yaml").write_bytes("persona: caf\xe9\nname: Caf\xe9\n".encode("latin-1"))
    unreadable = tmp_path / "unreadable.yaml"
    unreadable.write_text("persona: x\n")
    unreadable.chmod(0)
    return tmp_path


# --------------------------------------------------------------------------- the sweep

NUMBERS = ["", "0", "-1", "inf", "nan", "1e400", "99999999999999999999999"]
DATES = ["", "2014-13-45", "0001-01-01T00:00Z", "9999-12-31T23:59:59Z", "10000-01-01"]
FILES = ["", "missing.yaml", "dir", "empty.txt", "binary.bin", "latin1.yaml", "unreadable.yaml", "x" * 300, "\udcff"]
NAMES = ["", " ", "\udcff", "x" * 5000, "'", "\x1b[2J"]


def hostile_command_lines() -> Iterator[tuple[list[str], str | None]]:
    """Every subcommand, each argument in turn given a hostile value (and stdin, for chat)."""
    chat = ["chat", "lander", "--personas", "personas"]
    replay = ["replay", "mini.yaml", "--personas", "personas", "--dry-run", "--speed", "max"]
    emit = ["emit", "touchdown", "site=Agilkia"]
    yield from (([*chat, "--no-log", "--seed", n], None) for n in NUMBERS[-3:])
    yield from ((["chat", n, "--personas", "personas", "--no-log"], None) for n in NAMES)
    yield from ((["chat", "lander", "--no-log", "--user", n, "--personas", "personas"], None) for n in NAMES[:3])
    yield from ((["chat", "lander", "--no-log", "--personas", f], None) for f in FILES)
    yield from (([*chat, "--db", f], None) for f in ["", "dir", "binary.bin", "x" * 300, "dir/no/such.db"])
    yield [*chat, "--db", "chat.db"], "stdin.txt"
    yield from ((["lint", f], None) for f in FILES)
    yield from ((["log", "--db", f], None) for f in ["", "dir", "binary.bin", "missing.db", "x" * 300, "\udcff"])
    yield from ((["log", "--db", "chat.db", "--limit", n], None) for n in NUMBERS)
    yield from ((["log", "--db", "chat.db", "--since", d], None) for d in DATES[1:])
    yield from ((["log", "--db", "chat.db", "--persona", n], None) for n in NAMES[:3])
    configs = [*FILES, "speed_inf.toml", "speed_nan.toml", "speed_neg.toml", "speed_huge.toml", "db_dir.toml"]
    yield from ((["run", "--until-done", "--config", f], None) for f in configs)
    yield from ((["replay", f, "--personas", "personas", "--dry-run"], None) for f in FILES[::2])
    yield from ((["replay", "mini.yaml", "--personas", "personas", "--dry-run", "--speed", n], None) for n in NUMBERS)
    yield ["replay", "mini.yaml", "--personas", "personas", "--speed", "1e300", "--to", "2014-11-12T16:00Z"], None
    yield from (([*replay, "--from", d], None) for d in DATES)
    yield from (([*replay, "--to", d], None) for d in DATES[1:])
    yield from (([*replay, "--seed", n], None) for n in NUMBERS[-3:])
    yield from (([*replay, "--adapter", n], None) for n in NAMES[:3])
    yield from ((["replay", "mini.yaml", "--speed", "max", "--db", "r.db", "--resume", n], None) for n in NAMES[1:4])
    yield from (
        (["replay", "mini.yaml", "--speed", "max", "--personas", "personas", "--db", f], None) for f in FILES[1::2]
    )
    yield from (([*emit, "--dry-run", "--config", f], None) for f in configs[::2])
    yield from ((["emit", n, "--dry-run"], None) for n in NAMES[:3])
    data = ["site", "=x", "'", "site=\udcff", "site=1e400", "site=99999999999999999999999"]
    yield from ((["emit", "touchdown", d], None) for d in data)
    yield from (([*emit, "--persona", n], None) for n in NAMES[:3])


def _run_forked(cases: list[dict[str, object]]) -> list[dict[str, object]]:
    """Run ``cases`` through tests/forkrun.py in two processes (the machine has two cores)."""
    halves = [cases[0::2], cases[1::2]]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "forkrun.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in halves
    ]
    results = []
    for proc, half in zip(procs, halves, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(half))
        proc.stdin.close()
    for proc in procs:
        assert proc.stdout is not None
        results += json.loads(proc.stdout.read())
        assert proc.wait(timeout=600) == 0
    return results


def test_every_subcommand_survives_hostile_arguments(site):
    (site / "stdin.txt").write_bytes(b"/status\nhi \xff\xfe there\n!event\n!event touchdown site\n!event 'x\n/status\n")
    listed = personae("--help", cwd=site).stdout
    cases = [
        {"argv": argv, "cwd": str(site), "stdin": str(site / stdin) if stdin else None, "timeout": 60}
        for argv, stdin in hostile_command_lines()
    ]
    assert {c["argv"][0] for c in cases} == {"chat", "lint", "log", "run", "replay", "emit"}
    assert all(f"    {command} " in listed for command in {c["argv"][0] for c in cases})
    bad = [
        (r["argv"], r["status"], r["stderr"])
        for r in _run_forked(cases)
        if r["status"] not in (0, 1, 2) or "Traceback" in r["stderr"] or "internal error" in r["stderr"]
    ]
    assert not bad, "\n\n".join(f"{argv} -> {status}\n{err[-800:]}" for argv, status, err in bad)


# --------------------------------------------------------------------------- the cases issue 9 names


def test_emit_data_without_an_equals_sign_is_a_usage_error(site):
    r = personae("emit", "touchdown", "site", cwd=site)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "expected key=value, found 'site'" in r.stderr.splitlines()[-1]


@pytest.mark.parametrize("speed", ["1e15", "inf", "nan", "-1", "0"])
def test_replay_speed_out_of_range_is_one_line(site, speed):
    r = personae("replay", "mini.yaml", "--personas", "personas", "--dry-run", f"--speed={speed}", cwd=site)
    assert "Traceback" not in r.stderr
    if speed == "1e15":  # a huge speed is a legitimate request: the replay plays
        assert r.returncode == 0, r.stderr
        assert "Touchdown at Abydos!" in r.stdout
    else:
        assert r.returncode == 1 and r.stderr.startswith("error: --speed: ") and len(r.stderr.splitlines()) == 1


def test_a_mission_clock_at_an_enormous_speed_stops_at_the_end_of_time():
    from personae.timing.clock import END_OF_TIME, VirtualClock

    clock = VirtualClock(datetime(2014, 11, 12, tzinfo=UTC), 1e300)
    while clock.now() != END_OF_TIME:  # the first nanosecond of real time takes it past year 9999
        pass
    assert clock.now() == END_OF_TIME


def test_chat_goes_on_after_an_invalid_byte_on_stdin(site):
    stdin = b"/status\nhello \xff\xfe there\n/status\n"
    r = personae("chat", "lander", "--personas", "personas", "--no-log", cwd=site, stdin=stdin)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.splitlines() == [
        "Lander: Phase cruise, battery 100%.",
        "Lander: I'm only a small lander.",
        "Lander: Phase cruise, battery 100%.",
    ]


def _make_read_only(path: Path) -> Iterator[None]:
    """Make ``path`` (a folder) and its files unwritable, for root too (``chattr +i``)."""
    if os.geteuid() != 0:
        for f in path.iterdir():
            f.chmod(stat.S_IRUSR)
        path.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield
        finally:
            path.chmod(stat.S_IRWXU)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i refused)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_log_reads_a_database_in_a_read_only_folder(site):
    logs = site / "logs"
    logs.mkdir()
    db = logs / "chat.db"
    chat = personae("chat", "lander", "--personas", "personas", "--db", str(db), cwd=site, stdin=b"/status\n")
    assert chat.returncode == 0, chat.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["chat.db"]  # WAL mode, closed cleanly
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    guard = _make_read_only(logs)
    next(guard)
    try:
        r = personae("log", "--db", str(db), "--format", "json", cwd=site)
    finally:
        next(guard, None)
    assert r.returncode == 0, r.stderr
    assert [row["text"] for row in json.loads(r.stdout)] == ["/status", "Phase cruise, battery 100%."]


def test_events_raised_with_personae_emit_are_logged_as_such(site):
    r = personae("emit", "touchdown", "site=Agilkia", cwd=site)
    assert r.returncode == 0, r.stderr
    rows = json.loads(personae("log", "--db", "bot.db", "--direction", "event", "--format", "json", cwd=site).stdout)
    assert [(row["event"], row["status"]) for row in rows] == [("touchdown", "cli"), ("landed", "emit:lander")]
    table = personae("log", "--db", "bot.db", "--direction", "event", cwd=site).stdout
    (row,) = [line for line in table.splitlines() if "touchdown" in line]
    assert " cli " in row and " chat " not in row


async def test_a_failed_discord_start_is_one_line_without_library_noise(site):
    # A token Discord refuses (a network that is down is retried instead, see test_lifecycle).
    from fakes.discord_api import FakeDiscord

    (site / "discord.toml").write_text(
        '[bot]\npersonas = ["personas/*.yaml"]\ndatabase = "d.db"\n\n'
        '[[adapters]]\ntype = "discord"\npersona = "lander"\ntoken_env = "LANDER_DISCORD_TOKEN"\n'
    )
    launcher = Path(__file__).parent / "fakes" / "run_with_fake_discord.py"
    async with FakeDiscord("another.token", bot_user_id=9_200_000_000_000_000_001) as fake:
        env = {
            **os.environ,
            "LANDER_DISCORD_TOKEN": "TEST.DISCORD.secret-token-do-not-leak",
            "FAKE_DISCORD_REST": fake.rest_base,
            "FAKE_DISCORD_GATEWAY": fake.gateway_url,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(launcher), "run", "--config", "discord.toml",
            cwd=site, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _out, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
    err = err_bytes.decode()
    assert proc.returncode == 1
    assert err.startswith("error: adapter 'discord-lander' failed to start: "), err
    assert len(err.splitlines()) == 1, err
    for noise in ("davey", "PyNaCl", "Unclosed", "Traceback", "secret-token"):
        assert noise not in err


def test_the_missing_extra_hint_is_readmes_install_command(monkeypatch):
    from personae.app import config
    from personae.language.errors import ConfigError

    readme = (ROOT / "README.md").read_text()
    for kind in ("telegram", "discord"):
        # As if the client library were not installed.
        monkeypatch.setitem(sys.modules, kind, None)
        monkeypatch.delitem(sys.modules, f"personae.adapters.{kind}", raising=False)
        with pytest.raises(ConfigError) as caught:
            config.adapter_class(kind)
        command = f'pip install -e ".[{kind}]"'
        assert command in str(caught.value) and command in readme
