"""Replay and live runs in SQLite: the ``replays`` table, one row per run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..records import utcnow
from .connection import Connection


class SqliteRuns:
    """:class:`~personae.storage.interface.Runs` over the ``replays`` table."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def replay_get(self, run: str) -> dict[str, Any] | None:
        """A replay run's record, or ``None``."""
        found = await self._conn.read(
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
        await self._conn.write(
            "INSERT INTO replays (run, timeline, options, started, timeline_hash) VALUES (?,?,?,?,?)",
            (run, timeline, json.dumps(dict(options), default=str), utcnow(), timeline_hash),
        )

    async def replay_progress(self, run: str, position: str, status: str | None = None) -> None:
        """Record how far a replay got (the mission time of its last queued message); ``status`` if given."""
        await self._conn.write(
            "UPDATE replays SET position = ?, status = COALESCE(?, status) WHERE run = ?", (position, status, run)
        )
