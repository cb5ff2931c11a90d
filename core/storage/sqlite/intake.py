"""Events posted over HTTP, in SQLite: the ``intake`` table (schema v4).

An event is stored before its 202 and played (its reactions written to the
outbox) after it, so a crash in between plays it at the next start. An
idempotency key or a signature names a request once: a retry finds its row
and gets the same id.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from ...language.text import valid_unicode
from ..records import IntakeEvent, IntakeRequest, IntakeStored, StoreError, utcnow
from .connection import Connection, explain
from .packing import unpack

_FIELDS = ("id", "idempotency_key", "signature", "fingerprint", "event", "persona", "data")
_ADD_SQL = (
    unpack("?2", _FIELDS) + f"INSERT INTO intake ({', '.join(_FIELDS)}, received)"
    f" SELECT {', '.join(_FIELDS)}, ?1 FROM rows WHERE true ORDER BY k ON CONFLICT DO NOTHING RETURNING id"
)


class SqliteIntake:
    """The HTTP intake's durable queue."""

    def __init__(self, conn: Connection, schema_version: int) -> None:
        self._conn = conn
        self._version = schema_version

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
        # One statement, one transaction: a request already stored (by an earlier batch)
        # conflicts on its key or signature and is left out. The 202 promises durability.
        added = await self._conn.write_synced(_ADD_SQL, (utcnow(), valid_unicode(json.dumps(rows, ensure_ascii=False))))
        inserted = {r[0] for r in added}
        known: dict[tuple[int, str], IntakeStored] = {}
        if len(inserted) < len(fresh):
            keys = [r.idempotency_key for r in fresh if r.id not in inserted and r.idempotency_key]
            sigs = [r.signature for r in fresh if r.id not in inserted and r.signature]
            found = await self._conn.read(
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
        rows = await self._conn.read(
            "SELECT id, event, persona, data FROM intake WHERE status = 'pending' ORDER BY seq LIMIT ?", (limit,)
        )
        return [IntakeEvent(i, e, p, json.loads(d)) for i, e, p, d in rows]

    async def intake_played(self, event_ids: Sequence[str]) -> None:
        """Record that these events' reactions are in the outbox: they are not played again."""
        await self._conn.write(
            "UPDATE intake SET status = 'played', played = ? WHERE id IN (SELECT value FROM json_each(?))",
            (utcnow(), json.dumps(list(event_ids))),
        )

    async def writable(self) -> None:
        """Write to the database (its header), or raise :class:`StoreError`: for readiness checks."""
        try:
            await self._conn.write(f"PRAGMA user_version = {self._version}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(explain(self._conn.path, exc)) from None
