"""Drain the outbox into one adapter, at the platform's pace, retrying what fails.

Per adapter, one dispatcher owns flow control: a global pace (messages per
second, kept a little under the limit), a per-chat pace, a slower pace for
groups, and at most ``concurrency`` sends in flight, never two for the same
chat (so each chat sees its messages in order). A platform's ``retry_after``
is honoured for that chat, or for everything when the platform says global
(and then the pace is halved, and won back gradually as messages go through);
other transient failures back off exponentially (up to ``max_backoff``) and
are retried until sent, unless ``max_attempts`` is set. Every outcome is written to
the outbox row before the next send to that chat, so a crash can repeat at
most the sends in flight at that instant.

The per-chat and group paces hold for every send, not only within a backlog:
when a chat's queue runs dry, the time it may next be sent to is kept, so an
answer to a question asked a moment after the previous answer still waits its
turn. The first message to a chat that has been quiet for one interval goes
at once (there is no burst allowance beyond that one message).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from personae.adapters.base import Adapter, Delivery, DeliveryError, Receipt

from ..engine.messages import media_from_json
from ..storage.interface import Outbox
from ..storage.records import OutboxItem

log = logging.getLogger("personae.delivery.dispatcher")

#: Attempts at a message whose send raised something the adapter did not map to a
#: :class:`DeliveryError` (a bug, most likely) before it is marked failed.
UNEXPECTED_ATTEMPTS = 12

Redact = Callable[[str], str]
Key = tuple[str, str]  # (adapter name, chat)


@dataclass
class DispatchStats:
    """Counters for one adapter's dispatcher."""

    sent: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0
    unsubscribed: int = 0


def piece_of(key: str) -> tuple[int, str | None]:
    """Which piece of a split message the outbox row with ``key`` is, and the key of the piece before.

    The runtime keys pieces ``…|<n>``; a key of another shape is a whole message.
    """
    head, _, last = key.rpartition("|")
    if not head or not last.isdigit():
        return 0, None
    n = int(last)
    return n, (f"{head}|{n - 1}" if n > 0 else None)


