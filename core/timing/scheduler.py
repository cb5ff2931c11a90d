"""Run callbacks at instants of a :class:`~personae.timing.clock.Clock`, in a deterministic order.

Items at the same instant run in the order they were scheduled. Recurring
items (cron) do not keep a finite run alive: :meth:`Scheduler.run` with
``until_idle=True`` returns once only recurring items remain.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from .clock import Clock

Callback = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class _Item:
    when: datetime
    seq: int
    callback: Callback
    recurring: bool = False
    cancelled: bool = False


#: Heap entries are plain tuples: tuple comparison runs in C, a dataclass's ``__lt__`` in Python.
_Entry = tuple[datetime, int, _Item]


class Handle:
    """Returned by :meth:`Scheduler.call_at`; lets the caller cancel the item."""

    def __init__(self, item: _Item) -> None:
        self._item = item

    def cancel(self) -> None:
        """Do not run this item."""
        self._item.cancelled = True

    @property
    def when(self) -> datetime:
        """When the item is due."""
        return self._item.when


class Scheduler:
    """A heap of timed callbacks driven by one clock."""

    def __init__(self, clock: Clock, *, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.clock = clock
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._on_error = on_error
        self._finite = 0
        #: When the last item run was due: where a finished replay's mission ends.
        self.last_due: datetime | None = None

    def call_at(
        self, when: datetime, callback: Callback, *, recurring: bool = False, place: int | None = None
    ) -> Handle:
        """Run ``callback`` when the clock reaches ``when``.

        Among items due at the same instant, ``place`` (from :meth:`reserve`)
        orders this one as if it had been scheduled when the places were reserved.
        """
        item = _Item(when, next(self._seq) if place is None else place, callback, recurring)
        heapq.heappush(self._heap, (when, item.seq, item))
        if not recurring:
            self._finite += 1
        self._changed.set()
        return Handle(item)

    def reserve(self, n: int) -> int:
        """Set aside ``n`` consecutive places in the same-instant order; returns the first.

        A long sorted series (a timeline) can then be fed one item at a time,
        each scheduled as its predecessor runs, and still run exactly where it
        would have had all been scheduled now: the heap stays small, and a
        100,000-event replay does not build 100,000 callbacks up front.
        """
        first = next(self._seq)
        self._seq = itertools.count(first + n)
        return first

    @property
    def waiting(self) -> int:
        """Items that will run once and have not run yet (recurring ones not counted)."""
        return self._finite

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def next_due(self) -> datetime | None:
        """When the earliest pending item is due."""
        return self._heap[0][0] if self._heap else None

    async def run(self, *, until: datetime | None = None, until_idle: bool = False) -> None:
        """Run items as they fall due.

        Stops when the next item is after ``until``, or (``until_idle``) when no
        non-recurring item is left; otherwise runs until cancelled.
        """
        while True:
            if until_idle and self._finite == 0:
                return
            if not self._heap:
                self._changed.clear()
                await self._changed.wait()
                continue
            item = self._heap[0][2]
            if until is not None and item.when > until:
                return
            instant = getattr(self.clock, "is_instant", None)
            if instant is not None and instant(item.when):
                # A virtual clock at full speed jumps: nothing can be scheduled in between.
                await self.clock.sleep_until(item.when)
            elif item.when > self.clock.now():
                self._changed.clear()
                sleeper = asyncio.ensure_future(self.clock.sleep_until(item.when))
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for fut in (sleeper, changed):
                        if not fut.done():
                            fut.cancel()
                if not sleeper.done() or sleeper.cancelled():
                    continue  # something earlier was scheduled meanwhile; look again
                if self._heap and self._heap[0][2] is not item:
                    continue
            heapq.heappop(self._heap)
            if not item.recurring:
                self._finite -= 1
            if item.cancelled:
                continue
            self.last_due = item.when
            try:
                await item.callback()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._on_error is None:
                    raise
                self._on_error(exc)
