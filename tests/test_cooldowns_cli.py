"""Cooldowns, ``no_repeat`` and ``limits`` end to end: ``lint``, ``chat``, ``test`` and ``run`` as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

NOTICE = "You're writing faster than I can answer. I'll be back with you in a little while."

BOT = """\
persona: bot
name: Bot
limits: {messages: 4, per: 1h}
replies:
  - when: {keywords: hello}
    say: "Hello {{ user.name }}"
    cooldown: 1h
    cooldown_say: "Again? Hi."
  - when: {keywords: joke}
    say: [j0, j1, j2, j3]
    no_repeat: 3
  - when: {keywords: news}
    say: "Big news!"
    cooldown: {for: 10m, per: user}
fallback:
  say: "Sorry?"
"""


def personae(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("PERSONAE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "personae", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "bot.yaml").write_text(BOT, encoding="utf-8")
    return tmp_path


# --------------------------------------------------------------------------- lint


#: (edit of the good persona, the one line lint must print for it).
BAD: list[tuple[tuple[str, str], str]] = [
    (
        ("cooldown: 1h\n", "cooldown: 10 parsecs\n"),
        "personas/bot.yaml:7:15: replies[0].cooldown: '10 parsecs' is not a duration: "
        "unknown unit 'parsecs' (did you mean '10 secs'?)",
    ),
    (
        ("per: user}", "per: room}"),
        "personas/bot.yaml:14:31: replies[2].cooldown.per: 'room' is not a cooldown scope: use chat, user, global",
    ),
    (
        ("{messages: 4, per: 1h}", "{messages: 4, per: 1 hoour}"),
        "personas/bot.yaml:3:28: limits.per: '1 hoour' is not a duration: unknown unit 'hoour' "
        "(did you mean '1 hour'?)",
    ),
    (
        ("{messages: 4, per: 1h}", "{messages: 0, per: 1h}"),
        "personas/bot.yaml:3:20: limits.messages: must be at least 1, found 0",
    ),
    (
        ("{messages: 4, per: 1h}", "{messages: 4, pr: 1h}"),
        "personas/bot.yaml:3:23: limits: unknown key 'pr' (did you mean 'per'?)",
    ),
    (
        ("    no_repeat: 3\n", "    no_repeat: lots\n"),
        "personas/bot.yaml:11:16: replies[1].no_repeat: expected an integer, found a string",
    ),
]


def test_lint_reports_each_bad_cooldown_or_limit_as_one_positioned_line(project: Path):
    bad = project / "personas" / "bad"
    bad.mkdir()
    expected = []
    for n, (edit, line) in enumerate(BAD):
        text = BOT.replace(*edit).replace("persona: bot", f"persona: bot{n}")
        assert text != BOT
        (bad / f"{n}.yaml").write_text(text, encoding="utf-8")
        expected.append(line.replace("personas/bot.yaml", f"personas/bad/{n}.yaml"))
    (bad / "events.yaml").write_text(
        BOT.replace("persona: bot", "persona: ev")
        + "events:\n  launch:\n    say: up\n    cooldown: {for: 1h, per: chat}\n"
        "  land:\n    say: down\n    cooldown_say: wait\n",
        encoding="utf-8",
    )
    expected += [
        "personas/bad/events.yaml:20:30: events.launch.cooldown.per: an event reaction has no chat: "
        "its cooldown can only be global (leave 'per' out)",
        "personas/bad/events.yaml:23:5: events.land.cooldown_say: cooldown_say is for replies: "
        "an event reaction that is cooling down is skipped",
    ]
    r = personae("lint", "personas/bad", "personas/bot.yaml", cwd=project)
    assert r.returncode == 1
    assert sorted(r.stdout.splitlines()) == sorted(expected)  # one line per bad file; none for the good one
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- chat, across a restart


def test_chat_keeps_cooldowns_limits_and_picks_across_a_restart(project: Path):
    chat = ("chat", "bot", "--personas", "personas", "--db", "bot.db", "--user", "ann")
    first = personae(*chat, cwd=project, stdin="hello\njoke\n")
    assert first.returncode == 0, first.stderr
    hello, joke1 = first.stdout.splitlines()
    assert hello == "Bot: Hello ann"
    second = personae(*chat, cwd=project, stdin="hello\njoke\nnews\nnews\nhello\n")
    assert second.returncode == 0, second.stderr
    again, joke2, notice = second.stdout.splitlines()
    assert again == "Bot: Again? Hi."  # still cooling down after the restart
    assert joke2 != joke1  # no_repeat remembered the first process's pick
    assert notice == f"Bot: {NOTICE}"  # the fifth message of the hour; then silence
    log = personae("log", "--db", "bot.db", "--format", "json", cwd=project)
    rows = json.loads(log.stdout)
    ins = [(r["text"], r["status"]) for r in rows if r["direction"] == "in"]
    assert ins == [
        ("hello", "ok"),
        ("joke", "ok"),
        ("hello", "ok"),
        ("joke", "ok"),
        ("news", "ignored: rate limited"),
        ("news", "ignored: rate limited"),
        ("hello", "ignored: rate limited"),
    ]
    outs = [r["text"] for r in rows if r["direction"] == "out"]
    assert outs.count(NOTICE) == 1


# --------------------------------------------------------------------------- personae test


TESTS = """\
personas: [bot]
user: {name: Ann}
tests:
  - name: a cooldown runs out
    steps:
      - say: hello
        reply: Hello Ann
      - say: hello
        reply: Again? Hi.
        rule: replies[0]
      - advance: 59m
      - say: hello
        reply: Again? Hi.
      - advance: 1m
      - say: hello
        reply: Hello Ann
  - name: news rests per user
    steps:
      - say: news
        reply: Big news!
      - advance: 9m
      - say: news
        reply: Sorry?
      - advance: 1m
      - say: news
        reply: Big news!
  - name: the fifth message of the hour gets the notice
    steps:
      - say: a
      - say: b
      - say: c
      - say: d
      - say: e
        rule: limits
      - say: f
        nothing: true
