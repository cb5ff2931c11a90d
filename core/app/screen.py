"""The terminal while a bot runs: transcript lines above, a live progress line, a prompt at the bottom.

Everything a run shows on the terminal goes through one :class:`Screen`, so
posts, the progress display and what the user types never draw over each
other. :func:`open_screen` picks one from what the streams are:

- :class:`PlainScreen` when stdout is not a terminal (a pipe, a file, a test):
  one plain line per message, stdin read line by line, no prompt, no echo; a
  progress bar on stderr only when stderr is a terminal of its own.
- :class:`RichScreen` when stdout is a terminal but nobody types at it: rich's
  live bar, with every transcript line printed through the bar's console so it
  lands above the bar instead of after it.
- :class:`PromptScreen` when a console adapter reads input and stdin and stdout
  are terminals: prompt_toolkit's prompt (``you> ``) at the bottom, the progress
  line right above it. Posts and anything else written meanwhile go above
  both, redraws keep what is being typed, and each question is echoed into the
  transcript, stamped with the mission time, before its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO, cast, runtime_checkable

Now = Callable[[], datetime]


def mission_stamp(when: datetime | str | None) -> str:
    """``2014-11-12 15:34 UTC`` from a time or an ISO string (now when missing)."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class Line:
    """One transcript line: ``2014-11-12 15:34 UTC  Philae: text``."""

    stamp: str
    speaker: str
    text: str
    #: Said by the person at the terminal (drawn in another colour).
    mine: bool = False

    def plain(self) -> str:
        """The line as a pipe gets it: one line, newlines inside shown as ``⏎``."""
        prefix = f"{self.stamp}  " if self.stamp else ""
        return f"{prefix}{self.speaker}: {self.text.replace(chr(10), ' ⏎ ')}"


class Progress(Protocol):
    """How far a replay has got."""

    def advance(self, at: datetime) -> None:
        """One more event done, at mission time ``at``."""

    def close(self) -> None:
        """The replay is over (or stopped)."""


class Screen(Protocol):
    """Where a run's transcript, progress and typed lines meet the terminal."""

    def show(self, line: Line) -> None:
        """Add one line to the transcript."""

    def progress(self, total: int, description: str) -> Progress:
        """A progress display for ``total`` events."""

    def listen(self) -> asyncio.Queue[str | None]:
        """Lines the user types (``None`` at the end of input); every listener gets every line."""

    async def close(self) -> None:
        """Give the terminal back as it was."""


@runtime_checkable
class OnScreen(Protocol):
    """An adapter that shows its messages on the terminal (the console adapter)."""

    reads_input: bool
    timestamps: bool
    user_label: str

    def use_screen(self, screen: Screen) -> None:
        """Show messages, and read input, through ``screen``."""


