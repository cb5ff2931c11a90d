"""Events posted over HTTP, in PostgreSQL: the ``intake`` table (schema v3), as SQLite's.

A request is answered 202 only once its row is committed (PostgreSQL's commit
waits for the WAL to reach the disk, unless the server is told otherwise). Its
idempotency key and signature are unique columns: a retry, to this worker or to
another behind the same load balancer, finds the first request's row and gets
its id. Any worker may play a stored event; its reactions are keyed by the
event's id (``http:<id>``), so a second play, by a worker that took over a
dead one's pending events, writes nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import asyncpg

from ..language.text import valid_unicode
from .records import IntakeEvent, IntakeRequest, IntakeStored, StoreError, utcnow

#: The migration that creates the table (``postgres.py`` numbers it).
MIGRATION = """
CREATE TABLE intake (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    signature TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    event TEXT NOT NULL,
    persona TEXT,
    data TEXT NOT NULL,
    received TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'played')),
    played TEXT
);
CREATE INDEX intake_pending ON intake (status, seq);
"""

_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PgIntake:
    """:class:`~personae.storage.interface.EventIntake` over the ``intake`` table."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self.pool = pool

    async def intake_add(self, requests: Sequence[IntakeRequest]) -> list[IntakeStored]:
        """Store posted events in one transaction, committed before returning; repeats get the first's answer."""
        first: dict[tuple[int, str], IntakeRequest] = {}
        fresh: list[IntakeRequest] = []
        for r in requests:
            names = _names(r)
            if not any(name in first for name in names):
                fresh.append(r)
            for name in names:
                first.setdefault(name, r)
        rows = [
            (r.id, r.idempotency_key, r.signature, r.fingerprint, r.event, r.persona, valid_unicode(r.data))
            for r in fresh
        ]
        # One statement: ON CONFLICT DO NOTHING covers every unique column (id, key, signature), and a
        # row another worker is inserting with the same key waits for that worker's commit.
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(7)]
        added = await self.pool().fetch(
            "INSERT INTO intake (id, idempotency_key, signature, fingerprint, event, persona, data, received)"
            " SELECT u.id, u.k, u.s, u.f, u.e, u.p, u.d, $8 FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS u (id, k, s, f, e, p, d, n)"
            " ORDER BY u.n ON CONFLICT DO NOTHING RETURNING id",
            *columns,
            utcnow(),
        )
        inserted = {r[0] for r in added}
        known: dict[tuple[int, str], IntakeStored] = {}
        if len(inserted) < len(fresh):
            keys = [r.idempotency_key for r in fresh if r.id not in inserted and r.idempotency_key]
            sigs = [r.signature for r in fresh if r.id not in inserted and r.signature]
            found = await self.pool().fetch(
                "SELECT idempotency_key, signature, id, fingerprint FROM intake"
                " WHERE idempotency_key = ANY($1::text[]) OR signature = ANY($2::text[])",
                keys,
                sigs,
            )
            for key, sig, event_id, fingerprint in found:
                for name in ((0, key), (1, sig)):
                    if name[1]:
                        known[name] = IntakeStored(event_id, fingerprint, False)
        answers = []
        for r in requests:
            if r.id in inserted:
                answers.append(IntakeStored(r.id, r.fingerprint, True))
                continue
            names = _names(r)
            stored = next((known[n] for n in names if n in known), None)
            if stored is None:
                earlier = next(first[n] for n in names if n in first)
                stored = IntakeStored(earlier.id, earlier.fingerprint, False)
            answers.append(stored)
        return answers

    async def intake_pending(self, limit: int = 100) -> list[IntakeEvent]:
        """Stored events not yet played, oldest first."""
        rows = await self.pool().fetch(
            "SELECT id, event, persona, data FROM intake WHERE status = 'pending' ORDER BY seq LIMIT $1", limit
        )
        return [IntakeEvent(i, e, p, json.loads(d)) for i, e, p, d in rows]

    async def intake_played(self, event_ids: Sequence[str]) -> None:
        """Record that these events' reactions are in the outbox: they are not played again."""
        await self.pool().execute(
            "UPDATE intake SET status = 'played', played = $1 WHERE id = ANY($2::text[])", utcnow(), list(event_ids)
        )

    async def writable(self) -> None:
        """Write to the database (a write that changes nothing), or raise :class:`StoreError`."""
        try:
            async with self.pool().acquire() as con, con.transaction():
                await con.execute("INSERT INTO personae_schema SELECT version FROM personae_schema WHERE false")
        except _DOWN as exc:
            raise StoreError(f"database not writable: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None


def _names(r: IntakeRequest) -> list[tuple[int, str]]:
    """What names a request once: its idempotency key (0) and its signature (1)."""
    return [(n, v) for n, v in ((0, r.idempotency_key), (1, r.signature)) if v]
