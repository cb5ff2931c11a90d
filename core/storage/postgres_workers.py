"""Several ``personae run`` processes on one PostgreSQL database: who sends what.

:class:`PgCoordination` is the PostgreSQL side of
:class:`~personae.storage.interface.Coordination`:

- a lane (one adapter's outbox) is sent by one process at a time, the holder
  of a session advisory lock on a connection of its own. The lock ends with
  the session: a process that dies (kill -9, a lost machine) releases it, and a
  waiting process takes the lane over. One sender per lane is what keeps N
  processes together under one bot's platform limits;
- the holder leases the rows it loads (``lease_owner``, ``lease_until``) with
  ``SELECT … FOR UPDATE SKIP LOCKED`` and renews the lease while it runs. A new
  holder takes a dead holder's rows only once their lease has expired, and
  never a row of a chat whose earlier row another process still holds: each
  chat's messages stay in order, and a message can be repeated only if it was
  in flight when its sender died.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

import asyncpg

from .records import OutboxItem

log = logging.getLogger("personae.storage.postgres")

#: What a broken or unreachable server raises.
_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def lock_key(name: str) -> int:
    """The advisory lock key of ``name``: 64 bits of its hash, as the signed bigint PostgreSQL takes."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _lane(adapters: Sequence[str]) -> list[str]:
    return sorted(set(adapters))


class PgCoordination:
    """:class:`~personae.storage.interface.Coordination` over one PostgreSQL database.

    :param url: the database (the lock connection is opened apart from the pool).
    :param pool: gives the store's open pool, for leases.
    :param owner: this process's name in the database (also its ``application_name``).
    :param columns: the outbox columns of an :class:`OutboxItem`, in order.
    """

    def __init__(self, url: str, pool: Callable[[], asyncpg.Pool], owner: str, columns: str) -> None:
        self.url = url
        self.pool = pool
        self.owner = owner
        returned = ", ".join(f"outbox.{c.strip()}" for c in columns.split(","))
        # The lane's transaction lock makes leasing one process at a time: a row another
        # leaser has locked but not yet committed cannot let a later row of its chat through.
        self._lease_sql = f"""
            WITH mine AS (
                SELECT o.id FROM outbox o
                WHERE o.status = 'pending' AND o.adapter = ANY($1::text[])
                  AND (o.lease_owner IS NULL OR o.lease_until < now())
                  AND o.lease_owner IS DISTINCT FROM $2
                  AND NOT EXISTS (
                      SELECT 1 FROM outbox e
                      WHERE e.adapter = o.adapter AND e.chat = o.chat AND e.status = 'pending' AND e.id < o.id
                        AND e.lease_owner <> $2 AND e.lease_until >= now())
                ORDER BY o.id LIMIT $3
                FOR UPDATE OF o SKIP LOCKED
            )
            UPDATE outbox SET lease_owner = $2, lease_until = now() + make_interval(secs => $4)
            FROM mine WHERE outbox.id = mine.id
            RETURNING {returned}"""

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str, *, retry: float) -> AsyncIterator[asyncio.Event]:
        """Wait until this process holds ``name``; the event is set if the hold is lost."""
        con = await self._acquire(lock_key(name), name, retry)
        lost = asyncio.Event()
        watch = asyncio.create_task(self._watch(con, lost, retry), name=f"hold-{name}")
        try:
            yield lost
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            try:
                # Ending the session releases the lock; a hung server must not hold up the stop.
                await asyncio.wait_for(con.close(), timeout=max(1.0, 4 * retry))
            except (*_DOWN, asyncio.CancelledError):
                con.terminate()
                raise

    async def _acquire(self, key: int, name: str, retry: float) -> asyncpg.Connection:
        con: asyncpg.Connection | None = None
        complained = False
        try:
            while True:
                try:
                    if con is None or con.is_closed():
                        con = await asyncpg.connect(self.url, server_settings={"application_name": self.owner})
                    if await con.fetchval("SELECT pg_try_advisory_lock($1)", key):
                        log.info("%s: this process (%s) now sends %s", name, self.owner, name)
                        return con
                except _DOWN as exc:
                    if not complained:  # once per wait: a server down for an hour is one line, not 7,200
                        log.warning("%s: cannot reach the database to take the lane over: %s", name, exc)
                        complained = True
                    if con is not None:
                        con.terminate()
                        con = None
                await asyncio.sleep(retry)
        except BaseException:
            if con is not None:
                con.terminate()
            raise

    @staticmethod
    async def _watch(con: asyncpg.Connection, lost: asyncio.Event, retry: float) -> None:
        """Set ``lost`` when the lock's connection stops answering (then the lock may be someone else's)."""
        try:
            while True:
                await asyncio.sleep(retry)
                await asyncio.wait_for(con.fetchval("SELECT 1"), timeout=max(2.0, 4 * retry))
        except _DOWN as exc:
            log.warning("lost the connection that holds the lane (%s): stopping its dispatcher", exc)
            lost.set()

    async def outbox_lease(self, adapters: Sequence[str], limit: int, seconds: float) -> list[OutboxItem]:
        """Lease up to ``limit`` pending rows of ``adapters`` for ``seconds``, oldest first."""
        lane = _lane(adapters)
        async with self.pool().acquire() as con, con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", lock_key("lease:" + "\x1f".join(lane)))
            rows = await con.fetch(self._lease_sql, lane, self.owner, limit, float(seconds))
        items = [OutboxItem(*r) for r in rows]
        items.sort(key=lambda i: i.id)  # RETURNING gives no order
        return items

    async def outbox_renew(self, adapters: Sequence[str], seconds: float) -> int:
        """Extend this process's leases on pending rows of ``adapters``."""
        # SKIP LOCKED: a row being marked right now is not waited for (it is changing hands or
        # status; the next renewal, a third of a lease later, extends it). Waiting for it could
        # deadlock with the mark, which locks rows in another order.
        done = await self.pool().execute(
            "UPDATE outbox SET lease_until = now() + make_interval(secs => $3) WHERE id IN ("
            " SELECT id FROM outbox WHERE lease_owner = $1 AND status = 'pending' AND adapter = ANY($2::text[])"
            " FOR UPDATE SKIP LOCKED)",
            self.owner,
            _lane(adapters),
            float(seconds),
        )
        return int(done.rsplit(" ", 1)[-1])

    async def outbox_release(self, adapters: Sequence[str]) -> int:
        """Give up this process's leases on pending rows of ``adapters``."""
        done = await self.pool().execute(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL"
            " WHERE lease_owner = $1 AND status = 'pending' AND adapter = ANY($2::text[])",
            self.owner,
            _lane(adapters),
        )
        return int(done.rsplit(" ", 1)[-1])

    async def outbox_last_sent(self, adapters: Sequence[str]) -> float | None:
        """Seconds since a row of ``adapters`` was last marked sent, by any process (``None``: never)."""
        # The newest rows by id are the last sent, give or take a retry: no index on sent_at needed.
        rows = await self.pool().fetch(
            "SELECT sent_at FROM outbox WHERE status = 'sent' AND adapter = ANY($1::text[]) ORDER BY id DESC LIMIT 100",
            _lane(adapters),
        )
        stamps = [datetime.fromisoformat(r[0]).timestamp() for r in rows if r[0]]
        return max(0.0, time.time() - max(stamps)) if stamps else None