def open_screen(
    adapters: Sequence[object],
    *,
    now: Now,
    on_quit: Callable[[], None],
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> Screen:
    """The screen for a run, given to every console adapter among ``adapters``.

    ``now`` is the mission clock (questions are stamped with it); ``on_quit`` is
    called when the user leaves with Ctrl-C or Ctrl-D at the prompt.
    """
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    consoles = [a for a in adapters if isinstance(a, OnScreen)]
    readers = [a for a in consoles if a.reads_input]
    screen: Screen
    if readers and _tty(stdin) and _tty(stdout):
        first = readers[0]
        screen = PromptScreen(
            now=now, on_quit=on_quit, user=first.user_label, timestamps=first.timestamps, stdin=stdin, stdout=stdout
        )
    elif _tty(stdout):
        screen = RichScreen(stdout, stdin, stderr)
    else:
        screen = PlainScreen(stdout, stdin, stderr)
    for a in consoles:
        a.use_screen(screen)
    return screen


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _restore_streams(stdout: TextIO, stderr: TextIO) -> None:
    sys.stdout, sys.stderr = stdout, stderr


def _printable(text: str) -> str:
    """``text`` without control characters: a message must not drive the terminal (clear it, move the cursor)."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) != "Cc" else "\N{REPLACEMENT CHARACTER}" for c in text)


def _styled(line: Line) -> Any:
    from rich.text import Text

    return Text.assemble(
        (f"{line.stamp}  " if line.stamp else "", "dim"),
        (_printable(line.speaker), "bold green" if line.mine else "bold cyan"),
        ": ",
        _printable(line.text),
    )


class _Listeners:
    """Typed lines fanned out to every listener (each console adapter that reads input)."""

    def __init__(self) -> None:
        self.queues: list[asyncio.Queue[str | None]] = []

    def add(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.queues.append(queue)
        return queue

    def put(self, text: str | None) -> None:
        for queue in self.queues:
            queue.put_nowait(text)


class _StdinLines:
    """Lines of a (piped) stdin, read by one thread and fanned out."""

    def __init__(self, stdin: TextIO) -> None:
        self.stdin = stdin
        self.listeners = _Listeners()
        self._pump: asyncio.Task[None] | None = None

    def listen(self) -> asyncio.Queue[str | None]:
        queue = self.listeners.add()
        if self._pump is None:
            from .chat import read_lines

            self._pump = asyncio.create_task(self._run(read_lines(self.stdin)), name="personae-stdin-lines")
        return queue

    async def _run(self, source: asyncio.Queue[str | None]) -> None:
        while True:
            text = await source.get()
            self.listeners.put(text)
            if text is None:
                return

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None


class _NoProgress:
    def advance(self, at: datetime) -> None:
        pass

    def close(self) -> None:
        pass


class _RichProgress:
    """rich's live bar: description, bar, n/total, mission time, elapsed."""

    def __init__(
        self, console: Any, total: int, description: str, *, redirect_stdout: bool, redirect_stderr: bool
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar: Any = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[mission]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            redirect_stdout=redirect_stdout,
            redirect_stderr=redirect_stderr,
        )
        self._task = self._bar.add_task(description, total=total, mission="")
        self._bar.start()
        self._open = True

    def advance(self, at: datetime) -> None:
        self._bar.update(self._task, advance=1, mission=mission_stamp(at))

    def close(self) -> None:
        if self._open:
            self._open = False
            self._bar.stop()


class PlainScreen:
    """Plain lines on ``out`` (a pipe, a file); a progress bar on ``err`` when that alone is a terminal."""

    def __init__(self, out: TextIO, stdin: TextIO, err: TextIO | None = None) -> None:
        self.out = out
        self.err = err
        self._lines = _StdinLines(stdin)

    def show(self, line: Line) -> None:
        """Write ``line`` as one plain line."""
        self.out.write(line.plain() + "\n")
        self.out.flush()

    def progress(self, total: int, description: str) -> Progress:
        """A bar on stderr when it is a terminal; none otherwise (the transcript is the output)."""
        if self.err is None or not _tty(self.err):
            return _NoProgress()
        from rich.console import Console

        # stdout is not on this terminal: leave it alone (its lines must reach the pipe, not the bar).
        return _RichProgress(Console(file=self.err), total, description, redirect_stdout=False, redirect_stderr=True)

    def listen(self) -> asyncio.Queue[str | None]:
        """stdin's lines, as they come (no prompt, no echo)."""
        return self._lines.listen()

    async def close(self) -> None:
        """Stop handing out lines."""
        await self._lines.close()


class RichScreen:
    """A terminal nobody types at: one rich console draws the bar and prints every line above it."""

    def __init__(self, out: TextIO, stdin: TextIO, err: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=out, highlight=False)
        self._lines = _StdinLines(stdin)
        self._bar: _RichProgress | None = None
        self.err = err or sys.stderr
        self._handlers = _LogRetarget(self.err)

    def show(self, line: Line) -> None:
        """Print ``line`` above the bar (the terminal wraps it)."""
        self.console.print(_styled(line), soft_wrap=True)

    def progress(self, total: int, description: str) -> Progress:
        """rich's bar at the bottom of the terminal."""
        # stderr is redirected (and its log records kept) only when it shows on a terminal too.
        shared = _tty(self.err)
        self._bar = _RichProgress(self.console, total, description, redirect_stdout=True, redirect_stderr=shared)
        if shared:
            # Log records (warnings, template errors) would otherwise be glued to the bar, too.
            self._handlers.to(_LineWriter(self.console))
        return self._bar

    def listen(self) -> asyncio.Queue[str | None]:
        """Lines of stdin (a pipe: there is no prompt to type at)."""
        return self._lines.listen()

    async def close(self) -> None:
        """Stop the bar, give log records their stream back."""
        if self._bar is not None:
            self._bar.close()
        self._handlers.restore()
        await self._lines.close()


class _LineWriter:
    """A file-like object printing what it is given through a rich console, line by line."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


class _LogRetarget:
    """Point the logging handlers that write to ``stream`` somewhere else for a while."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._moved: list[logging.StreamHandler[Any]] = []

    def to(self, target: Any) -> None:
        self.restore()
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (self.stream, sys.__stderr__):
                handler.setStream(target)
                self._moved.append(handler)

    def restore(self) -> None:
        for handler in self._moved:
            handler.setStream(self.stream)
        self._moved.clear()


class _LineProgress:
    """The progress line prompt_toolkit draws above the prompt.

    With ``now`` (the mission clock) it shows the mission time as it runs, and
    where it stopped once the timeline is over; otherwise the last event's time.
    """

    def __init__(self, total: int, description: str, now: Now | None = None) -> None:
        self.total = total
        self.description = description
        self.now = now
        self.done = 0
        self.mission = ""
        self.started = time.monotonic()
        self.finished_after: float | None = None

    def advance(self, at: datetime) -> None:
        self.done += 1
        self.mission = mission_stamp(at)

    def close(self) -> None:
        if self.finished_after is None:
            self.finished_after = time.monotonic() - self.started

    def fragments(self, width: int) -> list[tuple[str, str]]:
        """``rosetta ━━━━━━───── 12/29  2014-11-12 15:34 UTC  0:01:23`` fitted to ``width`` columns."""
        elapsed = self.finished_after if self.finished_after is not None else time.monotonic() - self.started
        clock = time.strftime("%H:%M:%S", time.gmtime(elapsed)).removeprefix("0")
        mission = mission_stamp(self.now()) if self.now is not None else self.mission
        if self.finished_after is not None:
            tail = f" {self.done}/{self.total}  timeline over; mission clock stopped at {mission or '-'}"
        else:
            tail = f" {self.done}/{self.total}  {mission}  {clock}"
        head = f"{self.description} "
        room = max(0, min(40, width - len(head) - len(tail) - 1))
        filled = room if self.total <= 0 else room * min(self.done, self.total) // self.total
        return [
            ("class:progress.name", head),
            ("class:progress.done", "━" * filled),
            ("class:progress.todo", "─" * (room - filled)),
            ("class:progress.text", tail),
        ]


class PromptScreen:
    """prompt_toolkit's prompt under a live progress line; posts print above both."""

    def __init__(
        self,
        *,
        now: Now,
        on_quit: Callable[[], None],
        user: str = "you",
        timestamps: bool = True,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.now = now
        self.on_quit = on_quit
        self.user = user
        self.timestamps = timestamps
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self._listeners = _Listeners()
        self._progress: _LineProgress | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: Any = None
        self._patch = contextlib.ExitStack()
        self._closing = False
        self._console: Any = None
        self._handlers = _LogRetarget(sys.stderr)

    def show(self, line: Line) -> None:
        """Print ``line`` above the prompt (the terminal wraps it)."""
        from rich.console import Console

        if self._console is None:
            # Rendered to ANSI text and written to sys.stdout: prompt_toolkit's proxy while
            # the prompt runs, which batches lines and draws them above the prompt.
            self._console = Console(file=sys.stdout, force_terminal=True, highlight=False, soft_wrap=True)
        self._console.file = sys.stdout
        self._console.print(_styled(line))

    def progress(self, total: int, description: str) -> Progress:
        """The progress line drawn above the prompt."""
        self._progress = _LineProgress(total, description, self.now)
        return self._progress

    def listen(self) -> asyncio.Queue[str | None]:
        """Lines typed at the prompt (the prompt starts with the first listener)."""
        queue = self._listeners.add()
        if self._task is None:
            self._start()
        return queue

    def _start(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.input import create_input
        from prompt_toolkit.output import create_output
        from prompt_toolkit.output.vt100 import Vt100_Output
        from prompt_toolkit.patch_stdout import StdoutProxy
        from prompt_toolkit.styles import Style

        output = create_output(self.stdout)
        # Without asking where the cursor is, prompt_toolkit draws just the progress line and
        # the prompt under the last post, instead of claiming every row below the cursor.
        if isinstance(output, Vt100_Output):
            output.enable_cpr = False
        self._session = PromptSession(
            self._message,  # a callable: the progress line above the prompt is redrawn as it moves
            refresh_interval=0.25,  # the elapsed time moves on between posts
            erase_when_done=True,  # the question goes into the transcript, stamped, instead
            reserve_space_for_menu=0,
            input=create_input(self.stdin),
            output=output,
            style=Style.from_dict(
                {
                    "progress.name": "bold",
                    "progress.done": "fg:ansimagenta",
                    "progress.todo": "fg:ansibrightblack",
                    "prompt": "bold fg:ansigreen",
                }
            ),
        )
        # Everything printed meanwhile (posts, notices, log records) goes above the prompt;
        # stderr too, unless it was sent elsewhere (a file keeps getting it).
        proxy = self._patch.enter_context(StdoutProxy(raw=True))
        saved = sys.stdout, sys.stderr
        self._patch.callback(_restore_streams, *saved)
        sys.stdout = cast(TextIO, proxy)
        if _tty(saved[1]):
            sys.stderr = cast(TextIO, proxy)
            self._handlers.to(proxy)
        self._task = asyncio.create_task(self._prompt(), name="personae-prompt")

    def _message(self) -> Any:
        prompt = [("class:prompt", f"{self.user}> ")]
        if self._progress is None:
            return prompt
        width = self._session.app.output.get_size().columns if self._session is not None else 80
        return [*self._progress.fragments(width), ("", "\n"), *prompt]

    async def _prompt(self) -> None:
        while not self._closing:
            try:
                text: str = await self._session.prompt_async(handle_sigint=False, set_exception_handler=False)
            except (KeyboardInterrupt, EOFError, OSError):
                # Ctrl-C or Ctrl-D at the prompt (or the terminal gone): leave the way SIGINT would.
                if not self._closing:
                    self.on_quit()
                break
            if self._closing:
                break
            if not text.strip():
                continue
            stamp = mission_stamp(self.now()) if self.timestamps else ""
            self.show(Line(stamp, self.user, text, mine=True))
            self._listeners.put(text)
        self._listeners.put(None)

    async def close(self) -> None:
        """Take the prompt down and give stdout, stderr and log records their streams back."""
        self._closing = True
        if self._task is not None:
            app = self._session.app
            if app.is_running and app.future is not None and not app.future.done():
                app.exit(result="")  # erases the prompt, as after an answer
            done, _ = await asyncio.wait({self._task}, timeout=5)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._handlers.restore()
        self._patch.close()
