"""The PostgreSQL backend: the same concerns and contract as SQLite, on a server several processes can share.

Opened with a ``postgresql://`` URL (asyncpg). The tables mirror SQLite's,
times included (ISO 8601 text, so ``query_log(since=...)`` compares the same
way); ``personae_schema`` records the version, and migrations run under an
advisory lock so that several workers starting at once migrate once. Log rows
and state changes queue on the same :class:`~personae.storage.batching.BatchWriter`
as SQLite's; each batch is one transaction.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import asyncpg

from ..language.text import valid_unicode
from .batching import ROW_WIDTH, BatchWriter, LogQueue, States, json_text
from .facade import Composite
from .postgres_intake import MIGRATION as INTAKE_MIGRATION
from .postgres_intake import PgIntake
from .postgres_workers import PgCoordination
from .records import OUTBOX_FIELDS, OutboxItem, OutboxRow, StoreError, full_row, utcnow

SCHEMA_VERSION = 4

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE interactions (
        id BIGSERIAL PRIMARY KEY,
        ts TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out', 'event')),
        persona TEXT, platform TEXT, chat TEXT, "user" TEXT, user_name TEXT, text TEXT, rule TEXT,
        seed BIGINT, latency_ms DOUBLE PRECISION, status TEXT, event TEXT, run TEXT, mission_time TEXT, key TEXT
    );
    CREATE INDEX interactions_persona_ts ON interactions (persona, ts);
    CREATE UNIQUE INDEX interactions_key ON interactions (key) WHERE key IS NOT NULL;
    CREATE TABLE state (
        persona TEXT NOT NULL, scope TEXT NOT NULL, chat TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL, updated TEXT NOT NULL,
        PRIMARY KEY (persona, scope, chat)
    );
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        run TEXT, persona TEXT NOT NULL, adapter TEXT NOT NULL, chat TEXT NOT NULL, text TEXT NOT NULL,
        reply_to TEXT, event TEXT, rule TEXT, mission_time TEXT, created TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, sent_at TEXT, receipt TEXT
    );
    CREATE INDEX outbox_pending ON outbox (status, id);
    CREATE TABLE subscriptions (
        -- seq: subscription order (SQLite's rowid), kept when a chat moves
        seq BIGSERIAL, adapter TEXT NOT NULL, chat TEXT NOT NULL, persona TEXT NOT NULL, created TEXT NOT NULL,
        PRIMARY KEY (adapter, chat)
    );
    CREATE TABLE replays (
        run TEXT PRIMARY KEY, timeline TEXT NOT NULL, options TEXT NOT NULL, started TEXT NOT NULL,
        position TEXT, status TEXT NOT NULL DEFAULT 'running', timeline_hash TEXT
    );
    """,
    # The files a message carries (JSON: path, MIME type, alt text), so a resume sends them too.
    2: "ALTER TABLE outbox ADD COLUMN media TEXT;",
    # Several workers on one database: the process sending a row holds a lease on it (postgres_workers.py).
    3: """
    ALTER TABLE outbox ADD COLUMN lease_owner TEXT, ADD COLUMN lease_until TIMESTAMPTZ;
    CREATE INDEX outbox_chat_pending ON outbox (adapter, chat, id) WHERE status = 'pending';
    """,
    # Events posted over HTTP (postgres_intake.py), as SQLite's schema v4.
    4: INTAKE_MIGRATION,
}
#: Any number will do as long as it is the same for every worker: the key of the migration lock.
_MIGRATION_LOCK = 0x7065_7273_6F6E_6165 >> 1  # "personae", made to fit a signed bigint

_LOG_INSERT = (
    'INSERT INTO interactions (ts, direction, persona, platform, chat, "user", user_name, text, rule, seed,'
    " latency_ms, status, event, run, mission_time, key)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    " ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING"
)
_STATE_UPSERT = (
    "INSERT INTO state (persona, scope, chat, data, updated) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (persona, scope, chat) DO UPDATE SET data = excluded.data, updated = excluded.updated"
)
_LOG_COLS = (
    "id", "ts", "direction", "persona", "platform", "chat", "user", "user_name", "text", "rule", "seed",
    "latency_ms", "status", "event", "run", "mission_time",
)  # fmt: skip
#: ``$1, $2, …``: one parameter per outbox field, and the creation time.
_OUTBOX_PARAMS = ", ".join(f"${n}" for n in range(1, len(OUTBOX_FIELDS) + 2))
#: The outbox columns that are NOT NULL without a default.
_REQUIRED = frozenset({"key", "persona", "adapter", "chat", "text"})
_OUTBOX_COLS = (
    "id, key, run, persona, adapter, chat, text, reply_to, event, rule, mission_time, status, attempts, media"
)


