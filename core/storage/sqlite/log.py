"""The interaction log in SQLite: rows queue on the batched writer, queries read the table."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..batching import BatchWriter, LogQueue
from ..records import StoreError
from .connection import Connection, explain

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


class SqliteLog(LogQueue):
    """:class:`~personae.storage.interface.LogStore` over the ``interactions`` table."""

    def __init__(self, conn: Connection, writer: BatchWriter) -> None:
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
