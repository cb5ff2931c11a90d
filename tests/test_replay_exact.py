"""Replays with random picks, through real subprocesses: the same inputs give the same bytes (any speed,
after kill -9 and --resume, in `personae run`), and the log has one row per event and per message
however often the replay is killed. Plus the replay options a user gets wrong."""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personae.engine.engine import Engine
from personae.engine.messages import Event
from personae.language.loader import load_personas

# Every reaction picks at random: a `say` list, phrase() (twice in one template), a list of
# phrase() templates, an emit whose reaction picks too, and a delayed reaction.
PICKER = """\
persona: picker
name: Picker
phrases:
  mood: [calm, tense, giddy, tired, bold, shy, proud, glum]
events:
  a:
    say: ["A one {{ event.n }}", "A two {{ event.n }}", "A three {{ event.n }}", "A four {{ event.n }}"]
  b:
    say: "B {{ event.n }} feels {{ phrase('mood') }} and {{ phrase('mood') }}"
    emit: {event: echoed, data: {n: "{{ event.n }}"}}
  c:
    say: ["C {{ event.n }} {{ phrase('mood') }}", "C! {{ event.n }} {{ phrase('mood') }}"]
    delay: 30s
"""
ECHO = """\
persona: echo
name: Echo
events:
  echoed:
    say: ["echo {{ event.n }}", "ECHO {{ event.n }}", "e-c-h-o {{ event.n }}"]
"""


