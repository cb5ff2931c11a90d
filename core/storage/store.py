"""The SQLite store: the embedded default behind :class:`~personae.storage.interface.Storage`.

:class:`Store` is a thin facade: each concern (interaction log, persona
state, outbox, subscriptions, runs) is a small class in
:mod:`personae.storage.sqlite`, all over one aiosqlite connection in WAL
mode. Log rows and state changes are queued in memory and written in batches
by a writer task, so logging never limits throughput; :meth:`Store.close`
flushes everything that was queued. The outbox is written through at once,
because delivery guarantees depend on it.

The schema is listed here, one migration per version: a database file
records its version in ``PRAGMA user_version`` and is migrated on open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from .records import LogRow, OutboxItem, OutboxRow, StoreError, utcnow
from .sqlite.connection import Connection, explain
from .sqlite.log import SqliteLog
from .sqlite.outbox import SqliteOutbox
from .sqlite.runs import SqliteRuns
from .sqlite.state import SqliteState
from .sqlite.subscriptions import SqliteSubscriptions
from .sqlite.writer import BatchWriter

__all__ = ["SCHEMA_VERSION", "LogRow", "OutboxItem", "OutboxRow", "Store", "StoreError", "utcnow"]

SCHEMA_VERSION = 3

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE interactions (
        id INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'event')),
        persona TEXT,
        platform TEXT,
        chat TEXT,
        user TEXT,
        user_name TEXT,
        text TEXT,
        rule TEXT,
        seed INTEGER,
        latency_ms REAL,
        status TEXT,
        event TEXT,
        run TEXT,
        mission_time TEXT
    );
    CREATE INDEX interactions_ts ON interactions (ts);
    CREATE INDEX interactions_persona_ts ON interactions (persona, ts);
    CREATE TABLE state (
        persona TEXT NOT NULL,
        scope TEXT NOT NULL,
        chat TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL,
        updated TEXT NOT NULL,
        PRIMARY KEY (persona, scope, chat)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        run TEXT,
        persona TEXT NOT NULL,
        adapter TEXT NOT NULL,
        chat TEXT NOT NULL,
        text TEXT NOT NULL,
        reply_to TEXT,
        event TEXT,
        rule TEXT,
        mission_time TEXT,
        created TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        sent_at TEXT,
        receipt TEXT
    );
    CREATE INDEX outbox_pending ON outbox (status, id);
    CREATE TABLE subscriptions (
        adapter TEXT NOT NULL,
        chat TEXT NOT NULL,
        persona TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY (adapter, chat)
    );
    CREATE TABLE replays (
        run TEXT PRIMARY KEY,
        timeline TEXT NOT NULL,
        options TEXT NOT NULL,
        started TEXT NOT NULL,
        position TEXT,
        status TEXT NOT NULL DEFAULT 'running'
    );
    """,
    # Inserting into a second index on ts cost about a quarter of every log write;
    # (persona, ts) serves per-persona queries, and id order is time order for the rest.
    2: "DROP INDEX IF EXISTS interactions_ts;",
    # A log row a replay can write again (a resumed run re-executes its past) carries a
    # deterministic key; the partial index keeps the keyless rows (chat) free of its cost.
    3: """
    ALTER TABLE interactions ADD COLUMN key TEXT;
    CREATE UNIQUE INDEX interactions_key ON interactions (key) WHERE key IS NOT NULL;
    ALTER TABLE replays ADD COLUMN timeline_hash TEXT;
    """,
}


