"""One lane's dispatcher when several processes share one database (PostgreSQL workers).

Each process runs a :class:`SharedLane` per lane; the one that holds the lane
(:meth:`~personae.storage.interface.Coordination.exclusive`) runs an ordinary
:class:`~personae.delivery.dispatcher.Dispatcher`, the others wait to take
over. One sender per lane keeps all the processes together under the bot's
platform limits, with the dispatcher's own pacing unchanged. The dispatcher
sees the store through :class:`LeasedOutbox`: the rows it loads are leased to
this process, and the lease is renewed while the lane is held. If the renewal
fails for half a lease (the database is out of reach), the dispatcher stops
before the leases can expire and another process send the same rows.

A new holder waits one per-chat interval after the previous holder's last send
before it sends (the chats the previous holder served last must not get two
messages within the platform's per-chat limit), and it looks for new rows
every ``poll`` seconds, since other processes write to the outbox too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from personae.adapters.base import Adapter

from ..storage.interface import Coordination, Outbox
from ..storage.records import OutboxItem, OutboxRow
from .dispatcher import Dispatcher

log = logging.getLogger("personae.delivery.sharing")


@dataclass(frozen=True, slots=True)
class Sharing:
    """How a lane is shared between processes.

    :param lease: seconds a loaded row stays reserved for its sender without renewal:
        after a sender dies, its rows wait this long before another sends them.
    :param poll: seconds between looks for rows other processes wrote, and between
        attempts at taking a lane over.
    """

    lease: float = 30.0
    poll: float = 0.5


class LeasedOutbox:
    """The outbox as a lane's holder sees it: its pending rows are the ones leased to this process."""

    def __init__(self, store: Outbox, coordination: Coordination, lease: float) -> None:
        self._store = store
        self._coordination = coordination
        self._lease = lease

    async def outbox_pending(
        self, *, adapters: Sequence[str] | None = None, after_id: int = 0, limit: int = 500
    ) -> list[OutboxItem]:
        """Lease the next pending rows (``after_id``, the dispatcher's cursor, is not needed).

        A row this process leased is never returned again, and a row that another
        process committed after a later one (a lower id found late) is still found.
        """
        return await self._coordination.outbox_lease(list(adapters or ()), limit, self._lease)

    async def outbox_add(self, items: Sequence[Mapping[str, Any] | OutboxRow]) -> None:
        """As the store's."""
        await self._store.outbox_add(items)

    async def outbox_receipt(self, key: str) -> str | None:
        """As the store's."""
        return await self._store.outbox_receipt(key)

    async def outbox_mark(
        self, item_id: int, status: str, *, error: str | None = None, receipt: str | None = None
    ) -> None:
        """As the store's."""
        await self._store.outbox_mark(item_id, status, error=error, receipt=receipt)

    async def outbox_mark_many(self, outcomes: Sequence[tuple[int, str, str | None, str | None]]) -> None:
        """As the store's."""
        await self._store.outbox_mark_many(outcomes)

    async def outbox_cancel(self, run: str, reason: str) -> int:
        """As the store's."""
        return await self._store.outbox_cancel(run, reason)

    async def outbox_counts(self, run: str | None = None) -> dict[str, int]:
        """As the store's."""
        return await self._store.outbox_counts(run)

    async def move_chat(self, adapter: str, old: str, new: str, pending: Sequence[int] = ()) -> None:
        """As the store's."""
        await self._store.move_chat(adapter, old, new, pending)


def chat_gap(adapters: Sequence[Adapter], headroom: float = 0.97) -> float:
    """The longest per-chat interval of ``adapters`` (groups included), as the dispatcher paces it."""
    gaps = [0.0]
    for a in adapters:
        lim = a.limits
        if lim.per_chat_rate:
            gaps.append(1 / (lim.per_chat_rate * headroom))
        if lim.group_per_minute:
            gaps.append(60 / (lim.group_per_minute * headroom))
    return max(gaps)


class SharedLane:
    """Holds one lane when it can, and runs its dispatcher while it does.

    :param make: builds the lane's dispatcher over the outbox it is given.
    :param publish: called with the running dispatcher, and with ``None`` when it stops
        (the bot wakes the dispatchers it knows after each outbox write).
    """

    def __init__(
        self,
        outbox: Outbox,
        coordination: Coordination,
        lane: str,
        adapters: Sequence[Adapter],
        make: Callable[[Outbox], Dispatcher],
        publish: Callable[[Dispatcher | None], None],
        sharing: Sharing,
    ) -> None:
        self._outbox = outbox
        self._coordination = coordination
        self.lane = lane
        self._names = [a.name for a in adapters]
        self._gap = chat_gap(adapters)
        self._make = make
        self._publish = publish
        self.sharing = sharing

    async def run(self) -> None:
        """Take the lane whenever it is free, forever (cancel to stop: sends in flight finish)."""
        while True:
            async with self._coordination.exclusive(f"dispatch:{self.lane}", retry=self.sharing.poll) as lost:
                await self._hold(lost)
            await asyncio.sleep(self.sharing.poll)

    async def _hold(self, lost: asyncio.Event) -> None:
        coordination, names, lease = self._coordination, self._names, self.sharing.lease
        # Rows an earlier hold of this process left leased are this hold's to send.
        await coordination.outbox_release(names)
        since = await coordination.outbox_last_sent(names)
        if since is not None and since < self._gap:
            await asyncio.sleep(self._gap - since)
        dispatcher = self._make(LeasedOutbox(self._outbox, coordination, lease))
        self._publish(dispatcher)
        task = asyncio.create_task(dispatcher.run(), name=f"dispatch-{self.lane}")
        renewed = time.monotonic()
        due = renewed + lease / 3
        waiter = asyncio.create_task(lost.wait())
        try:
            while True:
                await asyncio.wait({task, waiter}, timeout=self.sharing.poll, return_when=asyncio.FIRST_COMPLETED)
                if task.done() or waiter.done():
                    break
                dispatcher.notify()  # other processes write to the outbox too
                now = time.monotonic()
                if now < due:
                    continue
                due = now + lease / 3
                try:
                    await coordination.outbox_renew(names, lease)
                    renewed = now
                except Exception as exc:  # the database is out of reach: stop before the leases can run out
                    log.warning("%s: could not renew the leases of its rows: %s", self.lane, exc)
                    if time.monotonic() - renewed > lease / 2:
                        log.warning("%s: stopping this process's dispatcher before its leases expire", self.lane)
                        return
            if task.done():
                task.result()  # a dispatcher that crashed is not silently replaced
        finally:
            waiter.cancel()
            self._publish(None)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await coordination.outbox_release(names)