def personae(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "personae", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def timeline(path: Path, n: int, *, step: timedelta = timedelta(minutes=1)) -> Path:
    start = datetime(2014, 11, 12, tzinfo=UTC)
    lines = ["timeline: picks", "cast: [picker, echo]", "events:"]
    for i in range(n):
        at = (start + step * i).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"  - {{at: {at}, event: {'abc'[i % 3]}, data: {{n: {i}}}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cast(tmp_path: Path) -> Path:
    d = tmp_path / "cast"
    d.mkdir()
    (d / "picker.yaml").write_text(PICKER)
    (d / "echo.yaml").write_text(ECHO)
    return d


def outbox(db: Path) -> list[tuple[str, str, str]]:
    """What a run queued, in order: the transcript it delivers."""
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT persona, mission_time, text FROM outbox ORDER BY id").fetchall()
    finally:
        con.close()


def log_rows(db: Path) -> Counter[tuple[object, ...]]:
    """The interaction log, minus what differs between runs by nature (row id, wall-clock time, run id)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT direction, persona, platform, text, rule, seed, status, event, mission_time FROM interactions"
        ).fetchall()
    finally:
        con.close()
    return Counter(rows)


def run_killed(cmd: list[str], cwd: Path, rng: random.Random, kills: int, posts: int, jitter: float) -> None:
    """Run ``cmd``, SIGKILL it ``kills`` times, ``--resume`` it until it finishes.

    Each process is killed at a random moment of its replay: after it has printed a random number
    of posts (1 to ``posts``), and a random fraction of ``jitter`` seconds more.
    """
    run_id = None
    killed = 0
    for _ in range(kills + 20):
        full = [sys.executable, "-m", "personae", *cmd, *(["--resume", run_id] if run_id else [])]
        proc = subprocess.Popen(full, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("replay run "), first + proc.communicate(timeout=60)[1]
        run_id = first.split()[2]
        if killed < kills:
            for _ in range(rng.randint(1, posts)):
                assert proc.stdout.readline(), "the replay ended before it was killed"
            time.sleep(rng.uniform(0, jitter))
            proc.send_signal(signal.SIGKILL)
            killed += 1
        _, err = proc.communicate(timeout=60)
        if killed <= kills and proc.returncode != 0:
            assert proc.returncode == -signal.SIGKILL, err
            continue
        assert proc.returncode == 0, err
        return
    raise AssertionError("the replay never finished")


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "personae", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[int, str, str]]:
    """Wait for processes started together (they run in parallel): name -> (exit status, stdout, stderr)."""
    try:
        outs = {name: p.communicate(timeout=60) for name, p in procs.items()}
    finally:
        for p in procs.values():  # a hung one (the hang guard fired) is not left running
            if p.poll() is None:
                p.kill()
                p.communicate()
    return {name: (procs[name].returncode, *outs[name]) for name in procs}


def test_random_picks_give_the_same_bytes_whatever_the_run(cast, tmp_path):
    tl = timeline(tmp_path / "t.yaml", 30)
    base = ["replay", str(tl), "--personas", str(cast), "--seed", "11"]
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{cast}/*.yaml"]\ndatabase = "bot.db"\nseed = 11\n'
        '[[adapters]]\ntype = "console"\npersona = "picker"\n[[adapters]]\ntype = "console"\npersona = "echo"\n'
        f'[[timelines]]\nfile = "{tl}"\nmode = "replay"\nspeed = "max"\n'
    )
    # Each process gets a new random run id; the picks must not depend on it.
    done = finish(
        {
            "dry": start(*base, "--speed", "max", "--dry-run", cwd=tmp_path),
            "max": start(*base, "--speed", "max", "--db", str(tmp_path / "max.db"), cwd=tmp_path),
            "fast": start(*base, "--speed", "200000", "--db", str(tmp_path / "fast.db"), cwd=tmp_path),
            # `personae run` with a replayed timeline (bot.toml mode = "replay").
            "run": start("run", "--until-done", cwd=tmp_path),
        }
    )
    assert all(code == 0 for code, _, _ in done.values()), {n: err for n, (_, _, err) in done.items()}
    transcript = done["dry"][1]
    lines = transcript.splitlines()
    assert len(lines) == 40  # 30 events, 10 of them also echoed
    # The picks do vary: a constant pick would make this test pass for the wrong reason.
    assert len({line.split()[5] for line in lines if " Picker: A" in line}) > 1
    assert len({line.split()[-1] for line in lines if " Picker: B" in line}) > 1
    for name in ("max", "fast", "run"):
        assert done[name][1] == transcript, name
    assert outbox(tmp_path / "max.db") == outbox(tmp_path / "fast.db")
    assert log_rows(tmp_path / "max.db") == log_rows(tmp_path / "fast.db")


@pytest.mark.parametrize(
    ("speed", "events", "posts", "jitter"),
    [
        # A few tenths of a second in all: kills land before and after log batches are written.
        ("max", 300, 80, 0.02),
        # A mission minute is 0.1 s: kills land between events, where each resume used to log one again.
        ("600", 18, 4, 0.1),
    ],
)
def test_the_log_has_one_row_per_event_and_message_across_kill_9(cast, tmp_path, speed, events, posts, jitter):
    tl = timeline(tmp_path / "t.yaml", events)
    base = ["replay", str(tl), "--personas", str(cast), "--seed", "4"]
    whole = start(*base, "--speed", "max", "--db", str(tmp_path / "whole.db"), cwd=tmp_path)
    cmd = [*base, "--speed", speed, "--db", str(tmp_path / "k.db")]
    run_killed(cmd, tmp_path, random.Random(speed), 3, posts, jitter)
    code, out, err = finish({"whole": whole})["whole"]
    assert code == 0, err
    expected = log_rows(tmp_path / "whole.db")
    assert sum(expected.values()) == events + len(out.splitlines()) + events // 3  # events, posts, emits
    assert max(expected.values()) == 1  # every row of this log is distinct: a repeat is a duplicate
    got = log_rows(tmp_path / "k.db")
    # One row per event and per message: what was said aside (direction, persona, platform, rule, event, time).
    shape, shape_expected = (Counter(row[:3] + row[4:5] + row[6:] for row in c.elements()) for c in (got, expected))
    assert shape - shape_expected == Counter(), "rows logged twice"
    assert shape_expected - shape == Counter(), "rows never logged"
    assert got == expected  # and what was said is what the uninterrupted run said
    # The killed run queued the uninterrupted run's messages (random picks included), in order, and sent them all.
    assert outbox(tmp_path / "k.db") == outbox(tmp_path / "whole.db")
    con = sqlite3.connect(tmp_path / "k.db")
    try:
        assert con.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone() == (0,)
    finally:
        con.close()


def test_to_a_date_includes_that_whole_day(cast, tmp_path):
    tl = timeline(tmp_path / "t.yaml", 6, step=timedelta(hours=10))  # the 12th 00:00 to the 14th 02:00
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{cast}/*.yaml"]\ndatabase = "bot.db"\n'
        '[[adapters]]\ntype = "console"\npersona = "picker"\n[[adapters]]\ntype = "console"\npersona = "echo"\n'
        f'[[timelines]]\nfile = "{tl}"\nspeed = "max"\nto = 2014-11-13\n'  # a TOML date
    )
    done = finish(
        {
            "replay": start("replay", str(tl), "--personas", str(cast), "--speed", "max", "--dry-run", "--to",
                            "2014-11-13", cwd=tmp_path),
            "run": start("run", "--until-done", cwd=tmp_path),
        }
    )  # fmt: skip
    for name, (code, out, err) in done.items():
        assert code == 0, err
        # Events at 00:00, 10:00 and 20:00 on the 12th; 06:00 and 16:00 on the 13th.
        assert sorted({line[:16] for line in out.splitlines()}) == [
            "2014-11-12 00:00",
            "2014-11-12 10:00",
            "2014-11-12 20:00",
            "2014-11-13 06:00",
            "2014-11-13 16:00",
        ], name


def killed_early(cmd: list[str], cwd: Path, *, wait_for_output: bool) -> str:
    """Start a replay, kill it once it has begun (and printed a post, if asked); its run id."""
    proc = start(*cmd, cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    run = proc.stderr.readline().split()[2]
    if wait_for_output:
        assert proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return run


def test_resume_refuses_another_timeline_and_applies_a_new_speed(cast, tmp_path):
    # One event a day at 1 mission second per second: finishing at that speed would take days.
    tl = timeline(tmp_path / "t.yaml", 5, step=timedelta(days=1))
    db = str(tmp_path / "r.db")
    base = ["replay", "--personas", str(cast), "--db", db]
    run = killed_early([*base, str(tl), "--speed", "1", "--seed", "3"], tmp_path, wait_for_output=True)

    other = timeline(tmp_path / "other.yaml", 6, step=timedelta(days=1))  # one more event
    edited = tmp_path / "edited.yaml"  # the same events but one datum
    edited.write_text(tl.read_text().replace("data: {n: 4}", "data: {n: 40}"))
    commented = tmp_path / "commented.yaml"  # a comment changes no event
    commented.write_text("# the same events\n" + tl.read_text())
    done = finish(
        {
            "other": start(*base, str(other), "--resume", run, cwd=tmp_path),
            "edited": start(*base, str(edited), "--resume", run, cwd=tmp_path),
            "seed": start(*base, str(commented), "--resume", run, "--seed", "4", cwd=tmp_path),
        }
    )
    for name, path in (("other", other), ("edited", edited)):
        code, out, err = done[name]
        assert (code, out, err.count("\n")) == (1, "", 1), err
        assert err.startswith(f"error: --resume: {path} is not the timeline run {run} replayed ({tl}): its events")
    code, out, err = done["seed"]
    assert (code, out, err.count("\n")) == (1, "", 1), err
    assert err.startswith(f"error: --resume: run {run} was started with --seed 3, not --seed 4;")

    # The hang guard is generous: at the run's old speed this would not finish for days.
    r = personae(*base, str(commented), "--resume", run, "--speed", "max", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "2014-11-16 00:00 UTC  Picker: B 4 feels " in r.stdout  # the last event
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT status FROM replays WHERE run = ?", (run,)).fetchone() == ("done",)
        assert con.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall() == [("sent", 7)]
    finally:
        con.close()


def test_replay_says_what_it_cannot_play(cast, tmp_path):
    tl = timeline(tmp_path / "t.yaml", 6)  # 00:00 to 00:05
    db = str(tmp_path / "e.db")
    base = ["replay", "--personas", str(cast), "--db", db]
    cases = {
        "--from 2015-01-01 is after the last event of picks (2014-11-12 00:05:00 UTC)": ["--from", "2015-01-01"],
        "--to 2014-11-11T23:00Z is before the first event of picks (2014-11-12 00:00:00 UTC)": [
            "--to",
            "2014-11-11T23:00Z",
        ],
        "picks has no event between --from 2014-11-12T00:01:10Z and --to 2014-11-12T00:01:50Z": [
            "--from",
            "2014-11-12T00:01:10Z",
            "--to",
            "2014-11-12T00:01:50Z",
        ],
    }
    procs = {message: start(*base, str(tl), *window, cwd=tmp_path) for message, window in cases.items()}
    persona_file = cast / "picker.yaml"
    procs["persona"] = start(*base, str(persona_file), cwd=tmp_path)
    done = finish(procs)
    code, out, err = done.pop("persona")
    assert (code, out) == (1, "")
    assert err == (
        f"{persona_file}:1:1: this is a persona file, not a timeline (a timeline has 'timeline:' and 'events:' keys)\n"
    )
    for message, (code, out, err) in done.items():
        assert (code, out, err) == (1, "", f"error: nothing to play: {message}\n")
    assert not Path(db).exists()  # no run recorded for nothing


@functools.cache
def cast_personas() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "picker.yaml").write_text(PICKER)
        (Path(d) / "echo.yaml").write_text(ECHO)
        return dict(load_personas([d]))


@settings(max_examples=30, deadline=None)
@given(runs=st.lists(st.text(st.characters(blacklist_characters="|"), min_size=1, max_size=12), min_size=2, max_size=2))
def test_picks_do_not_depend_on_the_run_id(runs):
    # In-process, for any two run ids: what each persona says to the same timeline events is the same.
    async def say(run: str) -> list[str]:
        engine = Engine(cast_personas(), run=run, seed=9)
        out = []
        for i, name in enumerate("abcab"):
            at = datetime(2014, 11, 12, i, tzinfo=UTC)
            key = f"{run}|picks#{i}:{name}"  # as a replay keys its timeline's events
            out += await engine.dispatch(Event(name, at, {"n": i}, "timeline:picks", None, 0, key))
        return [o.text for o in out]

    first, second = (asyncio.run(say(run)) for run in runs)
    assert first == second
