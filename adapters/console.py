"""The console adapter: the terminal as a chat, for authoring, demos and replays."""

from __future__ import annotations

import asyncio
import getpass
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from .base import Adapter, AdapterConfig, Delivery, IncomingHandler, Limits, Receipt


def mission_stamp(iso: str | None) -> str:
    """``2014-11-12 15:34 UTC`` from an ISO time (now when missing)."""
    when = datetime.fromisoformat(iso) if iso else datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class ConsoleAdapter(Adapter):
    """Prints ``2014-11-12 15:34 UTC  Philae: text`` lines; optionally reads messages from stdin.

    Options: ``input`` (read stdin; default false), ``user`` (display name),
    ``timestamps`` (prefix the mission time; default true).
    """

    platform = "console"
    limits = Limits(max_length=100_000, dialect="plain", concurrency=1)
    option_names = frozenset({"input", "user", "timestamps", "display_name"})
    lane = "console"

    def __init__(self, config: AdapterConfig, *, out: TextIO | None = None, stdin: TextIO | None = None) -> None:
        super().__init__(config)
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin
        opts: dict[str, Any] = dict(config.options)
        self.read_input = bool(opts.get("input", False))
        self.timestamps = bool(opts.get("timestamps", True))
        self.display = str(opts.get("display_name", config.persona.title()))
        self.user = str(opts.get("user") or _login())
        self._reader: asyncio.Task[None] | None = None
        self._sent = 0
        self._rich = self.out.isatty() if hasattr(self.out, "isatty") else False

    @property
    def channels(self) -> tuple[str, ...]:
        """The terminal itself receives every broadcast."""
        return self.config.channels or ("console",)

    async def start(self, on_message: IncomingHandler) -> None:
        """Start reading stdin in the background when ``input`` is on."""
        if self.read_input:
            self._reader = asyncio.create_task(self._read(on_message), name=f"console-input-{self.name}")

    async def _read(self, on_message: IncomingHandler) -> None:
        from personae.app.chat import read_lines
        from personae.engine.messages import Chat, Incoming, User

        interactive = self.stdin.isatty()
        lines = read_lines(self.stdin, prompt="" if interactive else None)
        n = 0
        while True:
            text = await lines.get()
            if text is None:
                return
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            n += 1
            await on_message(
                Incoming(
                    self.persona,
                    self.platform,
                    Chat("console"),
                    # Whoever types at the terminal started the bot: the operator, so an admin.
                    User(f"console:{self.user}", self.user, is_admin=True),
                    text,
                    message_id=f"{self.name}:{n}",
                    received_at=datetime.now(UTC),
                    adapter=self.name,
                )
            )

    async def send(self, delivery: Delivery) -> Receipt:
        """Print one line (newlines inside the text are kept on one line when piped)."""
        text = delivery.text if self._rich else delivery.text.replace("\n", " ⏎ ")
        prefix = f"{mission_stamp(delivery.mission_time)}  " if self.timestamps else ""
        if self._rich:
            from rich.console import Console
            from rich.markup import escape

            Console(file=self.out, highlight=False).print(
                f"[dim]{prefix}[/][bold cyan]{escape(self.display)}[/]: {escape(text)}"
            )
        else:
            self.out.write(f"{prefix}{self.display}: {text}\n")
        self.out.flush()
        self._sent += 1
        return Receipt((f"{self.name}:{self._sent}",))

    async def stop(self) -> None:
        """Stop reading stdin."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "you"