def _iso(epoch: float | None) -> str | None:
    """Epoch seconds as the text SQLite's ``strftime`` gives (milliseconds, ``+00:00``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _clean(value: Any) -> Any:
    """A value PostgreSQL accepts: text without lone surrogates or NUL, a mapping as its JSON text."""
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, Mapping):
        # Compact, as SQLite's json_extract renders an object: the same text from either backend.
        return valid_unicode(json.dumps(dict(value), ensure_ascii=False, separators=(",", ":"), default=str))
    return value


def _rows(queued: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Queued log rows and exchanges as table rows, in order."""
    out: list[tuple[Any, ...]] = []
    for r in queued:
        if len(r) == ROW_WIDTH:
            out.append((_iso(r[0]), *map(_clean, r[1:14]), _iso(r[14]), r[15]))
            continue
        ts, persona, platform, chat, user, user_name, in_text, status, mt, run = map(_clean, r[:10])
        out.append((_iso(ts), "in", persona, platform, chat, user, user_name, in_text, None, None, None, status,
                    None, run, _iso(mt), None))  # fmt: skip
        if len(r) > 10:
            text, rule, seed, latency = map(_clean, r[10:])
            out.append((_iso(ts), "out", persona, platform, chat, user, None, text, rule, seed, latency, "ok",
                        None, run, _iso(mt), None))  # fmt: skip
    return out


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class PgConnection:
    """A pool of connections to one database; every concern reads and writes through it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        #: This process in the database: its ``application_name`` (``pg_stat_activity`` shows
        #: which worker holds what) and the owner of the outbox rows it leases.
        self.owner = f"personae:{socket.gethostname()[:24]}:{os.getpid()}:{secrets.token_hex(3)}"

    @property
    def pool(self) -> asyncpg.Pool:
        """The open pool."""
        if self._pool is None:
            raise StoreError(f"{_redacted(self.url)}: store is not open")
        return self._pool

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` has not run."""
        return self._pool is not None

    async def open(self) -> None:
        """Connect and migrate the schema (once, whoever else is starting)."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=4, server_settings={"application_name": self.owner}
            )
            async with self.pool.acquire() as con, con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await con.execute("CREATE TABLE IF NOT EXISTS personae_schema (version INTEGER NOT NULL)")
                version = await con.fetchval("SELECT max(version) FROM personae_schema") or 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{_redacted(self.url)}: database schema v{version} is newer than this personae"
                        f" (v{SCHEMA_VERSION})"
                    )
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    await con.execute(_MIGRATIONS[target])
                    await con.execute("INSERT INTO personae_schema (version) VALUES ($1)", target)
        except StoreError:
            await self.close()
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise StoreError(f"{_redacted(self.url)}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None

    async def close(self) -> None:
        """Close every connection of the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def write_batch(self, rows: list[tuple[Any, ...]], states: States) -> None:
        """The writer's sink: queued log rows and state changes, in one transaction."""
        now = utcnow()
        async with self.pool.acquire() as con, con.transaction():
            if rows:
                await con.executemany(_LOG_INSERT, _rows(rows))
            if states:
                await con.executemany(_STATE_UPSERT, [(p, s, c, d, now) for (p, s, c), d in states.items()])


