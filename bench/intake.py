"""Events per second accepted by ``POST /events`` of a running ``personae run`` (SQLite, PostgreSQL).

The bot runs as a real subprocess (null adapter, ``[http]`` on a free port);
``--clients`` concurrent clients post signed events with an ``Idempotency-Key``
each, each waiting for its 202 before sending the next. A 202 comes only once
the event is committed to SQLite and synced (``PRAGMA synchronous = FULL``;
concurrent requests share one commit); on PostgreSQL (a server started for the
run, fsync on) once the transaction is committed. The bot plays the events
meanwhile, as it would in production. After each row the ``intake`` table is
counted: every 202 must be a stored row. Prints one table.

    python bench/intake.py                       # 1, 8 and 32 clients, 3,000 events each, both databases
    python bench/intake.py --clients 64 --events 10000 --backend postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

SECRET = "bench-secret"
PERSONA = """\
persona: probe
name: Probe
events:
  reading:
    say: "Battery at {{ event.battery }}%."
"""


async def start_bot(folder: Path, database: str) -> tuple[asyncio.subprocess.Process, str]:
    (folder / "probe.yaml").write_text(PERSONA, encoding="utf-8")
    (folder / "bot.toml").write_text(
        f'[bot]\npersonas = ["probe.yaml"]\ndatabase = "{database}"\nreload = false\n\n'
        '[[adapters]]\ntype = "null"\npersona = "probe"\n\n[http]\nport = 0\nrate = 0\nmax_body = 4096\n',
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "personae", "run", cwd=folder,
        env={**os.environ, "PERSONAE_HTTP_SECRET": SECRET}, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        if not line:
            raise SystemExit("personae run exited before listening")
        if "http: listening on" in line:
            url = line.split()[3]
        if "personae running" in line:
            return proc, url


async def client(http: aiohttp.ClientSession, url: str, n: int, latencies: list[float]) -> None:
    from personae.app.intake import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

    for i in range(n):
        body = json.dumps({"event": "reading", "data": {"battery": i % 100}}).encode()
        stamp = f"{time.time():.6f}"
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(SECRET, stamp, body),
        }
        t0 = time.perf_counter()
        async with http.post(f"{url}/events", data=body, headers=headers) as r:
            if r.status != 202:
                raise SystemExit(f"{r.status}: {await r.text()}")
            await r.read()
        latencies.append(time.perf_counter() - t0)


async def row(url: str, clients: int, events: int, db: str) -> tuple[int, float, float, float, int]:
    import aiohttp

    before = await stored(db)
    latencies: list[float] = []
    per = events // clients
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http, url, per, latencies) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    done = per * clients
    return (
        done,
        done / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(0.99 * len(latencies))] * 1000,
        await stored(db) - before,
    )


async def stored(db: str) -> int:
    if db.startswith("postgresql://"):
        import asyncpg

        con = await asyncpg.connect(db)
        try:
            return int(await con.fetchval("SELECT count(*) FROM intake"))
        finally:
            await con.close()
    with contextlib.closing(sqlite3.connect(db)) as con:
        return int(con.execute("SELECT count(*) FROM intake").fetchone()[0])


async def rows_for(database: str, folder: Path, args: argparse.Namespace) -> list[tuple[object, ...]]:
    proc, url = await start_bot(folder, database)
    results: list[tuple[object, ...]] = []
    try:
        for clients in args.clients:
            results.append((clients, *await row(url, clients, args.events, database)))
    finally:
        proc.terminate()
        await proc.wait()
    return results


async def main_async(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "sqlite" in args.backend:
            results += [("SQLite", *r) for r in await rows_for(str(folder / "bench.db"), folder, args)]
        if "postgresql" in args.backend:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from pgserver import pg_bin, running_postgres

            bindir = pg_bin()
            if bindir is None:
                raise SystemExit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
            with running_postgres(bindir, fsync=True) as pg:
                results += [("PostgreSQL", *r) for r in await rows_for(pg.new_database(), folder, args)]
    from rich.console import Console
    from rich.table import Table

    t = Table(title="POST /events → 202 after a durable commit (personae run, null adapter)")
    for col in ("database", "clients", "events", "accepted/s", "p50 ms", "p99 ms", "rows stored"):
        t.add_column(col, justify="right")
    for backend, clients, done, rate, p50, p99, rows in results:
        t.add_row(backend, str(clients), f"{done:,}", f"{rate:,.0f}", f"{p50:.2f}", f"{p99:.2f}", f"{rows:,}")
    Console(width=max(Console().width, 100)).print(t)
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPU(s)")
    if any(done != rows for _, _, done, _, _, _, rows in results):
        raise SystemExit("a 202 without a stored row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients per row")
    parser.add_argument("--events", type=int, default=3000, help="events per row")
    parser.add_argument(
        "--backend", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"], help="databases"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
