"""The SQLite store: interaction log, persona state, outbox, subscriptions, replays.

One aiosqlite connection in WAL mode, in autocommit mode: a single statement
is its own transaction (one thread hop), batches take an explicit one. Log
rows and state changes are queued in memory and written in batches by a
writer task, so logging never limits throughput; :meth:`Store.close` flushes
everything that was queued. The outbox is written through at once, because
delivery guarantees depend on it.

Every cursor is created and dropped on aiosqlite's worker thread
(``execute_fetchall``, or an explicit ``close``): a cursor finalised on the
event loop's thread while the worker runs a statement is API misuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger("personae.storage.store")

SCHEMA_VERSION = 4

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
}


class StoreError(Exception):
    """The database cannot be used (not SQLite, read-only, unreachable)."""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One row of the interaction log."""

    direction: str
    persona: str | None = None
    platform: str | None = None
    chat: str | None = None
    user: str | None = None
    user_name: str | None = None
    text: str | None = None
    rule: str | None = None
    seed: int | None = None
    latency_ms: float | None = None
    status: str | None = None
    event: str | None = None
    run: str | None = None
    mission_time: datetime | None = None
    ts: datetime | None = None
    #: Identity of a row that may be logged again (a resumed replay): written once, later copies ignored.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message waiting in (or delivered from) the outbox."""

    id: int
    key: str
    run: str | None
    persona: str
    adapter: str
    chat: str
    text: str
    reply_to: str | None
    event: str | None
    rule: str | None
    mission_time: str | None
    status: str
    attempts: int


_ISO = "'%Y-%m-%dT%H:%M:%f+00:00'"
_LOG_COLUMNS = (
    "ts", "direction", "persona", "platform", "chat", "user", "user_name", "text", "rule",
    "seed", "latency_ms", "status", "event", "run", "mission_time", "key",
)  # fmt: skip


def _unpack(param: str, fields: Sequence[str], times: Sequence[str] = ()) -> str:
    """A ``WITH`` clause giving a table ``rows(k, <fields>)`` from a JSON array of arrays.

    Rows travel as one JSON parameter per batch: SQLite unpacks it in C with
    the GIL released, where binding thousands of parameters one by one would
    hold the GIL on the writer thread. Each element's text is materialized
    once (``raw``): ``json_each`` renders an element anew every time its
    ``value`` is read, so reading it once per field cost a third of every
    insert. Times travel as epoch seconds and become ISO 8601 text here.
    """
    columns = ", ".join(
        f"strftime({_ISO}, json_extract(v, '$[{i}]'), 'unixepoch') AS {name}"
        if name in times
        else f"json_extract(v, '$[{i}]') AS {name}"
        for i, name in enumerate(fields)
    )
    return (
        f"WITH raw(k, v) AS MATERIALIZED (SELECT key, value FROM json_each({param})),"
        f" rows AS (SELECT k, {columns} FROM raw) "
    )


