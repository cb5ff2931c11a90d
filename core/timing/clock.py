"""One clock under everything that waits: the system clock, or a virtual mission clock."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the engine and scheduler need of time."""

    def now(self) -> datetime:
        """Current (mission) time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once :meth:`now` has reached ``when``."""
        ...


#: The latest time a clock can show.
END_OF_TIME = datetime.max.replace(tzinfo=UTC)

#: Real seconds a full-speed replay runs before it lets other tasks have the loop.
BREATHE = 0.001


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        """The wall clock, UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep in real time until ``when``."""
        delay = (when - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class VirtualClock:
    """Mission time that starts at ``start`` and runs ``speed`` times faster than real time.

    ``speed=None`` means as fast as possible: sleeping jumps straight to the
    target time, so a replay is limited only by the work it does.
    """

    def __init__(self, start: datetime, speed: float | None = None, *, fast_until: datetime | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("the virtual clock needs a timezone-aware start time")
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError("speed must be a positive number")
        self.speed = speed
        #: Until this mission time the clock runs at max speed (skipping ahead, resuming).
        self.fast_until = fast_until
        self._anchor = start.astimezone(UTC)
        self._real0 = time.monotonic()
        self._yielded = self._real0
        #: The mission is over (:meth:`halt`): time stands still.
        self.halted = False

    def now(self) -> datetime:
        """Current mission time."""
        if self.speed is None or self.fast_until is not None or self.halted:
            return self._anchor
        elapsed = (time.monotonic() - self._real0) * self.speed
        try:
            return self._anchor + timedelta(seconds=elapsed)
        except OverflowError:
            # A huge speed runs past year 9999 within seconds: the clock stops at the end of time.
            return END_OF_TIME

    def is_instant(self, when: datetime) -> bool:
        """Whether reaching ``when`` takes no real time (full speed, fast-forwarding, or halted)."""
        return self.halted or self.speed is None or (self.fast_until is not None and when <= self.fast_until)

    def halt(self, at: datetime) -> None:
        """Stop mission time at ``at``: the replayed mission is over.

        Answers after the end are stamped with the mission's last instant, not
        with a date the clock ran on to; a delay still pending fires at once
        (as delays collapse in ``personae chat``) without moving the clock.
        """
        self._anchor = at.astimezone(UTC)
        self.halted = True

    def jump(self, when: datetime) -> None:
        """Set mission time to ``when`` (keeps running at the same speed from there)."""
        self._anchor = when.astimezone(UTC)
        self._real0 = time.monotonic()

    async def _breathe(self) -> None:
        """At full speed, let other tasks (dispatchers, writers, input) run every millisecond.

        Yielding after every event cost one pass of the event loop, with its
        ``epoll`` call, per event: most of a replay's time. Every millisecond
        keeps the loop responsive and lets queued rows be written in batches.
        """
        now = time.monotonic()
        if now - self._yielded >= BREATHE:
            self._yielded = now
            await asyncio.sleep(0)

    async def sleep_until(self, when: datetime) -> None:
        """At max speed: jump. Otherwise sleep the scaled real time. Halted: return at once."""
        if self.halted:
            await asyncio.sleep(0)
            return
        if self.fast_until is not None:
            if when <= self.fast_until:
                self._anchor = max(self._anchor, when)
                await self._breathe()
                return
            # Fast-forward is over: real-time pacing starts from where it ended.
            self.jump(max(self._anchor, self.fast_until))
            self.fast_until = None
        if self.speed is None:
            if when > self._anchor:
                self._anchor = when
            await self._breathe()
            return
        delay = (when - self.now()).total_seconds() / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
