"""The outbox in SQLite: written through at once, because delivery guarantees depend on it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..batching import json_text
from ..records import OUTBOX_FIELDS, OutboxItem, OutboxRow, full_row, utcnow
from .connection import Connection
from .packing import unpack

_OUTBOX_ADD_SQL = (
    unpack("?2", OUTBOX_FIELDS) + f"INSERT OR IGNORE INTO outbox ({', '.join(OUTBOX_FIELDS)}, created)"
    f" SELECT {', '.join(OUTBOX_FIELDS)}, ?1 FROM rows ORDER BY k"
)
_OUTBOX_MARK_SQL = (
    unpack("?2", ("id", "status", "error", "receipt", "n"))
    + "UPDATE outbox SET status = m.status, attempts = attempts + m.n, last_error = m.error,"
    " receipt = COALESCE(m.receipt, outbox.receipt),"
    " sent_at = CASE WHEN m.status = 'sent' THEN ?1 ELSE outbox.sent_at END"
    " FROM rows AS m WHERE outbox.id = m.id"
)
_OUTBOX_COLS = (
    "id, key, run, persona, adapter, chat, text, reply_to, event, rule, mission_time, status, attempts, media"
)


def _outbox_row(item: Mapping[str, Any]) -> tuple[Any, ...]:
    missing = [f for f in ("key", "persona", "adapter", "chat", "text") if item.get(f) is None]
    if missing:
        # The columns are NOT NULL and the insert is OR IGNORE: the row would vanish silently.
        raise ValueError(f"outbox row without {', '.join(missing)}: {dict(item)!r}")
    return tuple(item.get(f) for f in OUTBOX_FIELDS)


def _by_id(item: OutboxItem) -> int:
    return item.id


class SqliteOutbox:
    """:class:`~personae.storage.interface.Outbox` over the ``outbox`` table."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def outbox_add(self, items: Sequence[Mapping[str, Any] | OutboxRow]) -> None:
        """Insert messages to send, in one transaction; an existing idempotency ``key`` is left as is.

        Each item is a mapping with the :data:`OutboxRow` field names (``run``,
        ``reply_to``, ``event``, ``rule`` and ``mission_time`` optional), or
        an :data:`OutboxRow` tuple.
        """
        if not items:
            return
        rows = [full_row(i) if isinstance(i, tuple) else _outbox_row(i) for i in items]
        await self._conn.write(_OUTBOX_ADD_SQL, (utcnow(), json_text(rows)))

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
        packed = await self._conn.read(f"SELECT json_group_array(json_array({_OUTBOX_COLS})) FROM ({sql})", args)
        items = [OutboxItem(*r) for r in json.loads(packed[0][0])]
        items.sort(key=_by_id)  # aggregate order is SQLite's choice, not a promise
        return items

    async def outbox_receipt(self, key: str) -> str | None:
        """What the platform answered for the message with idempotency ``key`` (``None``: not sent)."""
        rows = await self._conn.read("SELECT receipt FROM outbox WHERE key = ? AND status = 'sent'", (key,))
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
        await self._conn.write(_OUTBOX_MARK_SQL, (utcnow(), json_text(list(folded.values()))))

    async def outbox_cancel(self, run: str, reason: str) -> int:
        """Mark every still-pending message of ``run`` failed with ``reason``; returns how many."""
        cancelled = await self._conn.write(
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
        return {s: n for s, n in await self._conn.read(sql + " GROUP BY status", args)}

    async def move_chat(self, adapter: str, old: str, new: str, pending: Sequence[int] = ()) -> None:
        """``old`` is now ``new`` (a group became a supergroup): move its subscription and these outbox rows."""
        # One transaction over both tables: a chat half moved would get broadcasts under
        # its new id while its queued messages still go to the old, dead one.
        await self._conn.batch(
            (
                "UPDATE OR IGNORE subscriptions SET chat = ? WHERE adapter = ? AND chat = ?",
                [(new, adapter, old)],
            ),
            ("DELETE FROM subscriptions WHERE adapter = ? AND chat = ?", [(adapter, old)]),
            ("UPDATE outbox SET chat = ? WHERE id = ?", [(new, i) for i in pending]),
        )
