"""The outgoing side of a bot: every message is written to the outbox before anything is sent.

:class:`Outlet` expands each message per adapter and chat (a broadcast goes to
the adapter's channels and subscribers), splits it to the platform's length,
and queues one outbox row per piece with an idempotency key. Rows are written
in group commits; the dispatchers are woken after each write and send what is
in the outbox, never what is only queued here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from personae.adapters.base import Adapter

from ..delivery.dispatcher import Dispatcher
from ..delivery.split import split_message
from ..engine.messages import Outgoing, media_json
from ..storage.interface import Storage
from ..storage.records import OutboxRow

log = logging.getLogger("personae.app.outlet")

#: Queued outbox rows written as soon as there are this many (not after ``linger``).
_OUTBOX_BATCH = 2000
#: Queued outbox rows at which :meth:`Outlet.deliver` waits for the disk (bounds memory).
_OUTBOX_HIGH_WATER = 20_000

Transcript = Callable[[Outgoing], None]


class Outlet:
    """Queues a bot's messages into its outbox, and keeps who receives its broadcasts.

    :param store: ``None`` for a dry run: messages only reach ``transcript``.
    :param adapters: who speaks for each persona and platform.
    :param dispatchers: the bot's dispatchers by lane, woken after each write (shared, filled at start).
    :param session: prefix of reply keys, so two sessions never share a key.
    :param run: the replay run the rows belong to (``None``: live).
    """

    def __init__(
        self,
        store: Storage | None,
        adapters: Sequence[Adapter],
        dispatchers: Mapping[str, Dispatcher],
        *,
        session: str,
        run: str | None,
        transcript: Transcript | None = None,
    ) -> None:
        self.store = store
        self.adapters = list(adapters)
        self.dispatchers = dispatchers
        self.session = session
        self.run = run
        self.transcript = transcript
        #: Who speaks for each (persona, platform): the adapters a message is queued on.
        self._speakers: dict[tuple[str, str], list[Adapter]] = {}
        for a in self.adapters:
            self._speakers.setdefault((a.persona, a.platform), []).append(a)
        #: Each adapter's subscribed chats, in subscription order (loaded at start).
        self.subscribers: dict[str, list[str]] = {}
        self._rows: list[OutboxRow] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._last_at: datetime | None = None
        #: Seconds queued rows may wait to be written together (0: next loop turn).
        self.linger = 0.0
        #: Called after each outbox write, with the mission time of the last message written.
        self.on_written: Callable[[datetime | None], Awaitable[None]] | None = None
        #: Messages from before this mission time are dropped (a replay's silent prelude).
        self.silent_until: datetime | None = None
        #: ``(adapter, chat)``: broadcasts go only there (an admin's ``/replay here``).
        self.target: tuple[str, str] | None = None
        #: Seconds a broadcast may use the subscribers read before it (``None``: read once, at
        #: start). Set when other processes share the database: their ``/subscribe`` counts too.
        self.refresh: float | None = None
        self._read_at = -math.inf
        #: Subscription changes made by this process (a read that overlaps one is not kept).
        self._changes = 0

    async def load_subscribers(self) -> None:
        """Read every adapter's subscribers from the store (at start, and when :attr:`refresh` says)."""
        if self.store is not None:
            changes, now = self._changes, time.monotonic()
            fresh = {a.name: await self.store.subscribers(a.name) for a in self.adapters}
            if changes != self._changes:
                return  # this process changed one meanwhile: read again at the next broadcast
            self.subscribers.update(fresh)  # in place: forks share the dict
            self._read_at = now

    async def deliver(self, outgoing: list[Outgoing]) -> None:
        """Queue messages: expand broadcasts, split long text, write the outbox, wake dispatchers."""
        refresh = self.refresh  # None in one process (SQLite): nothing more to do here
        due = refresh is not None and time.monotonic() - self._read_at >= refresh
        if due and any(o.chat is None for o in outgoing):
            await self.load_subscribers()
        if self.silent_until is not None:
            outgoing = [o for o in outgoing if o.at is None or o.at >= self.silent_until]
        if self.target is not None:
            outgoing = self._retarget(outgoing, *self.target)
        if not outgoing:
            return
        if self.transcript is not None:
            for o in outgoing:
                self.transcript(o)
        if self.store is None:
            return
        for o in outgoing:
            for adapter in self._speakers.get((o.persona, o.platform), ()):
                self._queue(o, adapter)
            if o.at is not None:
                self._last_at = o.at
        rows = self._rows
        if len(rows) >= _OUTBOX_HIGH_WATER:
            await self.flush()  # back-pressure: the producer waits for the disk
        elif rows and self._flusher is None:
            # A full batch is written at once, in the background: the caller goes on
            # producing the next batch while the database commits this one.
            delay = 0.0 if len(rows) >= _OUTBOX_BATCH else self.linger
            self._flusher = asyncio.create_task(self._flush_soon(delay))

    def _queue(self, o: Outgoing, adapter: Adapter) -> None:
        """Queue the rows of ``o`` on ``adapter``: one per chat and piece."""
        name = adapter.name
        if o.chat is not None:
            if o.adapter is not None and o.adapter != name:
                return
            chats: Sequence[str] = (o.chat,)
            base = f"{self.session}|{o.key}"
        else:
            subs = self.subscribers.get(name, [])
            channels = adapter.channels
            chats = list(dict.fromkeys([*map(str, channels), *subs])) if channels else subs
            base = o.key
        rows = self._rows
        if o.media:
            rows.extend(media_rows(o, adapter, chats, base, self.run))
            return
        limits = adapter.limits
        run, mission = self.run, o.at.isoformat() if o.at else None
        persona, event, rule = o.persona, o.event, o.rule
        if limits.measure != "utf16":
            # Such a platform may prefix each piece per chat (Mastodon: "@author "): split per chat.
            for chat in chats:
                room = limits.max_length - adapter.reserve(chat)
                for n, part in enumerate(split_message(o.text, room, limits.dialect, limits.measure)):
                    key, reply_to = f"{base}|{name}|{chat}|{n}", o.reply_to if n == 0 else None
                    rows.append((key, run, persona, name, chat, part, reply_to, event, rule, mission))
            return
        parts = split_message(o.text, limits.max_length, limits.dialect)
        if len(parts) == 1:  # the common case, kept tight: one row per chat
            text, reply_to = parts[0], o.reply_to
            rows.extend(
                (f"{base}|{name}|{chat}|0", run, persona, name, chat, text, reply_to, event, rule, mission)
                for chat in chats
            )
            return
        for chat in chats:
            for n, part in enumerate(parts):
                key = f"{base}|{name}|{chat}|{n}"
                rows.append((key, run, persona, name, chat, part, o.reply_to if n == 0 else None, event, rule, mission))

    def _retarget(self, outgoing: list[Outgoing], name: str, chat: str) -> list[Outgoing]:
        adapter = next((a for a in self.adapters if a.name == name), None)
        if adapter is None:
            return []
        # Only what this adapter's persona says on its platform: another persona's
        # broadcast has no voice in this chat, and must not fall back to everyone.
        return [
            replace(o, chat=chat, adapter=name) if o.chat is None else o
            for o in outgoing
            if o.persona == adapter.persona and o.platform == adapter.platform
        ]

    async def _flush_soon(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        try:
            await self.flush()
        except Exception as exc:  # the rows stay queued; the next flush retries them
            log.error("could not write the outbox: %s", exc)

    async def flush(self) -> None:
        """Write queued outbox rows now (one transaction) and wake the dispatchers."""
        if self.store is None:
            return
        async with self._flush_lock:  # one writer at a time keeps rows in their queued order
            rows, self._rows = self._rows, []
            last = self._last_at
            if rows:
                try:
                    await self.store.outbox_add(rows)
                except BaseException:
                    self._rows[:0] = rows  # never drop a message: the next flush retries
                    raise
                for d in self.dispatchers.values():
                    d.notify()
            if self.on_written is not None:
                await self.on_written(last)

    async def stop_flusher(self) -> None:
        """Cancel a pending background write (what it would have written stays queued)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None

    async def discard(self) -> None:
        """Drop what is queued but not yet written (a cancelled replay's rest)."""
        await self.stop_flusher()
        async with self._flush_lock:
            self._rows.clear()

    # -- who receives broadcasts

    async def subscribe(self, adapter: str, chats: Sequence[str]) -> None:
        """Subscribe ``chats`` to ``adapter``'s broadcasts (imports, tests, benchmarks)."""
        if self.store is None:
            return
        persona = next(a.persona for a in self.adapters if a.name == adapter)
        self._changes += 1
        await self.store.subscribe_many(adapter, chats, persona)
        subs = self.subscribers.setdefault(adapter, [])
        known = set(subs)
        for c in chats:
            if c not in known:
                known.add(c)
                subs.append(c)

    async def subscribe_one(self, adapter: str, chat: str, persona: str) -> bool:
        """Subscribe one chat (the ``/subscribe`` command); ``False`` if it already was."""
        if self.store is None:
            return False
        self._changes += 1
        new = await self.store.subscribe(adapter, chat, persona)
        if new:
            self.subscribers.setdefault(adapter, []).append(chat)
        return new

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Remove ``chat`` from ``adapter``'s broadcasts."""
        if self.store is None:
            return False
        self._changes += 1
        subs = self.subscribers.get(adapter, [])
        if chat in subs:
            subs.remove(chat)
        return await self.store.unsubscribe(adapter, chat)

    def chat_moved(self, adapter: str, old: str, new: str) -> None:
        """A chat got a new id (a Telegram group became a supergroup): its subscription follows it."""
        # The store has moved the subscription already; keep the in-memory list in step.
        self._changes += 1
        subs = self.subscribers.get(adapter)
        if subs is not None and old in subs:
            self.subscribers[adapter] = list(dict.fromkeys(new if c == old else c for c in subs))


def media_rows(o: Outgoing, adapter: Adapter, chats: Sequence[str], base: str, run: str | None) -> list[OutboxRow]:
    """The outbox rows of a message with media: the files go with its first piece.

    Where the platform limits the text sent with media (Telegram's caption), a longer
    text follows the media as pieces of its own: one row is one post, so a resume
    repeats none of them.
    """
    limits, name = adapter.limits, adapter.name
    media = media_json(o.media)
    mission = o.at.isoformat() if o.at else None
    rows: list[OutboxRow] = []
    for chat in chats:
        room = limits.max_length - adapter.reserve(chat)
        pieces = split_message(o.text, room, limits.dialect, limits.measure) if o.text else [""]
        caption = limits.caption_length
        if caption is not None and o.text and len(split_message(o.text, caption, limits.dialect, limits.measure)) > 1:
            pieces = ["", *pieces]
        for n, piece in enumerate(pieces):
            first = n == 0
            reply_to, files = (o.reply_to, media) if first else (None, None)
            key = f"{base}|{name}|{chat}|{n}"
            rows.append((key, run, o.persona, name, chat, piece, reply_to, o.event, o.rule, mission, files))
    return rows
