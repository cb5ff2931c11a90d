"""Reply latency under a steady open-loop load, log on and off.

Messages arrive on a fixed schedule (default 5,000 per second) whether or not
the engine has kept up: each one's latency is the time from its scheduled
arrival to its reply, so a stall (a log flush holding the event loop, a slow
rule) shows up in the tail for every message that queued behind it, as it
would for users. Messages come from the realistic set of `bench/realistic.py`.
Prints p50, p99, p99.9 and the maximum, in milliseconds.

    python bench/latency.py                          # 5,000 msg/s for 10 s, 1,000 rules
    python bench/latency.py --rate 2000 --seconds 30 --rules 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sys
import tempfile
from pathlib import Path

from realistic import Messages, Personae, persona_yaml, trigger_set, vocabulary

from personae.app.cli import SWITCH_INTERVAL


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run(p: Personae, texts: list[str], rate: float) -> list[float]:
    """Latencies in ms; message i is due at start + i / rate."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    gc.collect()
    start = loop.time() + 0.05
    i = 0
    while i < len(texts):
        now = loop.time()
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # Answer everything that is due, then yield once (the loop would poll the network here).
        while i < len(texts) and start + i / rate <= loop.time():
            await p.answer(texts[i : i + 1])
            latencies.append((loop.time() - (start + i / rate)) * 1000)
            i += 1
        await asyncio.sleep(0)
    await p.flush()
    return latencies


async def main_async(args: argparse.Namespace) -> None:
    vocab = vocabulary()
    rules = trigger_set(args.rules, vocab)
    yaml = persona_yaml(rules)
    source = Messages(rules, vocab, seed=7)
    n = int(args.rate * args.seconds)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, db in (("log off", None), ("log on", Path(d) / "latency.db")):
            p = Personae(yaml, db)
            await p.open()
            try:
                print(f"· {label}: {n:,} messages at {args.rate:,.0f}/s…", file=sys.stderr, flush=True)
                lat = sorted(await run(p, source.draw(n), args.rate))
            finally:
                await p.close()
            rows.append((label, lat))
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"reply latency, open loop at {args.rate:,.0f} msg/s for {args.seconds:g} s, {args.rules:,} rules"
    )
    for col in ("log", "messages", "p50 ms", "p99 ms", "p99.9 ms", "max ms"):
        table.add_column(col, justify="right")
    for label, lat in rows:
        table.add_row(
            label,
            f"{len(lat):,}",
            f"{percentile(lat, 0.5):.2f}",
            f"{percentile(lat, 0.99):.2f}",
            f"{percentile(lat, 0.999):.2f}",
            f"{lat[-1]:.2f}",
        )
    Console(width=max(Console().width, 100)).print(table)
    print(
        f"Python {platform.python_version()} on {platform.machine()}; command: python bench/latency.py "
        f"--rate {args.rate:g} --seconds {args.seconds:g} --rules {args.rules}"
    )


def main() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)  # as the personae CLI does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5_000, help="messages per second (default 5,000)")
    parser.add_argument("--seconds", type=float, default=10, help="duration (default 10)")
    parser.add_argument("--rules", type=int, default=1_000, help="rules in the persona (default 1,000)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
