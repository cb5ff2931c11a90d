"""Cooldowns: a rule that fired rests for a while, per chat, per user or for everyone.

Times are the engine's clock (the mission clock in a replay or a test), kept
as epoch seconds in a :class:`~personae.engine.memory.ScopedMemory`, so a
cooldown survives a restart.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from .memory import ScopedMemory

#: The state scope cooldown records are saved under.
SCOPE = "cooldown"
#: The key of a global cooldown's record.
GLOBAL = "*"


def cooldown_key(per: str, chat: str | None, user: str | None) -> str:
    """The record key of a cooldown counted ``per`` chat, user or globally."""
    if per == "chat" and chat is not None:
        return f"chat:{chat}"
    if per == "user" and user is not None:
        return f"user:{user}"
    return GLOBAL


class Cooldowns:
    """When each rule last fired, for each chat, user or globally."""

    def __init__(self, memory: ScopedMemory) -> None:
        self.memory = memory

    def remaining(self, persona: str, rule: str, key: str, now: datetime, duration: timedelta) -> timedelta | None:
        """How long ``rule`` still rests for ``key``, or ``None`` if it may fire.

        The length is the rule's current ``duration``, so shortening a cooldown in
        the file takes effect at once. A start later than ``now`` comes from another
        clock (a replayed mission after a live run) and is ignored.
        """
        started = self.memory.get(persona, key).get(rule)
        if not isinstance(started, int | float) or not math.isfinite(started):
            return None  # no record, or one in another shape (edited by hand, another version)
        elapsed = now.timestamp() - started
        if elapsed < 0 or elapsed >= duration.total_seconds():
            return None
        return timedelta(seconds=duration.total_seconds() - elapsed)

    def start(self, persona: str, rule: str, key: str, now: datetime) -> None:
        """``rule`` fired at ``now``: its rest starts."""
        record = dict(self.memory.get(persona, key))
        record[rule] = now.timestamp()
        self.memory.put(persona, key, record)


def describe_remaining(left: timedelta) -> str:
    """``4m 10s``, ``2h 5m``, ``1d 3h``: how long a rest still lasts, to the second at most."""
    seconds = max(1, round(left.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])
