"""The built-in chat commands: ``/subscribe``, ``/unsubscribe``, and the admins' ``/emit``, ``/reload``, ``/replay``.

They are answered before the persona sees the message, and only on the
adapter the message came from. An admin command from anyone else is refused
politely and logged as ``refused: not an admin``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.messages import Incoming, Outgoing
from ..engine.router import parse_command

if TYPE_CHECKING:
    from personae.adapters.base import Adapter

    from .runtime import Bot

log = logging.getLogger("personae.app.runtime")


class Builtins:
    """Answers the built-in commands of one bot (names from :class:`~personae.app.runtime.Commands`)."""

    def __init__(self, bot: Bot, log_in: Callable[[Incoming, str], None]) -> None:
        self.bot = bot
        self._log_in = log_in

    def handles(self, incoming: Incoming) -> bool:
        """Whether :meth:`answer` answers ``incoming`` (a built-in command of this bot, on a known adapter)."""
        cmd = parse_command(incoming.text, "/!")
        if cmd is None or (cmd.bot and incoming.bot_username and cmd.bot.lower() != incoming.bot_username.lower()):
            return False
        names = self.bot.options.commands
        store_cmds = {names.subscribe, names.unsubscribe} if self.bot.store is not None else set()
        admin_cmds = {names.emit, names.reload, names.replay}
        return cmd.name in {c for c in (*store_cmds, *admin_cmds) if c} and self.bot.adapter_for(incoming) is not None

    async def answer(self, incoming: Incoming) -> list[Outgoing] | None:
        """The reply to a built-in command, or ``None`` if ``incoming`` is not one (the persona answers)."""
        cmd = parse_command(incoming.text, "/!")
        if cmd is None:
            return None
        if cmd.bot and incoming.bot_username and cmd.bot.lower() != incoming.bot_username.lower():
            return None
        bot = self.bot
        adapter = bot.adapter_for(incoming)
        if adapter is None:
            return None
        names = bot.options.commands

        def reply(text: str) -> list[Outgoing]:
            return [
                Outgoing(
                    incoming.persona,
                    incoming.platform,
                    incoming.chat.id,
                    text,
                    incoming.message_id,
                    f"builtin:{cmd.name}",
                    key=f"reply:{adapter.name}:{incoming.chat.id}:{incoming.message_id}",
                    at=bot.clock.now(),
                )
            ]

        persona = bot.engine.personas.get(incoming.persona)
        pname = persona.name if persona else incoming.persona
        if names.subscribe and cmd.name == names.subscribe and bot.store is not None:
            new = await bot.outlet.subscribe_one(adapter.name, incoming.chat.id, incoming.persona)
            self._log_in(incoming, "builtin")
            return reply(f"Subscribed: {pname}'s news will arrive here." if new else "This chat is already subscribed.")
        if names.unsubscribe and cmd.name == names.unsubscribe and bot.store is not None:
            gone = await bot.outlet.unsubscribe(adapter.name, incoming.chat.id)
            self._log_in(incoming, "builtin")
            return reply("Unsubscribed. Farewell!" if gone else "This chat was not subscribed.")
        if cmd.name not in {c for c in (names.emit, names.reload, names.replay) if c}:
            return None
        if incoming.user.id not in adapter.config.admins and not incoming.user.is_admin:
            self._log_in(incoming, "refused: not an admin")
            log.warning("refused /%s from non-admin user %s on %s", cmd.name, incoming.user.id, adapter.name)
            return reply("Sorry, only the bot's admins can do that.")
        self._log_in(incoming, "admin")
        if cmd.name == names.emit:
            return reply(await self._emit(cmd.args, names.emit))
        if cmd.name == names.replay:
            if bot.replays is None:
                return reply("No timeline is configured for replays (add one under [[timelines]] in bot.toml).")
            return reply(await bot.replays.command(cmd.args, incoming, adapter.name))
        return reply(bot.reload()[1])

    async def _emit(self, args: str, name: str) -> str:
        from .chat import parse_event_line

        bot = self.bot
        try:
            event = parse_event_line(f"!event {args}", bot.clock.now(), source="admin")
        except ValueError as exc:
            return f"Usage: /{name} EVENT key=value … ({exc})"
        with bot.engine.problems_of() as failed:
            await bot.deliver(await bot.engine.dispatch(event))
        if failed:
            why = "; ".join(f"{p.persona} ({Path(p.where).name}): {p.message}" for p in failed[:3])
            return f"Event '{event.name}' raised, but {len(failed)} reaction(s) failed: {why}"
        if not bot.engine.reacts_to(event.name):
            return f"Event '{event.name}' raised; no persona reacts to it."
        return f"Event '{event.name}' raised."


def speaker_for(adapters: list[Adapter], incoming: Incoming) -> Adapter | None:
    """The adapter ``incoming`` came through (its persona's, on its platform)."""
    for a in adapters:
        if a.persona == incoming.persona and a.platform == incoming.platform and incoming.adapter in (None, a.name):
            return a
    return None