"""


def test_personae_test_runs_cooldown_expiry_and_says_why_not_cooling_down_or_rate_limited(project: Path):
    (project / "personas" / "tests").mkdir()
    (project / "personas" / "tests" / "expiry.yaml").write_text(TESTS, encoding="utf-8")
    failing = """\
    personas: [bot]
    user: {name: Ann}
    tests:
      - name: too soon
        steps:
          - say: news
          - advance: 4m
          - say: news
            reply: Big news!
            rule: replies[2]
      - name: flood
        steps:
          - say: a
          - say: b
          - say: c
          - say: d
          - say: e
            reply: Sorry?
          - say: f
            rule: fallback
    """
    (project / "personas" / "tests" / "why.yaml").write_text(textwrap.dedent(failing), encoding="utf-8")
    r = personae("test", cwd=project)
    assert r.returncode == 1
    assert "5 test(s) in 2 file(s): 3 passed, 2 failed" in r.stdout, r.stdout  # the expiry tests pass
    assert (
        "why: replies[2] (personas/bot.yaml:12): cooling down: 6m left of its 10m cooldown for this user" in r.stdout
    ), r.stdout
    assert f"actual:   {NOTICE!r}  (bot, limits at personas/bot.yaml:3)" in r.stdout, r.stdout
    assert (
        "why: limits (personas/bot.yaml:3): rate limited: this user already sent 4 message(s) in the last 1h"
        in r.stdout
    ), r.stdout


# --------------------------------------------------------------------------- personae run


async def _run_until(cwd: Path, lines: list[str], expect: int) -> list[str]:
    """Start ``personae run`` (console adapter reading stdin), type ``lines``, collect ``expect`` answers, stop."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "personae",
        "run",
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
    await proc.stdin.drain()
    got: list[str] = []
    try:
        while len(got) < expect:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout=60)  # hang guard only
            assert raw, "personae run ended early"
            got.append(raw.decode().rstrip("\n").split("  ", 1)[-1])
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), timeout=60)
    return got


async def test_run_keeps_cooldowns_and_the_limit_across_a_restart(project: Path):
    (project / "bot.toml").write_text(
        '[bot]\npersonas = ["personas/*.yaml"]\ndatabase = "bot.db"\nseed = 3\n\n'
        '[[adapters]]\ntype = "console"\npersona = "bot"\ninput = true\nuser = "ann"\n',
        encoding="utf-8",
    )
    first = await _run_until(project, ["hello", "joke", "news"], 3)
    assert first[0] == "Bot: Hello ann"
    second = await _run_until(project, ["hello", "joke", "news", "news"], 2)
    assert second[0] == "Bot: Again? Hi."  # 4th message: the cooldown outlived the restart
    assert second[1] == f"Bot: {NOTICE}"  # 5th message of the hour: the notice, then nothing
