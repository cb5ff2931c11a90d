"""The SQLite sink of the batched writer: queued tuples bound as parameters, a fixed-size chunk per statement.

:class:`~personae.storage.batching.BatchWriter` queues log rows and state
changes; this writes a batch in one transaction with as little work under the
GIL as it can, on either thread, so the event loop is never held up by it:

- no encoding: the queued tuples are flattened (in C: ``map`` and
  ``itertools.chain``, no Python code per row) into one parameter tuple per
  chunk of :data:`CHUNK` records, which sqlite3 binds in C. JSON text, the
  previous way, cost ~4 µs of event-loop time per message to build;
- one statement shape for every batch: each record — a log row, or a message
  and its reply — is padded to :data:`WIDTH` fields whose last one says which
  it is, and one prepared ``INSERT … SELECT … FROM (VALUES …)`` of ``CHUNK``
  records turns it into one or two rows. The last chunk is filled with blank
  records (no row). So a batch is a single ``executemany`` whatever mix of
  rows it holds, and SQLite (with the GIL released) does the rest;
- the GIL is held only while a chunk is bound (~2,000 parameters), never for a
  whole batch, so the event loop waits at most about that long for it.

A value sqlite3 cannot bind (a lone surrogate, an integer beyond 64 bits, an
object) fails the chunk; the batch is then cleaned value by value and written
again, so every row still reaches the disk.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...language.text import valid_unicode
from ..batching import LOG_COLUMNS, ROW_WIDTH, States, compact_json
from ..records import utcnow
from .connection import Connection

#: Records per statement: ~2,000 parameters, bound in about 0.1 ms (the longest the GIL is held at once).
CHUNK = 128
#: Fields per record: a whole log row (16), or an exchange padded to 16, then the kind.
WIDTH = ROW_WIDTH + 1
_ROW, _EXCHANGE, _BLANK = 1, 0, 2
# What to append to a queued tuple, by its length: an exchange (10 or 14 fields) or a row (16).
_PADS: list[tuple[Any, ...]] = [()] * (ROW_WIDTH + 1)
_PADS[10] = (None,) * 6 + (_EXCHANGE,)
_PADS[14] = (None,) * 2 + (_EXCHANGE,)
_PADS[ROW_WIDTH] = (_ROW,)
_BLANK_RECORD = (None,) * ROW_WIDTH + (_BLANK,)
_ISO = "'%Y-%m-%dT%H:%M:%f+00:00'"


def _record_values(base: int) -> str:
    """The two ``VALUES`` rows of the record whose parameters start after ``?{base}``.

    A log row: row 1 is the row itself. An exchange (``ts, persona, platform,
    chat, user, user_name, in_text, status, mt, run[, out_text, rule, seed,
    latency]``): row 1 is the ``in`` row, row 2 the ``out`` row if it has a
    reply. A row whose direction is NULL is not written.
    """

    def c(k: int) -> str:
        return f"?{base + k}"

    kind = c(WIDTH)

    def pick(row: int, exchange: int) -> str:
        return f"CASE {kind} WHEN {_ROW} THEN {c(row)} ELSE {c(exchange)} END"

    def row_only(k: int) -> str:
        return f"CASE {kind} WHEN {_ROW} THEN {c(k)} END"

    first = [
        f"strftime({_ISO}, {c(1)}, 'unixepoch')",
        f"CASE {kind} WHEN {_ROW} THEN {c(2)} WHEN {_EXCHANGE} THEN 'in' END",
        *(pick(k + 1, k) for k in range(2, 8)),  # persona, platform, chat, user, user_name, text
        row_only(9),  # rule
        row_only(10),  # seed
        row_only(11),  # latency_ms
        pick(12, 8),  # status
        row_only(13),  # event
        pick(14, 10),  # run
        f"strftime({_ISO}, {pick(15, 9)}, 'unixepoch')",
        row_only(16),  # key
    ]
    second = [
        f"strftime({_ISO}, {c(1)}, 'unixepoch')",
        f"CASE WHEN {kind} = {_EXCHANGE} AND {c(11)} IS NOT NULL THEN 'out' END",
        *(c(k) for k in range(2, 6)),  # persona, platform, chat, user
        "NULL",  # user_name
        c(11),  # text
        c(12),  # rule
        c(13),  # seed
        c(14),  # latency_ms
        "'ok'",
        "NULL",  # event
        c(10),  # run
        f"strftime({_ISO}, {c(9)}, 'unixepoch')",
        "NULL",  # key
    ]
    return f"({', '.join(first)}), ({', '.join(second)})"


def insert_sql(records: int) -> str:
    """The statement writing ``records`` padded records (``records * WIDTH`` parameters), in order."""
    values = ", ".join(_record_values(WIDTH * j) for j in range(records))
    return (
        f"INSERT INTO interactions ({', '.join(LOG_COLUMNS)}) SELECT * FROM (VALUES {values}) WHERE column2 IS NOT NULL"
        # A keyed row already logged (by the run before a kill) is not logged twice. Only a key
        # conflict is ignored: a row breaking another constraint still fails the batch.
        " ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING"
    )


_INSERT_SQL = insert_sql(CHUNK)
_STATE_SQL = (
    "INSERT INTO state (persona, scope, chat, data, updated) VALUES (?,?,?,?,?)"
    " ON CONFLICT (persona, scope, chat) DO UPDATE SET data = excluded.data, updated = excluded.updated"
)


def chunks(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The parameters of each statement: ``rows`` padded and flattened, ``CHUNK`` records to a tuple."""
    # All in C: per row a length look-up and one tuple concatenation, then one flat tuple per chunk.
    padded = map(operator.add, rows, map(_PADS.__getitem__, map(len, rows)))
    flat = tuple(itertools.chain.from_iterable(padded))
    size = CHUNK * WIDTH
    out = [flat[i : i + size] for i in range(0, len(flat), size)]
    if out and len(out[-1]) < size:
        out[-1] += _BLANK_RECORD * ((size - len(out[-1])) // WIDTH)
    return out


def _bindable(value: Any) -> Any:
    """``value`` as sqlite3 binds it: text without lone surrogates, a mapping as its compact JSON text."""
    if value is None or isinstance(value, float | bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, Mapping):
        return compact_json(value)
    return valid_unicode(str(value))


def cleaned(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` with every value made bindable (the slow path, after a chunk failed to bind)."""
    return [tuple(map(_bindable, r)) for r in rows]


class SqliteSink:
    """Writes one batch of queued log rows and state changes, all or nothing."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def __call__(self, rows: list[tuple[Any, ...]], states: States) -> None:
        """Write ``rows`` (log rows and exchanges, in order) and ``states``; nothing is committed on error."""
        try:
            await self._write(rows, states)
        except (sqlite3.InterfaceError, sqlite3.ProgrammingError, UnicodeEncodeError, OverflowError):
            # A value sqlite3 could not bind; the transaction was rolled back. Rare: clean them all, once.
            await self._write(cleaned(rows), states)

    async def _write(self, rows: list[tuple[Any, ...]], states: States) -> None:
        statements: list[tuple[str, Sequence[Sequence[Any]]]] = []
        if rows:
            statements.append((_INSERT_SQL, chunks(rows)))
        if states:
            now = utcnow()
            statements.append((_STATE_SQL, [(p, s, c, data, now) for (p, s, c), data in states.items()]))
        if len(statements) == 1 and len(statements[0][1]) == 1:
            # One statement is its own transaction: a single trip to the worker thread.
            await self._conn.write(statements[0][0], statements[0][1][0])
        elif statements:
            await self._conn.batch(*statements)