class Store:
    """Async SQLite store. Use ``async with Store(path) as store:``.

    Every method belongs to one concern object and is delegated to it; the
    objects share one :class:`~personae.storage.sqlite.connection.Connection`
    (so :meth:`move_chat` can change two tables in one transaction) and one
    :class:`~personae.storage.sqlite.writer.BatchWriter` (so log rows and
    state changes reach the disk in the same batches).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        batch_size: int = 2000,
        flush_interval: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._conn = Connection(self.path, readonly=readonly, schema_version=SCHEMA_VERSION, migrations=_MIGRATIONS)
        self._writer = BatchWriter(self._conn, batch_size=batch_size, flush_interval=flush_interval)
        self._log = SqliteLog(self._conn, self._writer)
        self._state = SqliteState(self._conn, self._writer)
        self._outbox = SqliteOutbox(self._conn)
        self._subscriptions = SqliteSubscriptions(self._conn)
        self._runs = SqliteRuns(self._conn)

    # -- lifecycle

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> Store:
        """Connect, check the file is SQLite and writable, and migrate the schema."""
        await self._conn.open()
        if not self.readonly:
            self._writer.start(on_cancel=self.close)
        return self

    async def close(self) -> None:
        """Flush everything queued and close the connection. Safe to call twice."""
        if not self._conn.is_open:
            return
        try:
            await self._writer.stop()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{explain(self.path, exc)}: the last log rows could not be written") from None
        finally:
            await self._conn.close()

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection."""
        return self._conn.db

    async def flush(self) -> None:
        """Write every queued row and state change now; returns once they are committed.

        Flushes run one at a time: a flush that finds the queue empty while the
        writer task's flush is still in flight waits for it, so "flushed" means
        on disk.
        """
        await self._writer.flush()

    # -- log (queued: these run on the hot path, so each is one call to the concern)

    def log(self, row: LogRow) -> None:
        """Queue a log row (written by the writer task, in batches)."""
        self._log.log(row)

    def log_reaction(
        self,
        direction: str,
        persona: str | None,
        platform: str | None,
        text: str | Mapping[str, Any] | None,
        rule: str | None,
        seed: int | None,
        status: str,
        event: str,
        run: str | None,
        mission_time: float,
        key: str | None = None,
    ) -> None:
        """Queue an ``event`` row or the ``out`` row of an event reaction (see :meth:`SqliteLog.log_reaction`)."""
        self._log.log_reaction(direction, persona, platform, text, rule, seed, status, event, run, mission_time, key)

    def log_exchange(
        self,
        persona: str,
        platform: str,
        chat: str,
        user: str,
        user_name: str,
        text: str,
        status: str,
        mission_time: float,
        run: str | None,
        reply: tuple[str, str, int | None, float] | None = None,
    ) -> None:
        """Queue the ``in`` row of a message and, with ``reply = (text, rule, seed, latency_ms)``, its ``out`` row."""
        self._log.log_exchange(persona, platform, chat, user, user_name, text, status, mission_time, run, reply)

    async def query_log(
        self,
        *,
        persona: str | None = None,
        direction: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Interaction rows, oldest first (the last ``limit`` when given)."""
        return await self._log.query_log(persona=persona, direction=direction, since=since, limit=limit)

    # -- state

    def save_state(self, persona: str, scope: str, chat: str, data: Mapping[str, Any]) -> None:
        """Queue the latest state of ``persona`` (scope ``persona`` or ``chat``)."""
        self._state.save_state(persona, scope, chat, data)

    async def load_states(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """All saved state, keyed by (persona, scope, chat)."""
        return await self._state.load_states()

    # -- outbox

    async def outbox_add(self, items: Sequence[Mapping[str, Any] | OutboxRow]) -> None:
        """Insert messages to send, in one transaction; an existing idempotency ``key`` is left as is."""
        await self._outbox.outbox_add(items)

    async def outbox_pending(
        self, *, adapters: Sequence[str] | None = None, after_id: int = 0, limit: int = 500
    ) -> list[OutboxItem]:
        """Oldest pending messages first (of these adapters, with ``id > after_id``)."""
        return await self._outbox.outbox_pending(adapters=adapters, after_id=after_id, limit=limit)

    async def outbox_receipt(self, key: str) -> str | None:
        """What the platform answered for the message with idempotency ``key`` (``None``: not sent)."""
        return await self._outbox.outbox_receipt(key)

    async def outbox_mark(
        self, item_id: int, status: str, *, error: str | None = None, receipt: str | None = None
    ) -> None:
        """Record a delivery outcome (``sent``/``failed``) or a failed attempt (``pending``)."""
        await self._outbox.outbox_mark(item_id, status, error=error, receipt=receipt)

    async def outbox_mark_many(self, outcomes: Sequence[tuple[int, str, str | None, str | None]]) -> None:
        """Record several outcomes ``(id, status, error, receipt)`` in one transaction (group commit)."""
        await self._outbox.outbox_mark_many(outcomes)

    async def outbox_cancel(self, run: str, reason: str) -> int:
        """Mark every still-pending message of ``run`` failed with ``reason``; returns how many."""
        return await self._outbox.outbox_cancel(run, reason)

    async def outbox_counts(self, run: str | None = None) -> dict[str, int]:
        """Outbox rows per status (for one run, if given)."""
        return await self._outbox.outbox_counts(run)

    async def move_chat(self, adapter: str, old: str, new: str, pending: Sequence[int] = ()) -> None:
        """``old`` is now ``new`` (a group became a supergroup): move its subscription and these outbox rows."""
        await self._outbox.move_chat(adapter, old, new, pending)

    # -- subscriptions

    async def subscribe(self, adapter: str, chat: str, persona: str) -> bool:
        """Subscribe ``chat``; ``False`` if it already was."""
        return await self._subscriptions.subscribe(adapter, chat, persona)

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Unsubscribe ``chat``; ``False`` if it was not subscribed."""
        return await self._subscriptions.unsubscribe(adapter, chat)

    async def subscribers(self, adapter: str) -> list[str]:
        """Chats subscribed to ``adapter``'s broadcasts, oldest first."""
        return await self._subscriptions.subscribers(adapter)

    async def subscribe_many(self, adapter: str, chats: Iterable[str], persona: str) -> None:
        """Bulk subscribe (imports, tests, benchmarks)."""
        await self._subscriptions.subscribe_many(adapter, chats, persona)

    # -- runs

    async def replay_get(self, run: str) -> dict[str, Any] | None:
        """A replay run's record, or ``None``."""
        return await self._runs.replay_get(run)

    async def replay_start(
        self, run: str, timeline: str, options: Mapping[str, Any], *, timeline_hash: str | None = None
    ) -> None:
        """Record a new replay run (``timeline_hash``: what :func:`personae.app.replay.content_hash` gave)."""
        await self._runs.replay_start(run, timeline, options, timeline_hash=timeline_hash)

    async def replay_progress(self, run: str, position: str, status: str | None = None) -> None:
        """Record how far a replay got (the mission time of its last queued message); ``status`` if given."""
        await self._runs.replay_progress(run, position, status)
