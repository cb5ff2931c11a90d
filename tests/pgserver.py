"""A real PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` in a temporary folder, one per session.

Skipped only where PostgreSQL is not installed, and never when
``PERSONAE_REQUIRE_POSTGRES`` is set (CI).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


@dataclass(frozen=True)
class PgServer:
    """A PostgreSQL server listening on a Unix socket in ``folder`` only."""

    bin: Path
    folder: Path
    names: Iterator[int]

    def new_database(self) -> str:
        name = f"contract_{next(self.names)}"
        subprocess.run([self.bin / "createdb", "-h", self.folder, "-U", "personae", name], check=True, timeout=60)
        return f"postgresql://personae@/{name}?host={self.folder}"


@contextlib.contextmanager
def running_postgres(bindir: Path, *, fsync: bool = False) -> Iterator[PgServer]:
    """A server of its own in a temporary folder, stopped and removed on exit (``fsync=False``: tests' speed)."""
    # Not under pytest's tmp_path: its folders are private to this user, and the server
    # may have to run as another (PostgreSQL refuses to run as root).
    folder = Path(tempfile.mkdtemp(prefix="personae-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        os.chown(folder, pwd.getpwnam("postgres").pw_uid, -1)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    try:
        subprocess.run(
            [*run_as, bindir / "initdb", "-D", data, "-A", "trust", "-U", "personae", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = f"-k {folder} -c listen_addresses=''"
        if not fsync:
            options += " -c fsync=off -c full_page_writes=off"
        subprocess.run(
            [*run_as, bindir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        try:
            yield PgServer(bindir, folder, itertools.count())
        finally:
            subprocess.run([*run_as, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """The session's server."""
    bindir = pg_bin()
    if bindir is None:
        if os.environ.get("PERSONAE_REQUIRE_POSTGRES"):  # CI: never skipped there
            pytest.fail("PERSONAE_REQUIRE_POSTGRES is set but PostgreSQL is not installed")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    with running_postgres(bindir) as server:
        yield server
