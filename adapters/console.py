"""The console adapter: the terminal as a chat, for authoring, demos and replays."""

from __future__ import annotations

import asyncio
import getpass
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from personae.app.screen import Line, PlainScreen, Screen, mission_stamp
from personae.language.media import describe

from .base import Adapter, AdapterConfig, Delivery, IncomingHandler, Limits, Receipt

__all__ = ["ConsoleAdapter", "mission_stamp"]


class ConsoleAdapter(Adapter):
    """Shows ``2014-11-12 15:34 UTC  Philae: text`` lines; optionally reads messages from stdin.

    Options: ``input`` (read stdin; default false), ``user`` (display name),
    ``timestamps`` (prefix the mission time; default true).

    Lines go through a :class:`~personae.app.screen.Screen`: plain lines on
    ``out`` unless a run gives every console adapter the terminal's screen
    (:func:`~personae.app.screen.open_screen`), which keeps posts, progress and
    the prompt apart.
    """

    platform = "console"
    limits = Limits(max_length=100_000, dialect="plain", concurrency=1)
    option_names = frozenset({"input", "user", "timestamps", "display_name"})
    lane = "console"

    def __init__(
        self,
        config: AdapterConfig,
        *,
        out: TextIO | None = None,
        stdin: TextIO | None = None,
        screen: Screen | None = None,
    ) -> None:
        super().__init__(config)
        opts: dict[str, Any] = dict(config.options)
        self.reads_input = bool(opts.get("input", False))
        self.timestamps = bool(opts.get("timestamps", True))
        self.display = str(opts.get("display_name", config.persona.title()))
        self.user = str(opts.get("user") or _login())
        #: How the person at the terminal appears in the transcript and the prompt.
        self.user_label = str(opts.get("user") or "you")
        self.screen: Screen = screen or PlainScreen(out or sys.stdout, stdin or sys.stdin)
        self._own_screen = screen is None
        self._reader: asyncio.Task[None] | None = None
        self._sent = 0

    def use_screen(self, screen: Screen) -> None:
        """Show lines, and read input, through the run's shared ``screen`` (its owner closes it)."""
        self.screen = screen
        self._own_screen = False

    @property
    def channels(self) -> tuple[str, ...]:
        """The terminal itself receives every broadcast."""
        return self.config.channels or ("console",)

    async def start(self, on_message: IncomingHandler) -> None:
        """Start reading typed lines in the background when ``input`` is on."""
        if self.reads_input:
            lines = self.screen.listen()
            self._reader = asyncio.create_task(self._read(lines, on_message), name=f"console-input-{self.name}")

    async def _read(self, lines: asyncio.Queue[str | None], on_message: IncomingHandler) -> None:
        from personae.engine.messages import Chat, Incoming, User

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
        """Show one transcript line (on a pipe, newlines inside the text are kept on one line)."""
        stamp = mission_stamp(delivery.mission_time) if self.timestamps else ""
        if delivery.text:
            self.screen.show(Line(stamp, self.display, delivery.text))
        for m in delivery.media:  # a terminal shows no picture: a line says what it is
            self.screen.show(Line(stamp, self.display, describe(m.name, m.kind, m.alt)))
        self._sent += 1
        return Receipt((f"{self.name}:{self._sent}",))

    async def stop(self) -> None:
        """Stop reading input."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._own_screen:
            await self.screen.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "you"
