"""The batched writer: log rows and state changes queue in memory and reach SQLite in batches.

Logging never limits throughput: the hot path only appends a tuple to a
list, and a writer task writes the queue every ``flush_interval`` seconds, or
as soon as ``batch_size`` rows are waiting. :meth:`BatchWriter.stop` flushes
everything that was queued.

The queue holds two shapes of row, told apart by their length: a whole log
row (``LOG_COLUMNS``, with times in epoch seconds), or an "exchange" — a
message and its reply as one 14-field record (10 without a reply), which
SQLite splits into two rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..records import utcnow
from .connection import Connection
from .packing import json_text, unpack

log = logging.getLogger("personae.storage.store")

LOG_COLUMNS = (
    "ts", "direction", "persona", "platform", "chat", "user", "user_name", "text", "rule",
    "seed", "latency_ms", "status", "event", "run", "mission_time", "key",
)  # fmt: skip
_LOG_JSON_SQL = (
    unpack("?", LOG_COLUMNS, ("ts", "mission_time"))
    + f"INSERT INTO interactions ({', '.join(LOG_COLUMNS)}) SELECT {', '.join(LOG_COLUMNS)} FROM rows WHERE true"
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
    unpack("?", _EXCHANGE_FIELDS, ("ts", "mt")) + f"INSERT INTO interactions ({', '.join(LOG_COLUMNS)}) "
    "SELECT ts, CASE d.o WHEN 0 THEN 'in' ELSE 'out' END, persona, platform, chat, user,"
    " CASE d.o WHEN 0 THEN user_name END, CASE d.o WHEN 0 THEN in_text ELSE out_text END,"
    " CASE d.o WHEN 1 THEN rule END, CASE d.o WHEN 1 THEN seed END, CASE d.o WHEN 1 THEN latency END,"
    " CASE d.o WHEN 0 THEN status ELSE 'ok' END, NULL, run, mt, NULL "
    "FROM rows, (SELECT 0 AS o UNION ALL SELECT 1) AS d WHERE d.o = 0 OR out_text IS NOT NULL ORDER BY k, d.o"
)
ROW_WIDTH = 16  # a single row; anything shorter is an exchange (10 fields, or 14 with its reply)
_STATE_SQL = (
    "INSERT INTO state (persona, scope, chat, data, updated) VALUES (?,?,?,?,?)"
    " ON CONFLICT (persona, scope, chat) DO UPDATE SET data = excluded.data, updated = excluded.updated"
)


def _width(row: tuple[Any, ...]) -> int:
    return ROW_WIDTH if len(row) == ROW_WIDTH else 0


class BatchWriter:
    """The queues of log rows and state changes, and the task that writes them.

    ``rows`` and ``states`` are public so the log and state classes append
    to them directly: one list append per message is the whole cost of
    logging on the event loop. A producer that fills ``rows`` to
    ``batch_size`` calls :meth:`wake`.
    """

    def __init__(self, conn: Connection, *, batch_size: int, flush_interval: float) -> None:
        self._conn = conn
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.rows: list[tuple[Any, ...]] = []
        #: The latest JSON state per (persona, scope, chat): only the last change reaches the disk.
        self.states: dict[tuple[str, str, str], str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._flushing = asyncio.Lock()
        self._on_cancel: Callable[[], Awaitable[None]] | None = None

    def wake(self) -> None:
        """Write the queue now rather than at the next tick (a full batch is waiting)."""
        self._wake.set()

    def start(self, on_cancel: Callable[[], Awaitable[None]]) -> None:
        """Start the writer task; ``on_cancel`` closes the store if the event loop cancels it."""
        self._on_cancel = on_cancel
        self._task = asyncio.create_task(self._write_loop(), name="personae-store-writer")

    async def stop(self) -> None:
        """Stop the writer task, then write what is still queued."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await asyncio.shield(self._task)
            self._task = None
        await self.flush()

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
            if not self._closing and self._on_cancel is not None:
                # Cancelled by the event loop shutting down (``asyncio.run`` after an
                # error left the store open): write what is queued and close, or the
                # connection's non-daemon thread keeps the process alive for ever.
                self._task = None
                with contextlib.suppress(Exception):
                    await self._on_cancel()
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
        if not self.rows and not self.states:
            return
        rows, self.rows = self.rows, []
        states, self.states = self.states, {}
        now = utcnow()
        try:
            # One JSON parameter per run of same-shaped rows: SQLite unpacks it in C with the
            # GIL released, so the writer thread does not compete with the event loop row by row.
            statements: list[tuple[str, Sequence[Sequence[Any]]]] = [
                (_LOG_JSON_SQL if width == ROW_WIDTH else _EXCHANGE_SQL, [(json_text(list(run)),)])
                for width, run in itertools.groupby(rows, key=_width)
            ]
            if states:
                statements.append((_STATE_SQL, [(p, s, c, data, now) for (p, s, c), data in states.items()]))
            if len(statements) == 1 and not states:
                # One statement is its own transaction: a single trip to the worker thread.
                await self._conn.write(statements[0][0], statements[0][1][0])
            elif statements:
                await self._conn.batch(*statements)
        except Exception:
            # Nothing was committed (one statement, or one transaction): queue it all again.
            self.rows[:0] = rows
            for k, v in states.items():
                self.states.setdefault(k, v)
            raise
