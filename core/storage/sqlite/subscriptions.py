"""Broadcast subscriptions in SQLite: one row per (adapter, chat)."""

from __future__ import annotations

from collections.abc import Iterable

from ..records import utcnow
from .connection import Connection


class SqliteSubscriptions:
    """:class:`~personae.storage.interface.Subscriptions` over the ``subscriptions`` table."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def subscribe(self, adapter: str, chat: str, persona: str) -> bool:
        """Subscribe ``chat``; ``False`` if it already was."""
        added = await self._conn.write(
            "INSERT OR IGNORE INTO subscriptions (adapter, chat, persona, created) VALUES (?,?,?,?) RETURNING chat",
            (adapter, chat, persona, utcnow()),
        )
        return bool(added)

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Unsubscribe ``chat``; ``False`` if it was not subscribed."""
        gone = await self._conn.write(
            "DELETE FROM subscriptions WHERE adapter = ? AND chat = ? RETURNING chat", (adapter, chat)
        )
        return bool(gone)

    async def subscribers(self, adapter: str) -> list[str]:
        """Chats subscribed to ``adapter``'s broadcasts, oldest first."""
        rows = await self._conn.read(
            "SELECT chat FROM subscriptions WHERE adapter = ? ORDER BY created, rowid", (adapter,)
        )
        return [r[0] for r in rows]

    async def subscribe_many(self, adapter: str, chats: Iterable[str], persona: str) -> None:
        """Bulk subscribe (imports, tests, benchmarks)."""
        now = utcnow()
        await self._conn.batch(
            (
                "INSERT OR IGNORE INTO subscriptions (adapter, chat, persona, created) VALUES (?,?,?,?)",
                [(adapter, c, persona, now) for c in chats],
            )
        )