_LOG_JSON_SQL = (
    _unpack("?", _LOG_COLUMNS, ("ts", "mission_time"))
    + f"INSERT INTO interactions ({', '.join(_LOG_COLUMNS)}) SELECT {', '.join(_LOG_COLUMNS)} FROM rows WHERE true"
    # A keyed row already logged (by the run before a kill) is not logged twice. Only a key
    # conflict is ignored: a row breaking another constraint still fails the batch.
    " ORDER BY k ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING"
)
# A message and its reply travel as one 14-field "exchange" and become two rows here:
# each field is extracted once, not once per row (a third of the writer's work).
_EXCHANGE_FIELDS = (
    "ts", "persona", "platform", "chat", "user", "user_name", "in_text", "status", "mt", "run",
    "out_text", "rule", "seed", "latency",
)  # fmt: skip
_EXCHANGE_SQL = (
    _unpack("?", _EXCHANGE_FIELDS, ("ts", "mt")) + f"INSERT INTO interactions ({', '.join(_LOG_COLUMNS)}) "
    "SELECT ts, CASE d.o WHEN 0 THEN 'in' ELSE 'out' END, persona, platform, chat, user,"
    " CASE d.o WHEN 0 THEN user_name END, CASE d.o WHEN 0 THEN in_text ELSE out_text END,"
    " CASE d.o WHEN 1 THEN rule END, CASE d.o WHEN 1 THEN seed END, CASE d.o WHEN 1 THEN latency END,"
    " CASE d.o WHEN 0 THEN status ELSE 'ok' END, NULL, run, mt, NULL "
    "FROM rows, (SELECT 0 AS o UNION ALL SELECT 1) AS d WHERE d.o = 0 OR out_text IS NOT NULL ORDER BY k, d.o"
)
_OUTBOX_FIELDS = ("key", "run", "persona", "adapter", "chat", "text", "reply_to", "event", "rule", "mission_time")
#: A message for :meth:`Store.outbox_add`, in ``_OUTBOX_FIELDS`` order:
#: ``(key, run, persona, adapter, chat, text, reply_to, event, rule, mission_time)``.
OutboxRow = tuple[str, str | None, str, str, str, str, str | None, str | None, str | None, str | None]
_OUTBOX_ADD_SQL = (
    _unpack("?2", _OUTBOX_FIELDS) + f"INSERT OR IGNORE INTO outbox ({', '.join(_OUTBOX_FIELDS)}, created)"
    f" SELECT {', '.join(_OUTBOX_FIELDS)}, ?1 FROM rows ORDER BY k"
)
_OUTBOX_MARK_SQL = (
    _unpack("?2", ("id", "status", "error", "receipt", "n"))
    + "UPDATE outbox SET status = m.status, attempts = attempts + m.n, last_error = m.error,"
    " receipt = COALESCE(m.receipt, outbox.receipt),"
    " sent_at = CASE WHEN m.status = 'sent' THEN ?1 ELSE outbox.sent_at END"
    " FROM rows AS m WHERE outbox.id = m.id"
)
_INTAKE_FIELDS = ("id", "idempotency_key", "signature", "fingerprint", "event", "persona", "data")
_INTAKE_ADD_SQL = (
    _unpack("?2", _INTAKE_FIELDS) + f"INSERT INTO intake ({', '.join(_INTAKE_FIELDS)}, received)"
    f" SELECT {', '.join(_INTAKE_FIELDS)}, ?1 FROM rows WHERE true ORDER BY k ON CONFLICT DO NOTHING RETURNING id"
)
_ROW_WIDTH = 16  # a single row; anything shorter is an exchange (10 fields, or 14 with its reply)


def _json(value: Any) -> str:
    """JSON text SQLite will accept: a lone surrogate (invalid UTF-8) becomes U+FFFD."""
    from ..language.text import valid_unicode

    return valid_unicode(json.dumps(value, ensure_ascii=False, default=str))


def _width(row: tuple[Any, ...]) -> int:
    return _ROW_WIDTH if len(row) == _ROW_WIDTH else 0


_STATE_SQL = (
    "INSERT INTO state (persona, scope, chat, data, updated) VALUES (?,?,?,?,?)"
    " ON CONFLICT (persona, scope, chat) DO UPDATE SET data = excluded.data, updated = excluded.updated"
)
_LOG_COLS = (
    "id",
    "ts",
    "direction",
    "persona",
    "platform",
    "chat",
    "user",
    "user_name",
    "text",
    "rule",
    "seed",
    "latency_ms",
    "status",
    "event",
    "run",
    "mission_time",
)
_OUTBOX_COLS = "id, key, run, persona, adapter, chat, text, reply_to, event, rule, mission_time, status, attempts"


def _outbox_row(item: Mapping[str, Any]) -> tuple[Any, ...]:
    missing = [f for f in ("key", "persona", "adapter", "chat", "text") if item.get(f) is None]
    if missing:
        # The columns are NOT NULL and the insert is OR IGNORE: the row would vanish silently.
        raise ValueError(f"outbox row without {', '.join(missing)}: {dict(item)!r}")
    return tuple(item.get(f) for f in _OUTBOX_FIELDS)


def _by_id(item: OutboxItem) -> int:
    return item.id


