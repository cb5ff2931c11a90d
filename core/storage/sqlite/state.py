"""Persona state in SQLite: changes queue on the batched writer, the last one per key wins."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..batching import BatchWriter, json_text
from .connection import Connection


class SqliteState:
    """:class:`~personae.storage.interface.StateStore` over the ``state`` table."""

    def __init__(self, conn: Connection, writer: BatchWriter) -> None:
        self._conn = conn
        self._writer = writer

    def save_state(self, persona: str, scope: str, chat: str, data: Mapping[str, Any]) -> None:
        """Queue the latest state of ``persona`` (scope ``persona`` or ``chat``)."""
        self._writer.states[(persona, scope, chat)] = json_text(dict(data))

    async def load_states(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """All saved state, keyed by (persona, scope, chat)."""
        await self._writer.flush()
        rows = await self._conn.read("SELECT persona, scope, chat, data FROM state")
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        for p, s, c, d in rows:
            try:
                out[(p, s, c)] = json.loads(d)
            except (TypeError, ValueError):
                continue  # a row that is not JSON (damaged by hand or disk) is skipped: that state starts afresh
        return out