class Dispatcher:
    """Sends the pending outbox rows of one lane: one adapter, or several sharing an output (consoles)."""

    def __init__(
        self,
        store: Outbox,
        adapters: Adapter | Sequence[Adapter],
        *,
        redact: Redact = lambda s: s,
        on_sent: Callable[[OutboxItem, Receipt], Awaitable[None]] | None = None,
        on_failed: Callable[[OutboxItem, str], Awaitable[None]] | None = None,
        on_chat_gone: Callable[[str, str, str], Awaitable[None]] | None = None,
        on_chat_moved: Callable[[str, str, str], Awaitable[None]] | None = None,
        headroom: float = 0.97,
        max_attempts: int | None = None,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
        seed: int = 0,
    ) -> None:
        self.store = store
        group = [adapters] if isinstance(adapters, Adapter) else list(adapters)
        self.adapters = {a.name: a for a in group}
        adapter = group[0]
        self._idempotent = all(a.idempotent for a in group)
        self.redact = redact
        self.on_sent = on_sent
        self.on_failed = on_failed
        self.on_chat_gone = on_chat_gone
        self.on_chat_moved = on_chat_moved
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.stats = DispatchStats()
        lim = adapter.limits
        #: The pace the limits allow, and the pace now: halved by a bot-wide 429 (someone
        #: else shares the token, or the limit is lower than configured) and won back
        #: step by step with each message sent.
        self._full_rate = (lim.global_rate or 0.0) * headroom
        self._rate = self._full_rate
        self._throttled_until = 0.0
        self._global_interval = 1 / self._full_rate if self._full_rate else 0.0
        #: Intervals a late wake-up may catch up on at once: a busy event loop that wakes a few
        #: intervals late no longer loses those sends for good (it lost all but one).
        self._catch_up = max(1, int((lim.global_rate or 0) * (1 - headroom) / 2))
        #: Start times of the sends of the last second: catching up never puts more than the
        #: pace in one second, so the headroom stays whole for jitter (the platform's clock
        #: and ours disagree on when a send happened).
        self._recent: deque[float] = deque()
        self._rate_window = lim.rate_window
        self._chat_interval = 1 / (lim.per_chat_rate * headroom) if lim.per_chat_rate else 0.0
        self._group_interval = 60 / (lim.group_per_minute * headroom) if lim.group_per_minute else 0.0
        self._slots = asyncio.Semaphore(max(1, lim.concurrency))
        self._queues: dict[Key, deque[OutboxItem]] = {}
        #: Items in ``_queues``, kept as a count: summing 10,000 chat queues per loop turn is quadratic.
        self._loaded = 0
        self._ready: list[tuple[float, int, Key]] = []
        self._scheduled: set[Key] = set()
        self._inflight: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._attempts: dict[int, int] = {}
        self._gone: set[Key] = set()
        #: Chats that changed id during this run: rows still addressed to the old id go to the new one.
        self._moved: dict[Key, str] = {}
        self._cancelled: set[str] = set()
        self._global_next = 0.0
        #: When each chat may next be sent to, kept after its queue runs dry (pruned once past).
        self._chat_next: dict[Key, float] = {}
        self._last_id = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random(seed)
        self._more_in_db = True
        self._generation = 0
        self._marks: list[tuple[tuple[int, str, str | None, str | None], asyncio.Future[None] | None]] = []
        self._committer: asyncio.Task[None] | None = None
        #: Set once run() is cancelled: sends in flight finish, nothing new starts.
        self._stopping = False
        #: Per chat, the key and receipt of the last message sent: the piece before the next
        #: piece of a split message (a chat's messages go one at a time, in order).
        self._last_sent: dict[Key, tuple[str, str]] = {}

    # -- public

    def notify(self) -> None:
        """New rows were added to the outbox."""
        self._generation += 1
        self._more_in_db = True
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Wait until nothing is pending or in flight, and every outcome is on disk."""
        await self._idle.wait()
        while self._committer is not None and not self._committer.done():
            await asyncio.shield(self._committer)

    def welcome_back(self, adapter: str, chat: str) -> None:
        """``chat`` wrote to the bot again (it was unblocked, or added back): send to it again."""
        self._gone.discard((adapter, chat))

    def is_gone(self, adapter: str, chat: str) -> bool:
        """Whether ``chat`` blocked or removed the bot during this run."""
        return (adapter, chat) in self._gone

    def cancel_run(self, run: str) -> int:
        """Forget the loaded, unsent messages of ``run`` (the caller marks them in the store).

        Sends already in flight finish; a later transient failure of one of
        them is not retried.
        """
        self._cancelled.add(run)
        dropped = 0
        for key in list(self._queues):
            queue = self._queues[key]
            kept = deque(item for item in queue if item.run != run)
            dropped += len(queue) - len(kept)
            if kept:
                self._queues[key] = kept
            else:
                del self._queues[key]
        self._loaded -= dropped
        self._wake.set()
        return dropped

    @property
    def pending(self) -> int:
        """Rows loaded and not yet delivered or failed."""
        return self._loaded + len(self._inflight)

    async def run(self) -> None:
        """Deliver forever (cancel to stop; in-flight sends finish first)."""
        try:
            while True:
                if self._more_in_db and self._loaded < 1000:
                    await self._load()
                    continue  # anything may have changed during the await: look again
                if not self._ready:
                    if not self._inflight and not self._more_in_db and not self._loaded:
                        self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                ready_at, _, key = self._ready[0]
                now = time.monotonic()
                opens = self._window_opens(now)
                if opens > self._global_next:
                    self._global_next = opens  # what the window holds back is not lateness to catch up
                wait = max(ready_at, self._global_next) - now
                if wait > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                if self._slots.locked():
                    # Wait for a send to finish; it wakes us. Peek again afterwards:
                    # the head of the heap may have changed meanwhile.
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._slots.acquire()
                heapq.heappop(self._ready)
                self._scheduled.discard(key)
                queue = self._queues.get(key)
                if not queue:
                    self._slots.release()
                    continue
                item = queue.popleft()
                self._loaded -= 1
                self._inflight.add(key)
                if self._global_interval:
                    # Keep the average pace even when a wake-up comes late, but never bank
                    # more than ``_catch_up`` intervals of lateness (no bursts after a lull).
                    now = time.monotonic()
                    bank = self._catch_up * self._global_interval
                    base = self._global_next if self._global_next > now - bank else now
                    self._global_next = base + self._global_interval
                    self._recent.append(now)
                task = asyncio.create_task(self._send(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self._stopping = True
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals

    async def _mark(self, item_id: int, status: str, *, error: str | None = None, receipt: str | None = None) -> None:
        """Record an outcome durably before returning.

        Outcomes of sends that finish together share one transaction (group
        commit), so concurrency buys throughput without weakening the rule
        that a send's outcome is on disk before that slot sends again.
        """
        # An idempotent adapter (a repeat is harmless) need not wait for the disk.
        future = None if self._idempotent else asyncio.get_running_loop().create_future()
        self._marks.append(((item_id, status, error, receipt), future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_marks())
        if future is not None:
            await future

    async def _commit_marks(self) -> None:
        while self._marks:
            batch, self._marks = self._marks, []
            try:
                await self.store.outbox_mark_many([outcome for outcome, _ in batch])
            except Exception as exc:
                if any(future is None for _, future in batch):
                    # Those rows stay pending on disk: sent again after a restart, harmlessly.
                    log.error("could not record %d delivery outcome(s): %s", len(batch), exc)
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)

    async def _load(self) -> None:
        generation = self._generation
        items = await self.store.outbox_pending(adapters=list(self.adapters), after_id=self._last_id, limit=2000)
        # A notify() that arrived during the query must not be forgotten.
        self._more_in_db = len(items) == 2000 or generation != self._generation
        for item in items:
            self._last_id = max(self._last_id, item.id)
            if item.run in self._cancelled:
                continue  # read just before the cancel reached the database
            key = (item.adapter, item.chat)
            if key in self._moved:
                item = replace(item, chat=self._moved[key])
                key = (item.adapter, item.chat)
            if key in self._gone:
                await self._mark(item.id, "failed", error="chat unsubscribed (blocked or removed)")
                continue
            self._queues.setdefault(key, deque()).append(item)
            self._loaded += 1
            self._attempts.setdefault(item.id, item.attempts)
            self._schedule(key, 0.0)
        if items:
            self._idle.clear()

    def _schedule(self, key: Key, at: float) -> None:
        queue = self._queues.get(key)
        if key in self._scheduled or key in self._inflight or not queue:
            return
        at = max(at, self._chat_next.get(key, 0.0))
        self._scheduled.add(key)
        # Ties (chats ready at once) go oldest message first: a lane with no
        # per-chat pacing then sends in exact outbox order.
        heapq.heappush(self._ready, (at, queue[0].id, key))
        self._wake.set()

    def _window_opens(self, now: float) -> float:
        """When the last second's sends leave room for one more at the current pace (0.0: now)."""
        recent = self._recent
        if not self._global_interval:
            return 0.0
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        return recent[0] + 1.0 if len(recent) >= self._per_second(self._rate) else 0.0

    def _per_second(self, rate: float) -> int:
        # Where the platform counts by the second, rounded down: at Telegram's 30/s the pace is
        # 29.1, and 30 sends in one second by our clock can be 31 by the platform's once network
        # jitter bunches them (a 429, measured). A budget counted over minutes or hours has room.
        return max(1, math.floor(rate)) if self._rate_window <= 1.0 else math.ceil(rate)

    def _pace(self, rate: float) -> None:
        if self._full_rate:
            self._rate = rate
            self._global_interval = 1 / rate

    def _chat_gap(self, key: Key) -> float:
        gap = self._chat_interval
        if self._group_interval and self.adapters[key[0]].is_group(key[1]):
            gap = max(gap, self._group_interval)
        return gap

    async def _send(self, item: OutboxItem) -> None:
        """Send ``item``, then go on with the same chat's next items while nothing else is due first.

        Each pass through the run loop costs an event-loop turn; an unpaced
        lane (the console, a replay into a sink) sending a chat's backlog one
        turn per message spent most of its time there. Continuing here keeps
        the exact order the run loop would have chosen.
        """
        key = (item.adapter, item.chat)
        next_at = 0.0
        streak = 0
        try:
            while True:
                next_at = await self._attempt(item)
                following = self._next_in_line(key, next_at)
                if following is None:
                    return
                item = following
                streak += 1
                if streak % 64 == 0:
                    await asyncio.sleep(0)  # a send that never suspends must not hog the loop
        finally:
            self._inflight.discard(key)
            self._slots.release()
            self._remember_pace(key, next_at)
            self._schedule(key, next_at)
            if not self._queues.get(key):
                self._queues.pop(key, None)
            self._wake.set()

    def _remember_pace(self, key: Key, next_at: float) -> None:
        """Keep when ``key`` may be sent to next, even if its queue is empty now."""
        if next_at > time.monotonic():
            self._chat_next[key] = next_at
        else:
            self._chat_next.pop(key, None)
        if len(self._chat_next) > 2 * len(self._queues) + 1024:
            # Amortised pruning: a broadcast to many chats leaves one entry each until it passes.
            now = time.monotonic()
            self._chat_next = {k: t for k, t in self._chat_next.items() if t > now}

    def _next_in_line(self, key: Key, next_at: float) -> OutboxItem | None:
        """The chat's next item, if the run loop would pick it next anyway (no pacing, nothing older ready)."""
        if self._stopping or self._global_interval or next_at > time.monotonic():
            return None
        queue = self._queues.get(key)
        if not queue or queue[0].run in self._cancelled:
            return None
        if self._ready and self._ready[0][:2] < (next_at, queue[0].id):
            return None
        self._loaded -= 1
        return queue.popleft()

    async def _attempt(self, item: OutboxItem) -> float:
        """One send of ``item`` and its outcome on record; returns when its chat may send again."""
        key = (item.adapter, item.chat)
        part, previous_key = piece_of(item.key)
        previous = None
        if previous_key is not None:
            previous = await self._receipt_of(key, previous_key)
        delivery = Delivery(
            item.id,
            item.chat,
            item.text,
            item.reply_to,
            item.persona,
            item.event,
            item.mission_time,
            item.key,
            part,
            previous,
            media_from_json(item.media),
        )
        try:
            receipt = await self.adapters[item.adapter].send(delivery)
        except DeliveryError as exc:
            return await self._failed(item, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug or an unexpected library error: retry, a bounded number of times
            return await self._failed(item, DeliveryError(f"{type(exc).__name__}: {exc}"), unexpected=True)
        self._failures.pop(key, None)
        self._attempts.pop(item.id, None)
        if self._rate < self._full_rate:
            self._pace(min(self._full_rate, self._rate + self._full_rate / 200))
        await self._mark(item.id, "sent", receipt=",".join(receipt.message_ids))
        if receipt.message_ids:
            self._last_sent[key] = (item.key, receipt.message_ids[-1])
        self.stats.sent += 1
        gap = self._chat_gap(key)
        if self.on_sent is not None:
            await self.on_sent(item, receipt)
        return time.monotonic() + gap if gap else 0.0

    async def _receipt_of(self, chat: Key, key: str) -> str | None:
        """The platform id of the message with outbox ``key``, if it was sent (this run or before)."""
        last = self._last_sent.get(chat)
        if last is not None and last[0] == key:
            return last[1]
        try:
            receipt = await self.store.outbox_receipt(key)
        except Exception as exc:  # the piece goes out unthreaded rather than not at all
            log.error("could not read the receipt of %s: %s", key, exc)
            return None
        return receipt.rsplit(",", 1)[-1] if receipt else None

    async def _failed(self, item: OutboxItem, exc: DeliveryError, *, unexpected: bool = False) -> float:
        chat = (item.adapter, item.chat)
        message = self.redact(str(exc))
        attempts = self._attempts.get(item.id, item.attempts) + 1
        self._attempts[item.id] = attempts
        now = time.monotonic()
        if exc.chat_gone:
            await self._chat_gone(item, message)
            return now
        if exc.moved_to is not None and exc.moved_to != item.chat:
            await self._chat_moved(item, exc.moved_to)
            return now
        # A transient failure (5xx, network, flood control) never gives up by default:
        # the message stays in the outbox until it is sent, at most max_backoff apart.
        # An exception the adapter did not map is likely a bug that will repeat: it must not
        # block its chat (and drained()) for ever.
        limit = self.max_attempts if self.max_attempts is not None else (UNEXPECTED_ATTEMPTS if unexpected else None)
        gave_up = limit is not None and attempts >= limit and exc.retry_after is None
        if exc.permanent or gave_up or item.run in self._cancelled:
            self.stats.failed += 1
            await self._mark(item.id, "failed", error=message)
            if self.on_failed is not None:
                await self.on_failed(item, message)
            return now + self._chat_gap(chat)
        # Transient: the row stays pending and goes back to the head of its chat's queue.
        self.stats.retries += 1
        self._queues.setdefault(chat, deque()).appendleft(item)
        self._loaded += 1
        await self._mark(item.id, "pending", error=message)
        if exc.retry_after is not None:
            self.stats.rate_limited += 1
            wait = exc.retry_after
            if exc.scope == "global":
                self._global_next = max(self._global_next, now + wait)
                if now >= self._throttled_until:
                    # Once per episode: the other sends in flight meet the same 429.
                    self._pace(max(self._full_rate / 16, self._rate / 2))
                    self._throttled_until = now + wait
            return now + wait
        n = self._failures.get(chat, 0)
        self._failures[chat] = n + 1
        backoff: float = min(self.max_backoff, self.base_backoff * 2.0**n)
        return now + backoff * (0.5 + self._rng.random() / 2)

    async def _chat_moved(self, item: OutboxItem, new: str) -> None:
        """Send ``item`` and the rest of its chat's queue to the chat's new id, in order."""
        old_key, new_key = (item.adapter, item.chat), (item.adapter, new)
        rest = self._queues.pop(old_key, deque())
        moved = [replace(it, chat=new) for it in (item, *rest)]
        # In memory first, with no await in between: nothing can be lost or counted twice.
        self._queues.setdefault(new_key, deque()).extendleft(reversed(moved))
        self._loaded += 1  # the item was taken out of the queue to be sent; it is back
        self._moved[old_key] = new
        # The same group under its new id: it keeps its pace.
        if old_key in self._chat_next:
            self._chat_next[new_key] = max(self._chat_next[old_key], self._chat_next.get(new_key, 0.0))
        self._schedule(new_key, 0.0)
        try:
            await self.store.move_chat(item.adapter, item.chat, new, [it.id for it in moved])
            if self.on_chat_moved is not None:
                await self.on_chat_moved(item.adapter, item.chat, new)
        except Exception as exc:  # the rows keep the old id on disk; this run sends them to the new one
            log.error("could not record that chat %s is now %s: %s", item.chat, new, exc)

    async def _chat_gone(self, item: OutboxItem, message: str) -> None:
        chat = (item.adapter, item.chat)
        first = chat not in self._gone
        self._gone.add(chat)
        rest = self._queues.pop(chat, deque())
        self._loaded -= len(rest)
        dropped = [item, *rest]
        for it in dropped:
            await self._mark(it.id, "failed", error=message)
        self.stats.failed += len(dropped)
        if first:
            self.stats.unsubscribed += 1
            if self.on_chat_gone is not None:
                await self.on_chat_gone(item.adapter, item.chat, message)
