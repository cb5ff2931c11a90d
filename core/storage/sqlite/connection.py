"""One aiosqlite connection shared by every SQLite concern: opening, migrating, reads and writes.

The connection is in WAL mode and in autocommit mode: a single statement is
its own transaction (one thread hop), batches take an explicit one.

Every cursor is created and dropped on aiosqlite's worker thread
(``execute_fetchall``, or an explicit ``close``): a cursor finalised on the
event loop's thread while the worker runs a statement is API misuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ..records import StoreError


class Connection:
    """The open database: :meth:`open` it once, then every concern reads and writes through it.

    :param migrations: SQL scripts by schema version; version ``n`` takes a
        database from ``n - 1`` to ``n``, and ``PRAGMA user_version`` records
        where a file is.
    """

    def __init__(self, path: Path, *, readonly: bool, schema_version: int, migrations: Mapping[int, str]) -> None:
        self.path = path
        self.readonly = readonly
        self.schema_version = schema_version
        self._migrations = migrations
        self._db: aiosqlite.Connection | None = None
        #: Writes take turns: an explicit transaction must not take in another caller's statement.
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection."""
        if self._db is None:
            raise StoreError(f"{self.path}: store is not open")
        return self._db

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` has not run."""
        return self._db is not None

    async def open(self) -> None:
        """Connect, check the file is SQLite and writable, and migrate the schema."""
        try:
            if self.path.is_dir():
                raise StoreError(f"{self.path}: is a folder, not a database file")
            if self.readonly and not self.path.exists():
                raise StoreError(f"{self.path}: no such database")
            if not self.readonly and not self.path.parent.exists():
                raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        except OSError as exc:
            raise StoreError(f"{self.path}: {exc.strerror or exc}") from None
        try:
            target, uri = await asyncio.to_thread(self._probe)
            self._db = await aiosqlite.connect(target, uri=uri, isolation_level=None)
            await self._db.execute_fetchall("PRAGMA busy_timeout = 5000")
            version = next(iter(await self._db.execute_fetchall("PRAGMA user_version")))[0]
            await self._db.execute_fetchall("SELECT count(*) FROM sqlite_master")
            if not self.readonly:
                await self._db.execute_fetchall("PRAGMA journal_mode = WAL")
                await self._db.execute_fetchall("PRAGMA synchronous = NORMAL")
                await self._migrate(int(version))
                # A read-only file opens and reads fine; find out now, not at the first log write.
                await self._db.execute_fetchall(f"PRAGMA user_version = {self.schema_version}")
            elif version > self.schema_version:
                raise StoreError(self._too_new(version))
        except sqlite3.DatabaseError as exc:
            await self._abort()
            raise StoreError(explain(self.path, exc)) from None
        except (OSError, ValueError) as exc:  # ValueError: a path SQLite cannot take (surrogates, NUL)
            await self._abort()
            raise StoreError(f"{self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        except BaseException:
            # aiosqlite's worker is a non-daemon thread: a connection left open
            # here would keep the interpreter from ever exiting.
            await self._abort()
            raise

    def _probe(self) -> tuple[str, bool]:
        """Find how to open the file (path or URI), with a plain connection, before aiosqlite does.

        aiosqlite cannot fail to connect cleanly: its worker thread then reports
        to an event loop that may be closed by the time it does, and prints a
        traceback. Connection errors are raised here instead.

        Read-only: ``mode=ro`` sees what a running bot writes, but on a WAL
        database it needs to create the ``-shm`` file next to it; where the
        folder is not writable either, ``immutable=1`` reads the file as it is.
        """
        if not self.readonly:
            sqlite3.connect(self.path).close()
            return str(self.path), False
        quoted = urllib.parse.quote(str(self.path.resolve()))
        last: sqlite3.Error | None = None
        for uri in (f"file:{quoted}?mode=ro", f"file:{quoted}?immutable=1"):
            try:
                con = sqlite3.connect(uri, uri=True)
                try:
                    con.execute("SELECT count(*) FROM sqlite_master").fetchall()
                finally:
                    con.close()
            except sqlite3.OperationalError as exc:
                last = exc
                continue
            return uri, True
        assert last is not None
        raise last

    def _too_new(self, version: int) -> str:
        return f"{self.path}: database schema v{version} is newer than this personae (v{self.schema_version})"

    async def _abort(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
            self._db = None

    async def _migrate(self, version: int) -> None:
        assert self._db is not None
        if version > self.schema_version:
            raise StoreError(self._too_new(version))
        for target in range(version + 1, self.schema_version + 1):
            cur = await self._db.executescript(
                "BEGIN;\n" + self._migrations[target] + f"\nPRAGMA user_version = {target};\nCOMMIT;"
            )
            await cur.close()

    async def close(self) -> None:
        """Close the connection, whatever happens: aiosqlite's worker thread would keep the process alive."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close()

    async def write(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One write statement, committed on its own (use RETURNING to learn what changed)."""
        async with self._lock:
            return list(await self.db.execute_fetchall(sql, args))

    async def write_synced(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """As :meth:`write`, synced to the disk before returning (``synchronous = FULL``).

        For a promise made to someone outside: NORMAL (the default) survives a killed process
        but not a power cut, since the WAL may still be in the page cache.
        """
        async with self._lock:
            db = self.db
            await db.execute_fetchall("PRAGMA synchronous = FULL")
            try:
                return list(await db.execute_fetchall(sql, args))
            finally:
                await db.execute_fetchall("PRAGMA synchronous = NORMAL")

    async def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """One read statement's rows."""
        return list(await self.db.execute_fetchall(sql, args))

    async def batch(self, *statements: tuple[str, Sequence[Sequence[Any]]]) -> None:
        """Several ``executemany`` in one transaction."""
        async with self._lock:
            db = self.db
            await db.execute_fetchall("BEGIN")
            try:
                for sql, rows in statements:
                    cur = await db.executemany(sql, rows)
                    await cur.close()
                await db.execute_fetchall("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute_fetchall("ROLLBACK")
                raise


def explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    """A one-line reason for a SQLite error, naming the file."""
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path}: not a SQLite database"
    if "readonly" in text or "read-only" in text:
        return f"{path}: database is read-only"
    if "unable to open" in text:
        return f"{path}: cannot open database file"
    return f"{path}: {text}"
