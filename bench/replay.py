"""Replay throughput: a synthetic timeline at --speed max through the whole runtime.

Engine → outbox (SQLite, write-before-send) → dispatcher → null adapter, with
the interaction log on. Prints one table: wall time, CPU time of the whole
process (the event loop and SQLite's thread), and the event loop's own CPU per
event (the main thread's, which bounds the rate). Usage:

    python bench/replay.py               # 100,000 events
    python bench/replay.py --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from personae.adapters.base import AdapterConfig
from personae.adapters.null import NullAdapter
from personae.app.cli import SWITCH_INTERVAL
from personae.app.replay import replay
from personae.app.runtime import Bot, BotOptions
from personae.language.loader import parse_persona
from personae.storage.store import Store
from personae.timing.clock import VirtualClock
from personae.timing.timeline import Timeline, TimelineEvent

LANDER = """\
persona: lander
name: Lander
state: {phase: cruise, battery: 100, count: 0}
events:
  tick:
    say: ["Tick {{ event.n }} at {{ state.phase }}.", "Still here, tick {{ event.n }}."]
    set: {count: "{{ state.count + 1 }}"}
  milestone:
    say: "Milestone {{ event.n }}! Battery {{ state.battery }}%."
    emit: cheer
"""
ORBITER = """\
persona: orbiter
name: Orbiter
events:
  cheer:
    say: "Well done, little one."
"""


def synthetic(n: int) -> Timeline:
    start = datetime(2004, 3, 2, tzinfo=UTC)
    events = tuple(
        TimelineEvent(start + timedelta(minutes=i), "milestone" if i % 10 == 0 else "tick", {"n": i}, None, i + 1, i)
        for i in range(n)
    )
    return Timeline("synthetic", "Synthetic", "<memory>", events)


async def run(n: int, db: Path) -> dict[str, float]:
    personas = {"lander": parse_persona(LANDER), "orbiter": parse_persona(ORBITER)}
    adapters = [NullAdapter(AdapterConfig(f"null-{p}", p)) for p in personas]
    timeline = synthetic(n)
    store = await Store(db).open()
    clock = VirtualClock(timeline.start, None)
    bot = Bot(personas, adapters, store=store, clock=clock, options=BotOptions(run="bench", persist_state=False))
    bot.outlet.linger = 0.02
    await store.replay_start("bench", timeline.id, {})
    t0, cpu0, loop0 = time.perf_counter(), time.process_time(), time.thread_time()
    await bot.start(schedules=False)
    await replay(bot, timeline, run="bench", schedules=False)
    await bot.stop()
    await store.close()
    elapsed = time.perf_counter() - t0
    # CPU time as well: the machine is shared, and wall time also counts other processes' turns.
    cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop0
    con = sqlite3.connect(db)
    sent = con.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
    logged = con.execute("SELECT count(*) FROM interactions").fetchone()[0]
    delivered = sum(a.count for a in adapters)
    assert sent == delivered, (sent, delivered)
    return {
        "events": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "cpu": cpu,
        "cpu_rate": n / cpu,
        "loop_us": loop_cpu / n * 1e6,
        "messages": delivered,
        "log_rows": logged,
    }


def main() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)  # as the personae CLI does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="timeline length (default: 100,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        r = asyncio.run(run(args.events, Path(d) / "bench.db"))
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="personae replay --speed max (engine + outbox + log + dispatcher → null adapter)")
        cols = ("events", "messages sent", "log rows", "seconds", "events/s", "CPU s", "events/CPU-s", "loop µs/event")
        for col in (*cols, "target"):
            t.add_column(col, justify="right")
        ok = "✓" if r["rate"] >= 20_000 else "✗"
        t.add_row(
            f"{r['events']:,}",
            f"{r['messages']:,}",
            f"{r['log_rows']:,}",
            f"{r['seconds']:.2f}",
            f"{r['rate']:,.0f}",
            f"{r['cpu']:.2f}",
            f"{r['cpu_rate']:,.0f}",
            f"{r['loop_us']:.1f}",
            f"≥ 20,000 {ok}",
        )
        Console(width=max(Console().width, 130)).print(t)
    except ImportError:  # pragma: no cover
        print(r)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}; command: python bench/replay.py "
        f"--events {args.events}"
    )


if __name__ == "__main__":
    main()
