"""A points budget over sliding windows, as Bluesky meters record creation.

Bluesky charges points for each record created (3 for a post) against two
budgets per account: 5,000 points in any hour and 35,000 in any day. The
dispatcher's even pace keeps the hourly one; the daily one is smaller than
seven hours at that pace, so a bot with a long backlog must stop for the
rest of the day instead of spending into 429s. :class:`PointsBudget` says
how long to wait before the next spend fits every window.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence


class PointsBudget:
    """Points spent in the last ``window`` seconds, for each (limit, window) given.

    :param budgets: ``(limit, window in seconds)`` pairs, e.g. ``[(5000, 3600), (35000, 86400)]``.
    :param clock: seconds, monotonic (injected by tests).
    """

    def __init__(self, budgets: Sequence[tuple[float, float]], clock: Callable[[], float] = time.monotonic) -> None:
        self.budgets = tuple(budgets)
        self._clock = clock
        #: Spends as (time, points), oldest first; ``_dropped`` of them were pruned from the left.
        self._spent: deque[tuple[float, float]] = deque()
        self._dropped = 0
        #: Per budget: the index of its oldest spend still inside its window, and the points inside.
        self._first = [0] * len(self.budgets)
        self._inside = [0.0] * len(self.budgets)

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` points can be spent without going over any budget (0: now)."""
        now = self._clock()
        self._advance(now)
        wait = 0.0
        for i, (limit, window) in enumerate(self.budgets):
            over = self._inside[i] + cost - limit
            if over <= 0:
                continue
            # The oldest spends leave the window first: wait until enough of them have.
            freed = 0.0
            for t, p in itertools.islice(self._spent, self._first[i] - self._dropped, None):
                freed += p
                if freed >= over:
                    # At least a microsecond: a wait rounded to nothing would never let time pass.
                    wait = max(wait, t + window - now, 1e-6)
                    break
            else:
                wait = max(wait, window)  # more than the whole budget: it never fits
        return wait

    def spend(self, cost: float) -> None:
        """Record ``cost`` points spent now."""
        self._advance(self._clock())
        self._spent.append((self._clock(), cost))
        for i in range(len(self.budgets)):
            self._inside[i] += cost

    def _advance(self, now: float) -> None:
        """Let spends out of each window (a spend is inside while ``now < time + window``)."""
        for i, (_, window) in enumerate(self.budgets):
            while self._first[i] - self._dropped < len(self._spent):
                t, p = self._spent[self._first[i] - self._dropped]
                if now < t + window:
                    break
                self._inside[i] -= p
                self._first[i] += 1
        keep = min(self._first, default=self._dropped + len(self._spent))
        while self._dropped < keep:
            self._spent.popleft()
            self._dropped += 1
