"""The first screen: ``personae run`` and ``personae replay`` in a real pseudo-terminal, read back
through a terminal emulator (pyte), as a new user would see them."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyte
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import LANDER, ORBITER
from personae.app.screen import _LineProgress, _printable
from personae.timing.clock import VirtualClock

ROWS, COLS = 40, 100
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"
#: Generous hang guard for each thing the screen should come to show (the machine is shared).
PATIENCE = 60.0


class Terminal:
    """A process on a pseudo-terminal, its output fed to an emulated screen."""

    def __init__(self, args: list[str], cwd: Path, *, stdin_pipe: bool = False) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
        env.update(TERM="xterm", COLUMNS=str(COLS), LINES=str(ROWS))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "personae", *args],
            cwd=cwd,
            stdin=subprocess.PIPE if stdin_pipe else slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.closed = False

    def pump(self, seconds: float) -> None:
        """Feed whatever the process writes during ``seconds`` to the screen."""
        end = time.monotonic() + seconds
        while not self.closed and (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], min(left, 0.05))
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the process is gone and the pty closed
                    data = b""
                if not data:
                    self.closed = True
                    return
                self.stream.feed(data)

    def until(self, what: str, check: Callable[[list[str]], bool]) -> list[str]:
        """Pump until ``check(rows)`` holds (fails after PATIENCE seconds, showing the screen)."""
        end = time.monotonic() + PATIENCE
        while not check(self.rows()):
            if time.monotonic() > end or self.closed:
                pytest.fail(f"the screen never showed {what}:\n" + "\n".join(self.rows()))
            self.pump(0.1)
        return self.rows()

    def rows(self) -> list[str]:
        return [row.rstrip() for row in self.screen.display]

    def type(self, text: str, *, pause: float = 0.0) -> None:
        for ch in text:
            os.write(self.master, ch.encode())
            self.pump(pause)

    def finish(self) -> int:
        """Wait for the process to end, reading the rest of its output."""
        end = time.monotonic() + PATIENCE
        while self.proc.poll() is None and time.monotonic() < end:
            self.pump(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("the process did not exit:\n" + "\n".join(self.rows()))
        self.pump(0.2)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        os.close(self.master)


@pytest.fixture
def terminals():
    opened: list[Terminal] = []

    def spawn(args: list[str], cwd: Path, **kw: bool) -> Terminal:
        opened.append(Terminal(args, cwd, **kw))
        return opened[-1]

    yield spawn
    for t in opened:
        t.close()


def mission(tmp_path: Path, *, events: int = 6, speed: int = 36_000) -> Path:
    """Personas, a timeline of ``events`` 10 mission hours apart (1 s apart at the default speed), a bot.toml."""
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "lander.yaml").write_text(LANDER)
    (tmp_path / "p" / "orbiter.yaml").write_text(ORBITER)
    start = datetime(2014, 11, 12, tzinfo=UTC)
    lines = ["timeline: synth", "cast: [lander, orbiter]", "events:"]
    for i in range(events):
        at = (start + timedelta(hours=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines += [f"  - at: {at}", f"    event: {'touchdown' if i % 2 == 0 else 'drain'}", f"    data: {{site: s{i}}}"]
    (tmp_path / "t.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "bot.toml").write_text(
        '[bot]\npersonas = ["p/*.yaml"]\ndatabase = "bot.db"\n'
        '[[adapters]]\ntype = "console"\npersona = "lander"\ninput = true\n'
        f'[[timelines]]\nfile = "t.yaml"\nspeed = {speed}\n'
    )
    return tmp_path


def is_progress(row: str) -> bool:
    return "━" in row or "─" in row


def assert_clean(rows: list[str]) -> None:
    """Transcript lines start with their stamp; the progress line carries nothing else."""
    for row in rows:
        if "Lander:" in row or "Orbiter:" in row or " you:" in row:
            assert re.match(rf"{STAMP}  (Lander|Orbiter|you): ", row), rows
            assert not is_progress(row), rows
        if is_progress(row):
            assert row.startswith("synth "), rows


def test_run_on_a_terminal_keeps_the_prompt_and_echoes_questions(tmp_path, terminals):
    term = terminals(["run"], mission(tmp_path, speed=60_000))
    # A prompt from the start, under a progress line.
    rows = term.until("a prompt", lambda rows: "you>" in rows)
    # Type slowly while posts arrive and the progress line redraws: nothing typed is wiped.
    typed = ""
    for word in ["where", " are", " you?"]:
        term.type(word, pause=0.15)
        typed += word
        rows = term.rows()
        assert f"you> {typed}" in rows, "\n".join(rows)
        assert_clean(rows)
    rows = term.until(
        "the progress line over the prompt", lambda rows: is_progress(rows[rows.index(f"you> {typed}") - 1])
    )
    assert rows[rows.index(f"you> {typed}") - 1].startswith("synth ")
    term.type("\r")
    # The question goes into the transcript, stamped, and the answer follows it.
    rows = term.until(
        "the question", lambda rows: any(re.fullmatch(rf"{STAMP}  you: where are you\?", r) for r in rows)
    )
    asked = next(i for i, r in enumerate(rows) if r.endswith("you: where are you?"))
    rows = term.until("the answer", lambda rows: any("Lander: On the comet" in r or "Lander: Still" in r for r in rows))
    answer = next(i for i, r in enumerate(rows) if "Lander: On the comet" in r or "Lander: Still" in r)
    assert answer > asked
    assert "you> where are you?" not in rows  # the prompt is ready for the next question
    assert_clean(rows)

    # After the end the mission clock stops: answers are stamped with its last instant.
    rows = term.until("the end of the timeline", lambda rows: any("timeline finished" in r for r in rows))
    last = [r for r in rows if "Lander: Battery at 70%." in r]
    assert last, rows
    end_stamp = last[0][:20]
    term.pump(1.0)  # over 10 mission hours at this speed, were the clock still running
    term.type("/status\r")
    rows = term.until("the status answer", lambda rows: any("Lander: Phase surface" in r for r in rows))
    assert f"{end_stamp}  you: /status" in rows
    assert f"{end_stamp}  Lander: Phase surface, battery 70%." in rows
    assert_clean(rows)

    # Ctrl-D leaves.
    term.until("the prompt back", lambda rows: "you>" in rows)
    term.type("\x04")
    assert term.finish() == 0
    assert "stopped." in term.rows()


def test_ctrl_c_at_the_prompt_stops_the_run_gracefully(tmp_path, terminals):
    term = terminals(["run"], mission(tmp_path, speed=3_600))
    term.until("a prompt", lambda rows: "you>" in rows)
    term.type("hal")
    term.type("\x03")
    assert term.finish() == 0
    rows = term.rows()
    assert "stopped." in rows
    assert not any("Traceback" in r for r in rows), rows
    assert_clean(rows)


def test_replay_on_a_terminal_prints_posts_above_the_bar(tmp_path, terminals):
    # Nobody types (the personas' default console adapters read nothing): rich's bar, posts above it.
    root = mission(tmp_path)
    term = terminals(["replay", "t.yaml", "--personas", "p", "--db", "r.db", "--speed", "120000"], root)
    assert term.finish() == 0
    rows = term.rows()
    posts = [r for r in rows if "Lander:" in r]
    assert len(posts) == 6 and posts[-1].endswith("Lander: Battery at 70%."), rows
    assert any(r.startswith("synth ") and "6/6" in r for r in rows), rows
    assert_clean(rows)


def test_run_with_piped_input_on_a_terminal_answers_cleanly(tmp_path, terminals):
    # stdout on a terminal, stdin a pipe: no prompt to type at, but posts and answers stay off the bar.
    term = terminals(["run"], mission(tmp_path, speed=120_000), stdin_pipe=True)
    term.until("the first post", lambda rows: any("Touchdown at s0" in r for r in rows))
    assert term.proc.stdin is not None
    term.proc.stdin.write(b"/status\n")
    term.proc.stdin.flush()
    term.until("the answer", lambda rows: any("Lander: Phase" in r for r in rows))
    rows = term.until("the end", lambda rows: any("timeline finished" in r for r in rows))
    assert not any(" you: " in r for r in rows)  # nothing typed at the terminal, nothing echoed
    assert_clean(rows)
    term.proc.send_signal(signal.SIGINT)
    assert term.finish() == 0


@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=1, max_value=400),
    st.booleans(),
    st.booleans(),
)
def test_the_progress_line_fits_the_terminal(total, done, width, over, clock):
    bar = _LineProgress(total, "rosetta", (lambda: datetime(2016, 9, 30, 10, 39, tzinfo=UTC)) if clock else None)
    for _ in range(min(done, 50)):
        bar.advance(datetime(2014, 11, 12, tzinfo=UTC))
    bar.done = done
    if over:
        bar.close()
    text = "".join(t for _, t in bar.fragments(width))
    bar_only = "".join(t for style, t in bar.fragments(width) if "done" in style or "todo" in style)
    # The bar shrinks to what the words leave (to nothing on a narrow terminal), never past 40 columns.
    assert len(bar_only) <= 40
    assert len(text) <= width or not bar_only
    assert "\n" not in text


@given(st.text())
def test_posts_cannot_drive_the_terminal(text):
    # Escape sequences, carriage returns, backspaces: each control character is replaced, the rest kept.
    clean = _printable(text)
    assert len(clean) == len(text)
    for before, after in zip(text, clean, strict=True):
        control = unicodedata.category(before) == "Cc" and before not in "\n\t"
        assert after == ("\N{REPLACEMENT CHARACTER}" if control else before)


async def test_a_halted_mission_clock_stands_still():
    # After the replayed timeline ends, answers are stamped with its last instant, and a
    # delayed reaction still pending fires at once instead of waiting for a clock that stopped.
    clock = VirtualClock(datetime(2014, 11, 12, tzinfo=UTC), 1_000_000)
    end = datetime(2016, 9, 30, 10, 39, tzinfo=UTC)
    clock.halt(end)
    await asyncio.wait_for(clock.sleep_until(end + timedelta(days=365)), PATIENCE)
    assert clock.now() == end
    assert clock.is_instant(end + timedelta(days=1))
