"""Replays and `personae run` end to end, through subprocesses: determinism, kill -9 and resume,
graceful shutdown, and bad input."""

from __future__ import annotations

import os
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

import pytest

from conftest import ROOT


def personae(*args: str, cwd: Path | None = None, stdin: str = "", timeout: float = 60):
    # Run outside the repository by default, so its bot.toml and personae.db stay out of it.
    cwd = cwd or Path(tempfile.mkdtemp(prefix="personae-cli-"))
    return subprocess.run(
        [sys.executable, "-m", "personae", *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def synthetic_timeline(path: Path, n: int, *, step_minutes: int = 1, cast: str = "lander, orbiter") -> Path:
    start = datetime(2014, 11, 12, tzinfo=UTC)
    lines = ["timeline: synth", f"cast: [{cast}]", "events:"]
    for i in range(n):
        at = (start + timedelta(minutes=step_minutes * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        name = "touchdown" if i % 2 == 0 else "drain"
        lines += [f"  - at: {at}", f"    event: {name}", f"    data: {{site: site{i}}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def timeline(tmp_path: Path) -> Path:
    return synthetic_timeline(tmp_path / "t.yaml", 40)


def test_replay_transcript_is_deterministic_byte_for_byte(persona_dir, timeline, tmp_path):
    base = ["replay", str(timeline), "--personas", str(persona_dir), "--speed", "max", "--seed", "7"]
    dry1 = personae(*base, "--dry-run")
    dry2 = personae(*base, "--dry-run")
    assert dry1.returncode == 0, dry1.stderr
    assert dry1.stdout == dry2.stdout
    lines = dry1.stdout.splitlines()
    assert lines[0] == "2014-11-12 00:00 UTC  Lander: Touchdown at site0!"
    assert "2014-11-12 00:00 UTC  Orbiter: I can see his legs at site0!" in lines
    # A real run (outbox, dispatcher, console adapter) prints exactly the dry run's transcript.
    real1 = personae(*base, "--db", str(tmp_path / "a.db"))
    real2 = personae(*base, "--db", str(tmp_path / "b.db"))
    assert real1.returncode == 0, real1.stderr
    assert real1.stdout == real2.stdout == dry1.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["a.db", "b.db"]


def test_a_paced_replay_prints_the_same_transcript_as_max(persona_dir, timeline):
    # 40 events a mission minute apart at 600,000x: 0.1 ms of real time each. A reaction used
    # to read the clock when it ran, so a millisecond late was ten mission minutes off.
    base = ["replay", str(timeline), "--personas", str(persona_dir), "--dry-run", "--seed", "7"]
    paced = personae(*base, "--speed", "600000")
    fast = personae(*base, "--speed", "max")
    assert paced.returncode == 0, paced.stderr
    assert paced.stdout == fast.stdout


def test_different_seed_changes_only_random_picks(persona_dir, timeline):
    a = personae("replay", str(timeline), "--personas", str(persona_dir), "--speed", "max", "--dry-run", "--seed", "1")
    b = personae("replay", str(timeline), "--personas", str(persona_dir), "--speed", "max", "--dry-run", "--seed", "2")
    assert len(a.stdout.splitlines()) == len(b.stdout.splitlines())


def test_from_and_to_window_with_silent_prelude(persona_dir, timeline):
    r = personae(
        "replay",
        str(timeline),
        "--personas",
        str(persona_dir),
        "--speed",
        "max",
        "--dry-run",
        "--from",
        "2014-11-12T00:10:00Z",
        "--to",
        "2014-11-12T00:13:00Z",
    )
    assert r.returncode == 0, r.stderr
    # 00:10 touchdown, 00:11 drain, 00:12 touchdown, 00:13 drain. The battery was drained 5 times
    # before the window, silently (and `set` applies before `say`).
    assert r.stdout.splitlines() == [
        "2014-11-12 00:10 UTC  Lander: Touchdown at site10!",
        "2014-11-12 00:10 UTC  Orbiter: I can see his legs at site10!",
        "2014-11-12 00:11 UTC  Lander: Battery at 40%.",
        "2014-11-12 00:12 UTC  Lander: Touchdown at site12!",
        "2014-11-12 00:12 UTC  Orbiter: I can see his legs at site12!",
        "2014-11-12 00:13 UTC  Lander: Battery at 30%.",
    ]


def test_killed_replay_resumes_with_nothing_lost_and_nothing_twice(persona_dir, tmp_path):
    timeline = synthetic_timeline(tmp_path / "long.yaml", 150)
    db = tmp_path / "crash.db"
    args = ["replay", str(timeline), "--personas", str(persona_dir), "--seed", "3", "--db", str(db)]
    full = personae(*args[:-2], "--speed", "max", "--dry-run").stdout.splitlines()
    assert len(full) == 225

    rng = random.Random(20141112)
    seen: list[str] = []
    run_id = None
    kills = 0
    for _attempt in range(40):
        cmd = [sys.executable, "-m", "personae", *args, "--speed", "900"]
        cmd += ["--resume", run_id] if run_id else []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        if run_id is None:
            first = proc.stderr.readline()
            assert first.startswith("replay run "), first
            run_id = first.split()[2]
        if kills < 10:
            time.sleep(rng.uniform(0.2, 1.0))
            proc.send_signal(signal.SIGKILL)
            kills += 1
        out, err = proc.communicate(timeout=120)
        seen += out.splitlines()
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    assert proc.returncode == 0 and kills == 10
    counts = Counter(seen)
    assert set(counts) == set(full)  # nothing skipped
    # Lines are unique in this transcript, so a repeat is a re-sent message: at most the one in flight per kill.
    assert sum(c - 1 for c in counts.values()) <= kills
    con = sqlite3.connect(db)
    assert con.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall() == [("sent", 225)]
    assert con.execute("SELECT status FROM replays WHERE run = ?", (run_id,)).fetchone() == ("done",)


def start_run(cwd: Path) -> subprocess.Popen[str]:
    """`personae run` in ``cwd`` with piped stdio, once it says it is running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "personae", "run"],
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
    assert "personae running" in proc.stderr.readline()
    return proc


def test_run_stops_gracefully_on_sigterm(persona_dir, tmp_path):
    tl = synthetic_timeline(tmp_path / "t.yaml", 10, step_minutes=600)
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{persona_dir}/*.yaml"]\ndatabase = "bot.db"\n'
        '[[adapters]]\ntype = "console"\npersona = "lander"\ninput = true\n'
        f'[[timelines]]\nfile = "{tl}"\nspeed = 60\n'
    )
    proc = start_run(tmp_path)
    assert proc.stdout.readline().endswith("Lander: Touchdown at site0!\n")
    proc.stdin.write("/status\n")
    proc.stdin.flush()
    # The answer follows the state the timeline has reached.
    assert proc.stdout.readline().endswith("Lander: Phase surface, battery 100%.\n")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.rstrip().endswith("stopped.")
    con = sqlite3.connect(tmp_path / "bot.db")
    texts = [r[0] for r in con.execute("SELECT text FROM interactions WHERE direction = 'in'")]
    assert texts == ["/status"]
    assert con.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0] == 0


def test_run_at_max_speed_stops_scheduled_posts_when_the_timeline_ends(tmp_path):
    # A cron entry on a virtual clock at "max": once the mission is over the clock
    # must not run on through every cron date (it used to post to year 9999).
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "lander.yaml").write_text(
        "persona: lander\nname: Lander\nevents:\n  touchdown: {say: 'Down at {{ event.site }}.'}\n"
        "  drain: {say: 'Drained.'}\n"
        "replies:\n  - when: {command: status}\n    say: 'Fine.'\n"
        "schedule:\n  - cron: '0 0 * * *'\n    event: tick\n    say: 'Tick {{ now.year }}.'\n"
    )
    tl = synthetic_timeline(tmp_path / "t.yaml", 2, step_minutes=60 * 24 * 3, cast="lander")  # events 3 days apart
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{tmp_path}/p/*.yaml"]\ndatabase = "bot.db"\n'
        '[[adapters]]\ntype = "console"\npersona = "lander"\ninput = true\n'
        f'[[timelines]]\nfile = "{tl}"\nspeed = "max"\n'
    )
    proc = start_run(tmp_path)
    assert "timeline finished" in proc.stderr.readline()
    proc.stdin.write("/status\n")
    proc.stdin.flush()
    out = []
    while not (line := proc.stdout.readline()).endswith("Lander: Fine.\n"):
        out.append(line)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    ticks = [line for line in out if "Tick" in line]
    assert 2 <= len(ticks) <= 4 and all("Tick 2014." in line for line in ticks), out
    assert "out of range" not in err


def test_run_replays_on_request_from_the_console(persona_dir, tmp_path):
    # A live bot (its timeline is all history) asked to replay it: /replay is wired into `personae run`.
    tl = synthetic_timeline(tmp_path / "t.yaml", 4, step_minutes=600)
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{persona_dir}/*.yaml"]\ndatabase = "bot.db"\n'
        '[[adapters]]\ntype = "console"\npersona = "lander"\ninput = true\n'
        f'[[timelines]]\nfile = "{tl}"\nmode = "live"\n'
    )
    proc = start_run(tmp_path)
    proc.stdin.write("/replay here speed=max\n")
    proc.stdin.flush()
    lines = [proc.stdout.readline() for _ in range(6)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Lander: Replaying synth: 4 events from 2014-11-12 00:00 UTC to 2014-11-13 06:00 UTC" in lines[0]
    assert [line.split("  ", 1)[1] for line in lines[1:5]] == [
        "Lander: Touchdown at site0!\n",
        "Lander: Battery at 90%.\n",
        "Lander: Touchdown at site2!\n",
        "Lander: Battery at 80%.\n",
    ]
    assert lines[1].startswith("2014-11-12 00:00 UTC") and lines[4].startswith("2014-11-13 06:00 UTC")
    assert lines[5].rstrip().endswith("of synth finished: 4 events.")
    con = sqlite3.connect(tmp_path / "bot.db")
    # The live personas kept their own state; the replay's is not persisted.
    assert con.execute("SELECT count(*) FROM state").fetchone() == (0,)


def test_default_bot_toml_runs_with_no_token(tmp_path):
    # The shipped bot.toml, at max speed, to the end of the mission.
    text = (ROOT / "bot.toml").read_text().replace("speed = 2_200_000", 'speed = "max"')
    text = text.replace('"personas/', f'"{ROOT}/personas/').replace('database = "personae.db"', 'database = "t.db"')
    (tmp_path / "bot.toml").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    r = subprocess.run(
        [sys.executable, "-m", "personae", "run", "--until-done"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("2004-03-02 07:17 UTC  ")
    assert any(line.startswith("2014-11-12 15:34 UTC  Philae: ") for line in lines)
    assert lines[-1].startswith("2016-09-30 ")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[bot]\npersonas = ["P/*.yaml"]\n[[adapters]]\ntype = "console"\npersona = "landr"\n',
            "bot.toml:5: adapters[0].persona: unknown persona 'landr' (did you mean 'lander'?)",
        ),
        (
            '[bot]\npersonas = ["P/*.yaml"]\n[[adapters]]\ntype = "consol"\npersona = "lander"\n',
            "bot.toml:4: adapters[0].type: unknown adapter type 'consol' (did you mean 'console'?)",
        ),
        (
            '[bot]\npersonas = ["P/*.yaml"]\ndatabse = "x.db"\n',
            "bot.toml:3: bot.databse: unknown key 'databse' (did you mean 'database'?)",
        ),
        (
            '[bot]\npersonas = ["P/*.yaml"]\n[[adapters]]\ntype = "console"\npersona = "lander"\ninptu = true\n',
            "bot.toml:6: adapters[0].inptu: unknown option 'inptu' for console (did you mean 'input'?)",
        ),
        ("[bot\n", "bot.toml:1:5: invalid TOML: Expected ']' at the end of a table declaration"),
        (
            '[bot]\npersonas = ["P/*.yaml"]\n[[adapters]]\ntype = "console"\npersona = "lander"\n'
            '[[timelines]]\nfile = "missing.yaml"\n',
            "bot.toml:7: timelines[0].file: no such file: ",
        ),
        (
            '[bot]\npersonas = ["P/*.yaml"]\n[[adapters]]\ntype = "console"\npersona = "lander"\n'
            '[[timelines]]\nfile = "x.yaml"\nspeed = -5\n',
            "bot.toml:8: timelines[0].speed: speed must be positive (or 'max')",
        ),
        (
            '[bot]\npersonas = ["P/*.yaml"]\n[[adapters]]\ntype = "console"\npersona = "lander"\n'
            '[[timelines]]\nfile = "x.yaml"\nfrom = 2015-01-01T00:00:00Z\nto = 2014-01-01T00:00:00Z\n',
            "bot.toml:9: timelines[0].to: to 2014-01-01T00:00:00+00:00 is before from 2015-01-01T00:00:00+00:00",
        ),
        (
            '[bot]\npersonas = ["P/*.yaml"]\n[[adapters]]\ntype = "console"\npersona = "lander"\n'
            '[[timelines]]\nfile = "x.yaml"\nfrom = 2015-01-01T00:00:00\n',
            "bot.toml:8: timelines[0].from: 2015-01-01T00:00:00 has no timezone (write it as 2015-01-01T00:00:00Z",
        ),
    ],
)
def test_bad_bot_toml(persona_dir, tmp_path, toml, message):
    (tmp_path / "bot.toml").write_text(toml.replace("P/", f"{persona_dir}/"))
    # Only the problem under test: the timeline file named exists (a missing one is reported too).
    (tmp_path / "x.yaml").write_text("timeline: x\nevents: []\n")
    r = personae("run", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {message}")
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_a_timeline_event_nobody_handles_is_refused_before_playing(persona_dir, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(
        "timeline: t\ncast: [lander, orbiter]\nevents:\n"
        "  - {at: 2014-11-12T10:00:00Z, event: touchdwon, data: {site: A}}\n"
        "  - {at: 2014-11-12T11:00:00Z, event: drain, persona: landr}\n"
    )
    r = personae("replay", str(bad), "--personas", str(persona_dir), "--speed", "max", "--dry-run")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{bad}:4:5: events[0].event: no loaded persona handles event 'touchdwon' (did you mean 'touchdown'?)",
        f"{bad}:5:5: events[1].persona: unknown persona 'landr' (did you mean 'lander'?)",
    ]
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{persona_dir}/*.yaml"]\ndatabase = "bot.db"\n'
        f'[[adapters]]\ntype = "console"\npersona = "lander"\n[[timelines]]\nfile = "{bad}"\n'
    )
    r = personae("run", cwd=tmp_path)
    assert r.returncode == 1 and "events[0].event: no loaded persona handles event 'touchdwon'" in r.stderr
    assert not (tmp_path / "bot.db").exists()  # nothing half-written


def test_replay_bad_arguments(persona_dir, timeline, tmp_path):
    r = personae("replay", str(timeline), "--personas", str(persona_dir), "--from", "2015-01-01", "--to", "2014-01-01")
    assert (r.returncode, r.stderr) == (1, "error: --from 2015-01-01 is after --to 2014-01-01\n")
    r = personae("replay", str(timeline), "--personas", str(persona_dir), "--speed", "fast")
    assert (r.returncode, r.stderr) == (1, "error: --speed: 'fast' is not a number or 'max'\n")
    r = personae("replay", str(tmp_path / "nope.yaml"), "--personas", str(persona_dir))
    assert r.returncode == 1 and "no such timeline file" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("timeline: b\nevents:\n  - at: 2014-11-12T10:00:00\n    event: x\n")
    r = personae("replay", str(bad), "--personas", str(persona_dir), "--dry-run")
    assert r.returncode == 1 and r.stderr.startswith(f"{bad}:3:9: events[0].at:")
    r = personae(
        "replay", str(timeline), "--personas", str(persona_dir), "--resume", "nope", "--db", str(tmp_path / "r.db")
    )
    assert r.returncode == 1 and "no replay run 'nope'" in r.stderr


def test_paths_in_bot_toml_are_relative_to_its_folder_and_errors_show_where(persona_dir, tmp_path):
    # Run from another folder: persona globs and timeline files are read next to bot.toml,
    # and a path that finds nothing is shown resolved, so the operator sees where it looked.
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "personas").mkdir()
    (conf / "personas" / "lander.yaml").write_text((persona_dir / "lander.yaml").read_text())
    (conf / "bot.toml").write_text(
        '[bot]\npersonas = ["personas/*.yaml"]\ndatabase = "bot.db"\n'
        '[[adapters]]\ntype = "console"\npersona = "lander"\ninput = false\n'
        '[[timelines]]\nfile = "missing.yaml"\n'
    )
    r = personae("run", "--config", "conf/bot.toml", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"no such file: {conf / 'missing.yaml'}" in r.stderr
    (conf / "bot.toml").write_text(
        '[bot]\npersonas = ["personaz/*.yaml"]\ndatabase = "bot.db"\n'
        '[[adapters]]\ntype = "console"\npersona = "lander"\n'
    )
    r = personae("run", "--config", "conf/bot.toml", cwd=tmp_path)
    assert r.returncode == 1
    assert f"no personas found in {conf / 'personaz'}/*.yaml (paths are relative to bot.toml)" in r.stderr
