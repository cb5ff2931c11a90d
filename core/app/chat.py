"""``personae chat``: talk with one persona in the terminal (or through a pipe)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from ..engine.engine import Engine, EngineError
from ..engine.messages import Chat, Event, Incoming, Outgoing, User, shown_lines
from ..language.templates import TemplateRenderError
from ..timing.timeline import _scalar


def parse_data(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` items as event data (values typed as in timelines: numbers, booleans)."""
    data = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"expected key=value, found '{item}'")
        data[key] = _scalar(value)
    return data


def parse_event_line(line: str, at: datetime, source: str = "chat") -> Event:
    """Parse ``!event NAME key=value ...`` (values may be quoted).

    ``source`` says where the line came from (``chat``, ``admin``); the log
    shows it as the event row's status.
    """
    parts = shlex.split(line)
    if len(parts) < 2:
        raise ValueError("usage: !event NAME key=value ...")
    return Event(parts[1], at, parse_data(parts[2:]), source, None, 0, f"{source}:{at.isoformat()}:{parts[1]}")


class ChatSession:
    """Reads lines, answers them, writes ``Name: text`` lines."""

    def __init__(
        self,
        engine: Engine,
        persona: str,
        *,
        user: User,
        out: TextIO = sys.stdout,
        interactive: bool = False,
        read: Callable[[str], str] = input,
    ) -> None:
        self.engine = engine
        self.persona = persona
        self.user = user
        self.out = out
        self.interactive = interactive
        self.read = read
        self.chat = Chat("console", "private")
        self._n = 0

    def show(self, outgoing: list[Outgoing]) -> None:
        """Print each message on its own line as ``Name: text``."""
        for o in outgoing:
            name = self.engine.personas[o.persona].name
            # A terminal shows no picture: each file is a line saying what it is, as on the console adapter.
            for line in shown_lines(o.text, o.media):
                text = line.replace("\r", "").replace("\n", " ⏎ ") if not self.interactive else line
                if self.interactive:
                    from rich.console import Console
                    from rich.markup import escape

                    Console(file=self.out, highlight=False).print(f"[bold cyan]{escape(name)}[/]: {escape(text)}")
                else:
                    self.out.write(f"{name}: {text}\n")
        self.out.flush()

    async def line(self, text: str) -> list[Outgoing]:
        """Handle one input line (a message, or ``!event ...``)."""
        text = text.rstrip("\r\n")
        if not text.strip():
            return []
        with self.engine.problems_of() as problems:
            try:
                return await self._answer(text)
            finally:
                # A template that fails at run time is logged, not fatal; an author trying
                # the persona out needs to see why it said nothing.
                for p in problems:
                    sys.stderr.write(f"{p.where}: error: {p.message}\n")

    async def _answer(self, text: str) -> list[Outgoing]:
        if text.startswith("!event"):
            try:
                event = parse_event_line(text, self.engine.clock.now())
                out = await self.engine.dispatch(event)
            except (ValueError, EngineError, TemplateRenderError) as exc:
                sys.stderr.write(f"error: {exc}\n")
                return []
            if not self.engine.reacts_to(event.name):
                sys.stderr.write(f"warning: no persona reacts to event '{event.name}'\n")
            return out
        self._n += 1
        incoming = Incoming(
            self.persona,
            "console",
            self.chat,
            self.user,
            text,
            message_id=str(self._n),
            received_at=datetime.now(UTC),
        )
        return await self.engine.handle(incoming)

    async def run(self, stdin: TextIO) -> None:
        """Loop until end of input (or Ctrl-D / Ctrl-C)."""
        if self.interactive:
            name = self.engine.personas[self.persona].name
            self.out.write(
                f"Talking with {name}. Type a message, '!event NAME k=v' to raise an event, Ctrl-D to leave.\n"
            )
        answered = threading.Semaphore(1) if self.interactive else None
        lines = read_lines(stdin, prompt="you> " if self.interactive else None, read=self.read, answered=answered)
        while True:
            text = await lines.get()
            if text is None:
                if self.interactive:
                    self.out.write("\n")
                return
            self.show(await self.line(text))
            if answered is not None:
                answered.release()


def read_lines(
    stdin: TextIO,
    *,
    prompt: str | None = None,
    read: Callable[[str], str] = input,
    answered: threading.Semaphore | None = None,
) -> asyncio.Queue[str | None]:
    """Lines of ``stdin`` delivered to an asyncio queue by a daemon thread (``None`` at EOF).

    A daemon thread rather than ``to_thread``: a blocked read must not keep
    the process alive after Ctrl-C. With ``answered``, each read (and its
    prompt) waits until the consumer releases it, so the next prompt comes
    after the reply to the last line, not before it.

    Bytes that are not valid in the stream's encoding become U+FFFD: one bad
    byte in piped input must not end the conversation.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    tolerant_decoding(stdin)

    def pump() -> None:
        while True:
            if answered is not None:
                answered.acquire()
            try:
                text: str | None = read(prompt) if prompt is not None else stdin.readline()
            except (EOFError, OSError, ValueError):
                text = None
            if text == "" and prompt is None:
                text = None
            try:
                loop.call_soon_threadsafe(queue.put_nowait, text)
            except RuntimeError:  # the loop has closed: nobody is reading any more
                return
            if text is None:
                return

    threading.Thread(target=pump, name="personae-stdin", daemon=True).start()
    return queue


def tolerant_decoding(stream: TextIO) -> None:
    """Decode ``stream`` with replacement characters instead of failing on invalid bytes."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors in ("strict", "surrogateescape"):
        with contextlib.suppress(ValueError, OSError):
            stream.reconfigure(errors="replace")