class PgLog(LogQueue):
    """:class:`~personae.storage.interface.LogStore` over the ``interactions`` table."""

    def __init__(self, conn: PgConnection, writer: BatchWriter) -> None:
        super().__init__(writer)
        self._conn = conn

    async def query_log(
        self,
        *,
        persona: str | None = None,
        direction: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Interaction rows, oldest first (the last ``limit`` when given)."""
        await self.flush()
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("persona", persona), ("direction", direction)):
            if value:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if since:
            args.append(since)
            where.append(f"ts >= ${len(args)}")
        columns = ", ".join('"user"' if c == "user" else c for c in _LOG_COLS)
        sql = f"SELECT {columns} FROM interactions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        found = await self._conn.pool.fetch(sql, *args)
        return [dict(zip(_LOG_COLS, r, strict=True)) for r in reversed(found)]


class PgState:
    """:class:`~personae.storage.interface.StateStore` over the ``state`` table."""

    def __init__(self, conn: PgConnection, writer: BatchWriter) -> None:
        self._conn = conn
        self._writer = writer

    def save_state(self, persona: str, scope: str, chat: str, data: Mapping[str, Any]) -> None:
        """Queue the latest state of ``persona`` (scope ``persona`` or ``chat``)."""
        self._writer.states[(persona, scope, chat)] = json_text(dict(data))

    async def load_states(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """All saved state, keyed by (persona, scope, chat)."""
        await self._writer.flush()
        rows = await self._conn.pool.fetch("SELECT persona, scope, chat, data FROM state")
        return {(p, s, c): json.loads(d) for p, s, c, d in rows}


class PgOutbox:
    """:class:`~personae.storage.interface.Outbox` over the ``outbox`` table."""

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    async def outbox_add(self, items: Sequence[Mapping[str, Any] | OutboxRow]) -> None:
        """Insert messages to send, in one transaction; an existing idempotency ``key`` is left as is."""
        if not items:
            return
        rows = []
        for i in items:
            row = full_row(i) if isinstance(i, tuple) else tuple(i.get(f) for f in OUTBOX_FIELDS)
            missing = [f for f, v in zip(OUTBOX_FIELDS, row, strict=True) if v is None and f in _REQUIRED]
            if missing:
                raise ValueError(f"outbox row without {', '.join(missing)}: {i!r}")
            rows.append(tuple(map(_clean, row)))
        now = utcnow()
        columns = ", ".join(OUTBOX_FIELDS)
        async with self._conn.pool.acquire() as con, con.transaction():
            await con.executemany(
                f"INSERT INTO outbox ({columns}, created) VALUES ({_OUTBOX_PARAMS}) ON CONFLICT (key) DO NOTHING",
                [(*r, now) for r in rows],
            )

    async def outbox_pending(
        self, *, adapters: Sequence[str] | None = None, after_id: int = 0, limit: int = 500
    ) -> list[OutboxItem]:
        """Oldest pending messages first (of these adapters, with ``id > after_id``)."""
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE status = 'pending' AND id > $1"
        args: list[Any] = [after_id]
        if adapters is not None:
            args.append(list(adapters))
            sql += " AND adapter = ANY($2::text[])"
        args.append(limit)
        rows = await self._conn.pool.fetch(sql + f" ORDER BY id LIMIT ${len(args)}", *args)
        return [OutboxItem(*r) for r in rows]

    async def outbox_receipt(self, key: str) -> str | None:
        """What the platform answered for the message with idempotency ``key`` (``None``: not sent)."""
        found: str | None = await self._conn.pool.fetchval(
            "SELECT receipt FROM outbox WHERE key = $1 AND status = 'sent'", key
        )
        return found

    async def outbox_mark(
        self, item_id: int, status: str, *, error: str | None = None, receipt: str | None = None
    ) -> None:
        """Record a delivery outcome (``sent``/``failed``) or a failed attempt (``pending``)."""
        await self.outbox_mark_many([(item_id, status, error, receipt)])

    async def outbox_mark_many(self, outcomes: Sequence[tuple[int, str, str | None, str | None]]) -> None:
        """Record several outcomes ``(id, status, error, receipt)`` in one transaction, folded per row in order."""
        folded: dict[int, list[Any]] = {}
        for item_id, status, error, receipt in outcomes:
            seen = folded.get(item_id)
            if seen is None:
                folded[item_id] = [item_id, status, _clean(error), receipt, 1]
            else:
                seen[1:4] = [status, _clean(error), receipt or seen[3]]
                seen[4] += 1
        now = utcnow()
        async with self._conn.pool.acquire() as con, con.transaction():
            await con.executemany(
                "UPDATE outbox SET status = $2, attempts = attempts + $5, last_error = $3,"
                " receipt = COALESCE($4, receipt), sent_at = CASE WHEN $2 = 'sent' THEN $6 ELSE sent_at END"
                " WHERE id = $1",
                [(*f, now) for f in folded.values()],
            )

    async def outbox_cancel(self, run: str, reason: str) -> int:
        """Mark every still-pending message of ``run`` failed with ``reason``; returns how many."""
        cancelled = await self._conn.pool.fetch(
            "UPDATE outbox SET status = 'failed', last_error = $1 WHERE run = $2 AND status = 'pending' RETURNING id",
            _clean(reason),
            run,
        )
        return len(cancelled)

    async def outbox_counts(self, run: str | None = None) -> dict[str, int]:
        """Outbox rows per status (for one run, if given)."""
        if run is None:
            rows = await self._conn.pool.fetch("SELECT status, count(*) FROM outbox GROUP BY status")
        else:
            rows = await self._conn.pool.fetch(
                "SELECT status, count(*) FROM outbox WHERE run = $1 GROUP BY status", run
            )
        return {s: n for s, n in rows}

    async def move_chat(self, adapter: str, old: str, new: str, pending: Sequence[int] = ()) -> None:
        """``old`` is now ``new`` (a group became a supergroup): move its subscription and these outbox rows."""
        async with self._conn.pool.acquire() as con, con.transaction():
            await con.execute(
                "UPDATE subscriptions SET chat = $3 WHERE adapter = $1 AND chat = $2"
                " AND NOT EXISTS (SELECT 1 FROM subscriptions WHERE adapter = $1 AND chat = $3)",
                adapter,
                old,
                new,
            )
            await con.execute("DELETE FROM subscriptions WHERE adapter = $1 AND chat = $2", adapter, old)
            await con.execute("UPDATE outbox SET chat = $1 WHERE id = ANY($2::bigint[])", new, list(pending))


class PgSubscriptions:
    """:class:`~personae.storage.interface.Subscriptions` over the ``subscriptions`` table."""

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    async def subscribe(self, adapter: str, chat: str, persona: str) -> bool:
        """Subscribe ``chat``; ``False`` if it already was."""
        added = await self._conn.pool.fetch(
            "INSERT INTO subscriptions (adapter, chat, persona, created) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING RETURNING chat",
            adapter,
            chat,
            persona,
            utcnow(),
        )
        return bool(added)

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Unsubscribe ``chat``; ``False`` if it was not subscribed."""
        gone = await self._conn.pool.fetch(
            "DELETE FROM subscriptions WHERE adapter = $1 AND chat = $2 RETURNING chat", adapter, chat
        )
        return bool(gone)

    async def subscribers(self, adapter: str) -> list[str]:
        """Chats subscribed to ``adapter``'s broadcasts, oldest first."""
        rows = await self._conn.pool.fetch(
            "SELECT chat FROM subscriptions WHERE adapter = $1 ORDER BY created, seq", adapter
        )
        return [r[0] for r in rows]

    async def subscribe_many(self, adapter: str, chats: Iterable[str], persona: str) -> None:
        """Bulk subscribe (imports, tests, benchmarks)."""
        now = utcnow()
        async with self._conn.pool.acquire() as con, con.transaction():
            await con.executemany(
                "INSERT INTO subscriptions (adapter, chat, persona, created) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT DO NOTHING",
                [(adapter, c, persona, now) for c in chats],
            )


class PgRuns:
    """:class:`~personae.storage.interface.Runs` over the ``replays`` table."""

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    async def replay_get(self, run: str) -> dict[str, Any] | None:
        """A replay run's record, or ``None``."""
        row = await self._conn.pool.fetchrow(
            "SELECT run, timeline, options, started, position, status, timeline_hash FROM replays WHERE run = $1", run
        )
        if row is None:
            return None
        return {**dict(row.items()), "options": json.loads(row["options"])}

    async def replay_start(
        self, run: str, timeline: str, options: Mapping[str, Any], *, timeline_hash: str | None = None
    ) -> None:
        """Record a new replay run."""
        await self._conn.pool.execute(
            "INSERT INTO replays (run, timeline, options, started, timeline_hash) VALUES ($1, $2, $3, $4, $5)",
            run,
            timeline,
            json.dumps(dict(options), default=str),
            utcnow(),
            timeline_hash,
        )

    async def replay_progress(self, run: str, position: str, status: str | None = None) -> None:
        """Record how far a replay got; ``status`` if given."""
        await self._conn.pool.execute(
            "UPDATE replays SET position = $1, status = COALESCE($2, status) WHERE run = $3", position, status, run
        )


class PostgresStore(Composite):
    """Async PostgreSQL store. Use ``async with PostgresStore("postgresql://…") as store:``."""

    def __init__(self, url: str, *, batch_size: int = 2000, flush_interval: float = 0.05) -> None:
        self.url = url
        self._conn = PgConnection(url)
        self._writer = BatchWriter(self._conn.write_batch, batch_size=batch_size, flush_interval=flush_interval)
        super().__init__(
            log=PgLog(self._conn, self._writer),
            state=PgState(self._conn, self._writer),
            outbox=PgOutbox(self._conn),
            subscriptions=PgSubscriptions(self._conn),
            runs=PgRuns(self._conn),
            coordination=PgCoordination(url, lambda: self._conn.pool, self._conn.owner, _OUTBOX_COLS),
            intake=PgIntake(lambda: self._conn.pool),
        )

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> Self:
        """Connect and migrate the schema."""
        await self._conn.open()
        self._writer.start(on_cancel=self.close)
        return self

    async def close(self) -> None:
        """Flush everything queued and close the connections. Safe to call twice."""
        if not self._conn.is_open:
            return
        try:
            await self._writer.stop()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"{_redacted(self.url)}: the last log rows could not be written: {exc}") from None
        finally:
            await self._conn.close()