def utcnow() -> str:
    """Current UTC time as ISO 8601 text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Store:
    """Async SQLite store. Use ``async with Store(path) as store:``."""

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
        self._db: aiosqlite.Connection | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._states: dict[tuple[str, str, str], str] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()
        self._flushing = asyncio.Lock()

    # -- lifecycle

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> Store:
        """Connect, check the file is SQLite and writable, and migrate the schema."""
        try:
            if self.path.is_dir():
                raise StoreError(f"{self.path}: is a folder, not a database file")
            if self.readonly and not self.path.exists():
                raise StoreError(f"{self.path}: no such database")
            if not self.readonly and not self.path.parent.exists():
                raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        except OSError as exc:
            raise StoreError(f"{self.path}: {exc.strerror or exc}") from None
        try:
            target, uri = await asyncio.to_thread(self._probe)
            self._db = await aiosqlite.connect(target, uri=uri, isolation_level=None)
            await self._db.execute_fetchall("PRAGMA busy_timeout = 5000")
            version = next(iter(await self._db.execute_fetchall("PRAGMA user_version")))[0]
            await self._db.execute_fetchall("SELECT count(*) FROM sqlite_master")
            if not self.readonly:
                await self._db.execute_fetchall("PRAGMA journal_mode = WAL")
                await self._db.execute_fetchall("PRAGMA synchronous = NORMAL")
                await self._migrate(int(version))
                # A read-only file opens and reads fine; find out now, not at the first log write.
                await self._db.execute_fetchall(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema v{version} is newer than this personae (v{SCHEMA_VERSION})"
                )
        except sqlite3.DatabaseError as exc:
            await self._abort()
            raise StoreError(_explain(self.path, exc)) from None
        except (OSError, ValueError) as exc:  # ValueError: a path SQLite cannot take (surrogates, NUL)
            await self._abort()
            raise StoreError(f"{self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        except BaseException:
            # aiosqlite's worker is a non-daemon thread: a connection left open
            # here would keep the interpreter from ever exiting.
            await self._abort()
            raise
        if not self.readonly:
            self._writer = asyncio.create_task(self._write_loop(), name="personae-store-writer")
        return self

    def _probe(self) -> tuple[str, bool]:
        """Find how to open the file (path or URI), with a plain connection, before aiosqlite does.

        aiosqlite cannot fail to connect cleanly: its worker thread then reports
        to an event loop that may be closed by the time it does, and prints a
        traceback. Connection errors are raised here instead.

        Read-only: ``mode=ro`` sees what a running bot writes, but on a WAL
        database it needs to create the ``-shm`` file next to it; where the
        folder is not writable either, ``immutable=1`` reads the file as it is.
        """
        if not self.readonly:
            sqlite3.connect(self.path).close()
            return str(self.path), False
        quoted = urllib.parse.quote(str(self.path.resolve()))
        last: sqlite3.Error | None = None
        for uri in (f"file:{quoted}?mode=ro", f"file:{quoted}?immutable=1"):
            try:
                con = sqlite3.connect(uri, uri=True)
                try:
                    con.execute("SELECT count(*) FROM sqlite_master").fetchall()
                finally:
                    con.close()
            except sqlite3.OperationalError as exc:
                last = exc
                continue
            return uri, True
        assert last is not None
        raise last

    async def _abort(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
            self._db = None

    async def _migrate(self, version: int) -> None:
        assert self._db is not None
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema v{version} is newer than this personae (v{SCHEMA_VERSION})")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            cur = await self._db.executescript(
                "BEGIN;\n" + _MIGRATIONS[target] + f"\nPRAGMA user_version = {target};\nCOMMIT;"
            )
            await cur.close()

    async def close(self) -> None:
        """Flush everything queued and close the connection. Safe to call twice."""
        if self._db is None:
            return
        self._closing = True
        try:
            if self._writer is not None:
                self._wake.set()
                await asyncio.shield(self._writer)
                self._writer = None
            await self.flush()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{_explain(self.path, exc)}: the last log rows could not be written") from None
        finally:
            # Closed whatever happened: aiosqlite's worker thread would keep the process alive.
            db, self._db = self._db, None
            with contextlib.suppress(Exception):
                await db.close()

    async def _write(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One write statement, committed on its own (use RETURNING to learn what changed)."""
        async with self._lock:
            return list(await self.db.execute_fetchall(sql, args))

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return list(await self.db.execute_fetchall(sql, args))

    async def _batch(self, *statements: tuple[str, Sequence[Sequence[Any]]]) -> None:
        """Several ``executemany`` in one transaction."""
        async with self._lock:
            db = self.db
            await db.execute_fetchall("BEGIN")
            try:
                for sql, rows in statements:
                    cur = await db.executemany(sql, rows)
                    await cur.close()
                await db.execute_fetchall("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute_fetchall("ROLLBACK")
                raise

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection."""
        if self._db is None:
            raise StoreError(f"{self.path}: store is not open")
        return self._db

    # -- batched writes

    def log(self, row: LogRow) -> None:
        """Queue a log row (written by the writer task, in batches)."""
        self._rows.append(
            (
                row.ts.timestamp() if row.ts else time.time(),
                row.direction,
                row.persona,
                row.platform,
                row.chat,
                row.user,
                row.user_name,
                row.text,
                row.rule,
                row.seed,
                row.latency_ms,
                row.status,
                row.event,
                row.run,
                row.mission_time.timestamp() if row.mission_time else None,
                row.key,
            )
        )
        if len(self._rows) >= self.batch_size:
            self._wake.set()

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
        """Queue an ``event`` row or the ``out`` row of an event reaction, without a :class:`LogRow`.

        Same row as :meth:`log`; this runs once or twice per replayed event.
        ``mission_time`` is in epoch seconds. A mapping as ``text`` (an
        event's data) is stored as its JSON text. A row with a ``key`` is
        written once: logging it again (a resumed replay) changes nothing.
        """
        self._rows.append(
            (time.time(), direction, persona, platform, None, None, None, text, rule, seed, None, status, event, run,
             mission_time, key)
        )  # fmt: skip
        if len(self._rows) >= self.batch_size:
            self._wake.set()

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
        """Queue the ``in`` row of a message and, with ``reply = (text, rule, seed, latency_ms)``, its ``out`` row.

        The same rows as two :meth:`log` calls, built without the
        intermediate :class:`LogRow`s: this runs once per message on the hot path.
        ``mission_time`` is in epoch seconds.
        """
        exchange: tuple[Any, ...]
        if reply is None:
            exchange = (time.time(), persona, platform, chat, user, user_name, text, status, mission_time, run)
        else:
            exchange = (time.time(), persona, platform, chat, user, user_name, text, status, mission_time, run, *reply)
        rows = self._rows
        rows.append(exchange)
        if len(rows) >= self.batch_size:
            self._wake.set()

    def save_state(self, persona: str, scope: str, chat: str, data: Mapping[str, Any]) -> None:
        """Queue the latest state of ``persona`` (scope ``persona`` or ``chat``)."""
        self._states[(persona, scope, chat)] = _json(dict(data))

    async def _write_loop(self) -> None:
        try:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._wake.clear()
                try:
                    await self.flush()
                except Exception as exc:
                    # Keep the writer alive; the rows stay queued and are retried next tick.
                    log.error("could not write the log: %s", exc)
                    await asyncio.sleep(self.flush_interval)
        except asyncio.CancelledError:
            if not self._closing:
                # Cancelled by the event loop shutting down (``asyncio.run`` after an
                # error left the store open): write what is queued and close, or the
                # connection's non-daemon thread keeps the process alive for ever.
                self._writer = None
                with contextlib.suppress(Exception):
                    await self.close()
            raise

    async def flush(self) -> None:
        """Write every queued row and state change now; returns once they are committed.

        Flushes run one at a time: a flush that finds the queue empty while the
        writer task's flush is still in flight waits for it, so "flushed" means
        on disk.
        """
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        if not self._rows and not self._states:
            return
        rows, self._rows = self._rows, []
        states, self._states = self._states, {}
        now = utcnow()
        try:
            # One JSON parameter per run of same-shaped rows: SQLite unpacks it in C with the
            # GIL released, so the writer thread does not compete with the event loop row by row.
            statements: list[tuple[str, Sequence[Sequence[Any]]]] = [
                (_LOG_JSON_SQL if width == _ROW_WIDTH else _EXCHANGE_SQL, [(_json(list(run)),)])
                for width, run in itertools.groupby(rows, key=_width)
            ]
            if states:
                statements.append((_STATE_SQL, [(p, s, c, data, now) for (p, s, c), data in states.items()]))
            if len(statements) == 1 and not states:
                # One statement is its own transaction: a single trip to the worker thread.
                await self._write(statements[0][0], statements[0][1][0])
            elif statements:
                await self._batch(*statements)
        except Exception:
            # Nothing was committed (one statement, or one transaction): queue it all again.
            self._rows[:0] = rows
            for k, v in states.items():
                self._states.setdefault(k, v)
            raise

    # -- state

    async def load_states(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """All saved state, keyed by (persona, scope, chat)."""
        await self.flush()
        rows = await self._read("SELECT persona, scope, chat, data FROM state")
        return {(p, s, c): json.loads(d) for p, s, c, d in rows}

    # -- log queries

    async def query_log(
        self,
        *,
        persona: str | None = None,
        direction: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Interaction rows, oldest first (the last ``limit`` when given)."""
        await self.flush() if not self.readonly else None
        where: list[str] = []
        args: list[Any] = []
        if persona:
            where.append("persona = ?")
            args.append(persona)
        if direction:
            where.append("direction = ?")
            args.append(direction)
        if since:
            where.append("ts >= ?")
            args.append(since)
        sql = "SELECT * FROM interactions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        try:
            found = await self._read(sql.replace("SELECT *", f"SELECT {', '.join(_LOG_COLS)}"), args)
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain(self.path, exc)) from None
        rows = [dict(zip(_LOG_COLS, r, strict=True)) for r in found]
        rows.reverse()
        return rows

    # -- outbox

    async def outbox_add(self, items: Sequence[Mapping[str, Any] | OutboxRow]) -> None:
        """Insert messages to send, in one transaction; an existing idempotency ``key`` is left as is.

        Each item is a mapping with the :data:`OutboxRow` field names (``run``,
        ``reply_to``, ``event``, ``rule`` and ``mission_time`` optional), or
        an :data:`OutboxRow` tuple.
        """
        if not items:
            return
        rows = [i if isinstance(i, tuple) else _outbox_row(i) for i in items]
        await self._write(_OUTBOX_ADD_SQL, (utcnow(), _json(rows)))

    async def outbox_pending(
        self, *, adapters: Sequence[str] | None = None, after_id: int = 0, limit: int = 500
    ) -> list[OutboxItem]:
        """Oldest pending messages first (of these adapters, with ``id > after_id``)."""
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE status = 'pending' AND id > ?"
        args: list[Any] = [after_id]
        if adapters is not None:
            sql += f" AND adapter IN ({','.join('?' * len(adapters))})"
            args.extend(adapters)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        # The rows come back as one JSON value, one step of the statement: fetching
        # 2,000 rows one by one made the writer thread take the GIL 2,000 times,
        # and each time the event loop stalled waiting to get it back.
        packed = await self._read(f"SELECT json_group_array(json_array({_OUTBOX_COLS})) FROM ({sql})", args)
        items = [OutboxItem(*r) for r in json.loads(packed[0][0])]
        items.sort(key=_by_id)  # aggregate order is SQLite's choice, not a promise
        return items

    async def outbox_receipt(self, key: str) -> str | None:
        """What the platform answered for the message with idempotency ``key`` (``None``: not sent)."""
        rows = await self._read("SELECT receipt FROM outbox WHERE key = ? AND status = 'sent'", (key,))
        return rows[0][0] if rows else None

    async def outbox_mark(
        self, item_id: int, status: str, *, error: str | None = None, receipt: str | None = None
    ) -> None:
        """Record a delivery outcome (``sent``/``failed``) or a failed attempt (``pending``)."""
        await self.outbox_mark_many([(item_id, status, error, receipt)])

    async def outbox_mark_many(self, outcomes: Sequence[tuple[int, str, str | None, str | None]]) -> None:
        """Record several outcomes ``(id, status, error, receipt)`` in one transaction (group commit).

        Outcomes for the same row (a failed attempt, then its retry) are
        folded in order: the last status and error, the last receipt, one
        attempt each.
        """
        folded: dict[int, list[Any]] = {}
        for item_id, status, error, receipt in outcomes:
            seen = folded.get(item_id)
            if seen is None:
                folded[item_id] = [item_id, status, error, receipt, 1]
            else:
                seen[1:4] = [status, error, receipt or seen[3]]
                seen[4] += 1
        await self._write(_OUTBOX_MARK_SQL, (utcnow(), _json(list(folded.values()))))

    async def outbox_cancel(self, run: str, reason: str) -> int:
        """Mark every still-pending message of ``run`` failed with ``reason``; returns how many."""
        cancelled = await self._write(
            "UPDATE outbox SET status = 'failed', last_error = ? WHERE run = ? AND status = 'pending' RETURNING id",
            (reason, run),
        )
        return len(cancelled)

    async def outbox_counts(self, run: str | None = None) -> dict[str, int]:
        """Outbox rows per status (for one run, if given)."""
        sql = "SELECT status, count(*) FROM outbox"
        args: list[Any] = []
        if run is not None:
            sql += " WHERE run = ?"
            args.append(run)
        return {s: n for s, n in await self._read(sql + " GROUP BY status", args)}

    # -- subscriptions

    async def subscribe(self, adapter: str, chat: str, persona: str) -> bool:
        """Subscribe ``chat``; ``False`` if it already was."""
        added = await self._write(
            "INSERT OR IGNORE INTO subscriptions (adapter, chat, persona, created) VALUES (?,?,?,?) RETURNING chat",
            (adapter, chat, persona, utcnow()),
        )
        return bool(added)

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Unsubscribe ``chat``; ``False`` if it was not subscribed."""
        gone = await self._write(
            "DELETE FROM subscriptions WHERE adapter = ? AND chat = ? RETURNING chat", (adapter, chat)
        )
        return bool(gone)

    async def move_chat(self, adapter: str, old: str, new: str, pending: Sequence[int] = ()) -> None:
        """``old`` is now ``new`` (a group became a supergroup): move its subscription and these outbox rows."""
        await self._batch(
            (
                "UPDATE OR IGNORE subscriptions SET chat = ? WHERE adapter = ? AND chat = ?",
                [(new, adapter, old)],
            ),
            ("DELETE FROM subscriptions WHERE adapter = ? AND chat = ?", [(adapter, old)]),
            ("UPDATE outbox SET chat = ? WHERE id = ?", [(new, i) for i in pending]),
        )

    async def subscribers(self, adapter: str) -> list[str]:
        """Chats subscribed to ``adapter``'s broadcasts, oldest first."""
        rows = await self._read("SELECT chat FROM subscriptions WHERE adapter = ? ORDER BY created, rowid", (adapter,))
        return [r[0] for r in rows]

    async def subscribe_many(self, adapter: str, chats: Iterable[str], persona: str) -> None:
        """Bulk subscribe (imports, tests, benchmarks)."""
        now = utcnow()
        await self._batch(
            (
                "INSERT OR IGNORE INTO subscriptions (adapter, chat, persona, created) VALUES (?,?,?,?)",
                [(adapter, c, persona, now) for c in chats],
            )
        )

    # -- replays

    async def replay_get(self, run: str) -> dict[str, Any] | None:
        """A replay run's record, or ``None``."""
        found = await self._read(
            "SELECT run, timeline, options, started, position, status, timeline_hash FROM replays WHERE run = ?",
            (run,),
        )
        if not found:
            return None
        row = found[0]
        return {
            "run": row[0],
            "timeline": row[1],
            "options": json.loads(row[2]),
            "started": row[3],
            "position": row[4],
            "status": row[5],
            "timeline_hash": row[6],
        }

    async def replay_start(
        self, run: str, timeline: str, options: Mapping[str, Any], *, timeline_hash: str | None = None
    ) -> None:
        """Record a new replay run (``timeline_hash``: what :func:`personae.app.replay.content_hash` gave)."""
        await self._write(
            "INSERT INTO replays (run, timeline, options, started, timeline_hash) VALUES (?,?,?,?,?)",
            (run, timeline, json.dumps(dict(options), default=str), utcnow(), timeline_hash),
        )

    async def replay_progress(self, run: str, position: str, status: str | None = None) -> None:
        """Record how far a replay got (the mission time of its last queued message); ``status`` if given."""
        await self._write(
            "UPDATE replays SET position = ?, status = COALESCE(?, status) WHERE run = ?", (position, status, run)
        )

    # -- HTTP intake (schema v4)

    async def intake_add(self, requests: Sequence[IntakeRequest]) -> list[IntakeStored]:
        """Store posted events in one transaction, synced to disk before returning (group commit).

        A request whose idempotency key or signature is already stored (or
        comes earlier in ``requests``) is not stored again: its answer is the
        stored event's id and fingerprint, with ``new`` false.
        """
        first: dict[tuple[int, str], IntakeRequest] = {}
        fresh: list[IntakeRequest] = []
        for r in requests:
            names = [(n, v) for n, v in ((0, r.idempotency_key), (1, r.signature)) if v]
            if not any(name in first for name in names):
                fresh.append(r)
            for name in names:
                first.setdefault(name, r)
        rows = [(r.id, r.idempotency_key, r.signature, r.fingerprint, r.event, r.persona, r.data) for r in fresh]
        async with self._lock:
            db = self.db
            # The answer to the client promises durability: this commit must reach the disk
            # (FULL), not only the WAL in the page cache (NORMAL survives a kill, not a power cut).
            await db.execute_fetchall("PRAGMA synchronous = FULL")
            try:
                # One statement, one transaction: a request already stored (by an earlier batch)
                # conflicts on its key or signature and is left out.
                inserted = {r[0] for r in await db.execute_fetchall(_INTAKE_ADD_SQL, (utcnow(), _json(rows)))}
            finally:
                await db.execute_fetchall("PRAGMA synchronous = NORMAL")
        known: dict[tuple[int, str], IntakeStored] = {}
        if len(inserted) < len(fresh):
            keys = [r.idempotency_key for r in fresh if r.id not in inserted and r.idempotency_key]
            sigs = [r.signature for r in fresh if r.id not in inserted and r.signature]
            found = await self._read(
                "SELECT idempotency_key, signature, id, fingerprint FROM intake"
                " WHERE idempotency_key IN (SELECT value FROM json_each(?1))"
                " OR signature IN (SELECT value FROM json_each(?2))",
                (json.dumps(keys), json.dumps(sigs)),
            )
            for key, sig, event_id, fingerprint in found:
                for name in ((0, key), (1, sig)):
                    if name[1]:
                        known[name] = IntakeStored(event_id, fingerprint, False)
        answers = []
        for r in requests:
            names = [(n, v) for n, v in ((0, r.idempotency_key), (1, r.signature)) if v]
            if r.id in inserted:
                answers.append(IntakeStored(r.id, r.fingerprint, True))
                continue
            stored = next((known[n] for n in names if n in known), None)
            if stored is None:
                earlier = next(first[n] for n in names if n in first)
                stored = IntakeStored(earlier.id, earlier.fingerprint, False)
            answers.append(stored)
        return answers

    async def intake_pending(self, limit: int = 100) -> list[IntakeEvent]:
        """Stored events not yet played, oldest first."""
        rows = await self._read(
            "SELECT id, event, persona, data FROM intake WHERE status = 'pending' ORDER BY seq LIMIT ?", (limit,)
        )
        return [IntakeEvent(i, e, p, json.loads(d)) for i, e, p, d in rows]

    async def intake_played(self, event_ids: Sequence[str]) -> None:
        """Record that these events' reactions are in the outbox: they are not played again."""
        await self._write(
            "UPDATE intake SET status = 'played', played = ? WHERE id IN (SELECT value FROM json_each(?))",
            (utcnow(), json.dumps(list(event_ids))),
        )

    async def writable(self) -> None:
        """Write to the database (its header), or raise :class:`StoreError`: for readiness checks."""
        try:
            await self._write(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain(self.path, exc)) from None


@dataclass(frozen=True, slots=True)
class IntakeRequest:
    """An event posted over HTTP, to store: ``data`` is JSON text; ``fingerprint`` identifies the request's content."""

    id: str
    event: str
    persona: str | None
    data: str
    fingerprint: str
    idempotency_key: str | None = None
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class IntakeStored:
    """The stored event that answers a request: the request's own (``new``), or an earlier one's."""

    id: str
    fingerprint: str
    new: bool


@dataclass(frozen=True, slots=True)
class IntakeEvent:
    """A stored event waiting to be played."""

    id: str
    event: str
    persona: str | None
    data: dict[str, Any]


def _explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path}: not a SQLite database"
    if "readonly" in text or "read-only" in text:
        return f"{path}: database is read-only"
    if "unable to open" in text:
        return f"{path}: cannot open database file"
    return f"{path}: {text}"
