"""The SQLite store: the embedded default behind :class:`~personae.storage.interface.Storage`.

:class:`Store` is a thin facade: each concern (interaction log, persona
state, outbox, subscriptions, runs) is a small class in
:mod:`personae.storage.sqlite`, all over one aiosqlite connection in WAL
mode, put together by :class:`~personae.storage.facade.Composite`. Log rows
and state changes are queued in memory and written in batches by a writer
task, so logging never limits throughput; :meth:`Store.close` flushes
everything that was queued. The outbox is written through at once, because
delivery guarantees depend on it.

The schema is listed here, one migration per version: a database file
records its version in ``PRAGMA user_version`` and is migrated on open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from .batching import BatchWriter
from .facade import Composite
from .records import IntakeEvent, IntakeRequest, IntakeStored, LogRow, OutboxItem, OutboxRow, StoreError, utcnow
from .sqlite.connection import Connection, explain
from .sqlite.intake import SqliteIntake
from .sqlite.log import SqliteLog
from .sqlite.outbox import SqliteOutbox
from .sqlite.runs import SqliteRuns
from .sqlite.state import SqliteState
from .sqlite.subscriptions import SqliteSubscriptions
from .sqlite.writer import SqliteSink

__all__ = [
    "SCHEMA_VERSION",
    "IntakeEvent",
    "IntakeRequest",
    "IntakeStored",
    "LogRow",
    "OutboxItem",
    "OutboxRow",
    "Store",
    "StoreError",
    "utcnow",
]

SCHEMA_VERSION = 6

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
    # Events posted to the HTTP intake: stored before the 202, played (their reactions in the
    # outbox) after it, so a crash in between plays them at the next start. An idempotency key or
    # a signature names a request once: a retry finds its row and gets the same id.
    4: """
    CREATE TABLE intake (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT UNIQUE,
        signature TEXT UNIQUE,
        fingerprint TEXT NOT NULL,
        event TEXT NOT NULL,
        persona TEXT,
        data TEXT NOT NULL,
        received TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'played')),
        played TEXT
    );
    CREATE INDEX intake_pending ON intake (status, seq);
    """,
    # The files a message carries (JSON: path, MIME type, alt text), so a resume sends them too.
    5: "ALTER TABLE outbox ADD COLUMN media TEXT;",
    # (persona, ts) cost ~15 % of every log write for its 30-byte keys, and could not give the
    # log's order: "persona = ? ORDER BY id DESC LIMIT n" sorted every row of the persona. An
    # index on persona alone holds (persona, id): smaller to keep up, and already in id order.
    6: """
    DROP INDEX IF EXISTS interactions_persona_ts;
    CREATE INDEX interactions_persona ON interactions (persona);
    """,
}


class Store(Composite):
    """Async SQLite store. Use ``async with Store(path) as store:``.

    The concern objects share one :class:`~personae.storage.sqlite.connection.Connection`
    (so :meth:`move_chat` changes two tables in one transaction) and one
    :class:`~personae.storage.batching.BatchWriter` (so log rows and state
    changes reach the disk in the same batches).
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
        self._writer = BatchWriter(SqliteSink(self._conn), batch_size=batch_size, flush_interval=flush_interval)
        super().__init__(
            log=SqliteLog(self._conn, self._writer),
            state=SqliteState(self._conn, self._writer),
            outbox=SqliteOutbox(self._conn),
            subscriptions=SqliteSubscriptions(self._conn),
            runs=SqliteRuns(self._conn),
        )
        #: The HTTP intake's queue (SQLite only for now: see README, "Events over HTTP").
        self.intake = SqliteIntake(self._conn, SCHEMA_VERSION)
        self.intake_add = self.intake.intake_add
        self.intake_pending = self.intake.intake_pending
        self.intake_played = self.intake.intake_played
        self.writable = self.intake.writable

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
