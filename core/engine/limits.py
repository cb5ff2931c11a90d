"""Per-user rate limits: at most N messages in any window; past it one notice, then silence.

A sliding log of the user's latest admitted messages (at most N times) is
kept per persona and user in a :class:`~personae.engine.memory.ScopedMemory`,
so a restart does not hand a flooder a fresh allowance.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from .memory import ScopedMemory
from .persona import RateLimit

#: The state scope rate-limit records are saved under.
SCOPE = "limit"


class Admission(Enum):
    """What becomes of one message under the limit."""

    #: Under the limit: handled as usual.
    ADMIT = "admit"
    #: The first message past the limit: the user is told, once.
    NOTICE = "notice"
    #: Past the limit and already told: ignored.
    SILENT = "silent"


class RateLimiter:
    """Counts each user's messages to each persona against the persona's ``limits``."""

    def __init__(self, memory: ScopedMemory) -> None:
        self.memory = memory

    def _recent(self, persona: str, user: str, now: datetime, limit: RateLimit) -> tuple[list[float], bool]:
        """The user's admitted messages within the window, and whether they were told within it."""
        record = self.memory.get(persona, user)
        t, window = now.timestamp(), limit.per.total_seconds()
        # Times after now come from another clock (a replay after a live run): they do not count.
        saved = record.get("at")
        # A saved record in another shape (edited by hand, another version) counts nothing.
        saved = saved if isinstance(saved, list) else []
        times = [x for x in saved if isinstance(x, int | float) and not isinstance(x, bool) and t - window < x <= t]
        told = record.get("told")
        return times, isinstance(told, int | float) and t - window < told <= t

    def peek(self, persona: str, user: str, now: datetime, limit: RateLimit) -> bool:
        """Whether a message from ``user`` now would be refused (nothing changes)."""
        times, _ = self._recent(persona, user, now, limit)
        return len(times) >= limit.messages

    def admit(self, persona: str, user: str, now: datetime, limit: RateLimit) -> Admission:
        """Count one message from ``user`` at ``now`` and say what becomes of it.

        The notice is said at most once per window: a user who keeps writing
        just past the limit gets ``messages`` answers and one notice in any
        ``per``, never a notice for each slot that frees up.
        """
        times, told = self._recent(persona, user, now, limit)
        record = dict(self.memory.get(persona, user))
        if len(times) < limit.messages:
            # Refused messages are not counted: the window is about what the bot answers.
            times.append(now.timestamp())
            self.memory.put(persona, user, {**record, "at": times[-limit.messages :]})
            return Admission.ADMIT
        if told:
            return Admission.SILENT
        self.memory.put(persona, user, {**record, "at": times, "told": now.timestamp()})
        return Admission.NOTICE
