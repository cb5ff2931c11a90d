"""Which backend a ``database`` setting names: a ``postgresql://`` URL, or else a SQLite file."""

from __future__ import annotations

import re
from pathlib import Path

from .interface import Storage

_SCHEMES = ("postgresql://", "postgres://")


def is_url(database: str | Path) -> bool:
    """Whether ``database`` is a PostgreSQL URL rather than a file (a ``Path`` never is)."""
    return isinstance(database, str) and database.startswith(_SCHEMES)


def shown(database: str | Path) -> str:
    """``database`` as it may be printed: a URL without its password."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(database)) if is_url(database) else str(database)


def store_for(database: str | Path, *, readonly: bool = False) -> Storage:
    """An unopened store for ``database``; ``readonly`` applies to SQLite files (a URL's rights are the server's)."""
    if is_url(database):
        # Imported here: asyncpg is needed only by those who use PostgreSQL.
        from .postgres import PostgresStore

        return PostgresStore(str(database))
    from .store import Store

    return Store(database, readonly=readonly)
