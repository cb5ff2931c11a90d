"""The interaction log in SQLite: rows queue on the batched writer, queries read the table."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from ..records import LogRow, StoreError
from .connection import Connection, explain
from .writer import BatchWriter

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


class SqliteLog:
    """:class:`~personae.storage.interface.LogStore` over the ``interactions`` table."""

    def __init__(self, conn: Connection, writer: BatchWriter) -> None:
        self._conn = conn
        self._writer = writer

    def log(self, row: LogRow) -> None:
        """Queue a log row (written by the writer task, in batches)."""
        writer = self._writer
        writer.rows.append(
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
        if len(writer.rows) >= writer.batch_size:
            writer.wake()

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
        writer = self._writer
        writer.rows.append(
            (time.time(), direction, persona, platform, None, None, None, text, rule, seed, None, status, event, run,
             mission_time, key)
        )  # fmt: skip
        if len(writer.rows) >= writer.batch_size:
            writer.wake()

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
        writer = self._writer
        rows = writer.rows
        rows.append(exchange)
        if len(rows) >= writer.batch_size:
            writer.wake()

    async def flush(self) -> None:
        """Write every queued row and state change now (see :meth:`BatchWriter.flush`)."""
        await self._writer.flush()

    async def query_log(
        self,
        *,
        persona: str | None = None,
        direction: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Interaction rows, oldest first (the last ``limit`` when given)."""
        await self._writer.flush() if not self._conn.readonly else None
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
            found = await self._conn.read(sql.replace("SELECT *", f"SELECT {', '.join(_LOG_COLS)}"), args)
        except sqlite3.DatabaseError as exc:
            raise StoreError(explain(self._conn.path, exc)) from None
        rows = [dict(zip(_LOG_COLS, r, strict=True)) for r in found]
        rows.reverse()
        return rows
