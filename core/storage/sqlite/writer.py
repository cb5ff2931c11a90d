"""The SQLite sink of the batched writer: one JSON parameter per run of same-shaped rows.

:class:`~personae.storage.batching.BatchWriter` queues log rows and state
changes; this writes a batch with as few trips to aiosqlite's worker thread,
and as little work under the GIL there, as it can.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ..batching import EXCHANGE_FIELDS, LOG_COLUMNS, ROW_WIDTH, States, json_text
from ..records import utcnow
from .connection import Connection
from .packing import unpack

_LOG_JSON_SQL = (
    unpack("?", LOG_COLUMNS, ("ts", "mission_time"))
    + f"INSERT INTO interactions ({', '.join(LOG_COLUMNS)}) SELECT {', '.join(LOG_COLUMNS)} FROM rows WHERE true"
    # A keyed row already logged (by the run before a kill) is not logged twice. Only a key
    # conflict is ignored: a row breaking another constraint still fails the batch.
    " ORDER BY k ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING"
)
# A message and its reply travel as one 14-field "exchange" and become two rows here:
# each field is extracted once, not once per row (a third of the writer's work).
_EXCHANGE_SQL = (
    unpack("?", EXCHANGE_FIELDS, ("ts", "mt")) + f"INSERT INTO interactions ({', '.join(LOG_COLUMNS)}) "
    "SELECT ts, CASE d.o WHEN 0 THEN 'in' ELSE 'out' END, persona, platform, chat, user,"
    " CASE d.o WHEN 0 THEN user_name END, CASE d.o WHEN 0 THEN in_text ELSE out_text END,"
    " CASE d.o WHEN 1 THEN rule END, CASE d.o WHEN 1 THEN seed END, CASE d.o WHEN 1 THEN latency END,"
    " CASE d.o WHEN 0 THEN status ELSE 'ok' END, NULL, run, mt, NULL "
    "FROM rows, (SELECT 0 AS o UNION ALL SELECT 1) AS d WHERE d.o = 0 OR out_text IS NOT NULL ORDER BY k, d.o"
)
_STATE_SQL = (
    "INSERT INTO state (persona, scope, chat, data, updated) VALUES (?,?,?,?,?)"
    " ON CONFLICT (persona, scope, chat) DO UPDATE SET data = excluded.data, updated = excluded.updated"
)


def _width(row: tuple[Any, ...]) -> int:
    return ROW_WIDTH if len(row) == ROW_WIDTH else 0


class SqliteSink:
    """Writes one batch of queued log rows and state changes, all or nothing."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def __call__(self, rows: list[tuple[Any, ...]], states: States) -> None:
        """Write ``rows`` (log rows and exchanges, in order) and ``states``; nothing is committed on error."""
        now = utcnow()
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
