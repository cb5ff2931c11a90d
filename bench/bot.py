"""The whole reply path: incoming → engine → outbox → dispatcher → null adapter → outbox marked, log on.

`bench/realistic.py` times the engine alone. A running bot does more for each
message: the reply is written to the outbox before it is sent, the dispatcher
sends it through the adapter, and the outcome is written back. This script
feeds the same realistic messages (see `bench/realistic.py`) to a real
:class:`~personae.app.runtime.Bot` with a null adapter and a real SQLite file,
waits until every reply is marked sent, then checks the database: one sent
outbox row and one 'in' and one 'out' log row per message. It also counts the
outbox statements (``outbox_add`` and ``outbox_mark_many`` calls), since rows
written a few at a time are what a full path pays for.

    python bench/bot.py                  # 1,000 rules, 3 rounds of 20,000 messages
    python bench/bot.py --rules 10000 --messages 50000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realistic import Messages, Personae, persona_yaml, trigger_set, vocabulary

from personae.adapters.base import AdapterConfig
from personae.adapters.null import NullAdapter
from personae.app.cli import SWITCH_INTERVAL
from personae.app.runtime import Bot, BotOptions
from personae.engine.messages import Chat, Incoming, User
from personae.language.loader import parse_persona
from personae.storage.store import Store


@dataclass(frozen=True, slots=True)
class Result:
    """One round of the full path."""

    messages: int
    seconds: float
    cpu: float
    adds: int
    marks: int


class Counting:
    """Counts the outbox statements a store is asked for (calls, not rows)."""

    def __init__(self, store: Store) -> None:
        self.adds = 0
        self.marks = 0
        add, mark = store.outbox_add, store.outbox_mark_many

        async def counted_add(items: Any) -> None:
            self.adds += 1
            await add(items)

        async def counted_mark(outcomes: Any) -> None:
            self.marks += 1
            await mark(outcomes)

        store.outbox_add = counted_add  # type: ignore[method-assign]
        store.outbox_mark_many = counted_mark  # type: ignore[method-assign]


async def full_path(yaml: str, texts: Sequence[str], db: Path) -> Result:
    persona = parse_persona(yaml, "bench.yaml")
    adapter = NullAdapter(AdapterConfig("null-bench", "bench"))
    store = await Store(db).open()
    counting = Counting(store)
    bot = Bot({"bench": persona}, [adapter], store=store, options=BotOptions(run="bench"))
    chats = [Chat(str(i)) for i in range(50)]
    users = [User(str(i), f"user{i}") for i in range(50)]
    await bot.start(schedules=False)
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    for i, text in enumerate(texts):
        await bot.on_message(
            Incoming("bench", "null", chats[i % 50], users[i % 50], text, str(i), "benchbot", adapter="null-bench")
        )
        if i % 50 == 49:
            await asyncio.sleep(0)  # a bot waits on its network between batches of updates
    await bot.drain()
    await store.flush()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    await bot.stop()
    await store.close()
    with sqlite3.connect(db) as con:
        sent = con.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
        other = con.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0]
        ins, outs = con.execute("SELECT sum(direction = 'in'), sum(direction = 'out') FROM interactions").fetchone()
    if (sent, other, ins, outs, adapter.count) != (len(texts), 0, len(texts), len(texts), len(texts)):
        sys.exit(
            f"incomplete: {len(texts):,} messages, {sent:,} sent and {other:,} other outbox rows, "
            f"{adapter.count:,} delivered, {ins:,} in and {outs:,} out log rows"
        )
    return Result(len(texts), seconds, cpu, counting.adds, counting.marks)


async def engine_only(yaml: str, texts: Sequence[str], db: Path) -> tuple[float, float]:
    p = Personae(yaml, db)
    await p.open()
    try:
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, len(texts), 50):
            await p.answer(texts[start : start + 50])
            await asyncio.sleep(0)
        await p.flush()
        return len(texts) / (time.perf_counter() - t0), len(texts) / (time.process_time() - c0)
    finally:
        await p.close()


async def main_async(args: argparse.Namespace) -> None:
    vocab = vocabulary()
    rules = trigger_set(args.rules, vocab)
    yaml = persona_yaml(rules)
    source = Messages(rules, vocab, seed=args.rules)
    full: list[Result] = []
    engine: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            texts = source.draw(args.messages)
            print(f"· round {r + 1}: {len(texts):,} new messages", file=sys.stderr, flush=True)
            engine.append(await engine_only(yaml, texts, Path(d) / f"engine-{r}.db"))
            full.append(await full_path(yaml, texts, Path(d) / f"bot-{r}.db"))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"the whole reply path, log on, {args.rules:,} rules (every round checked in the database)")
    for col in (
        "round",
        "messages",
        "engine only /s",
        "full path /s",
        "full / engine",
        "full path /cpu-s",
        "rows per outbox write",
        "rows per mark",
    ):
        table.add_column(col, justify="right")
    for i, (res, (e_wall, _)) in enumerate(zip(full, engine, strict=True), 1):
        rate = res.messages / res.seconds
        table.add_row(
            str(i),
            f"{res.messages:,}",
            f"{e_wall:,.0f}",
            f"{rate:,.0f}",
            f"{rate / e_wall:.0%}",
            f"{res.messages / res.cpu:,.0f}",
            f"{res.messages / max(res.adds, 1):,.1f}",
            f"{res.messages / max(res.marks, 1):,.1f}",
        )
    med_full = statistics.median(r.messages / r.seconds for r in full)
    med_engine = statistics.median(e for e, _ in engine)
    table.add_row("median", "", f"{med_engine:,.0f}", f"{med_full:,.0f}", f"{med_full / med_engine:.0%}", "", "", "")
    Console(width=max(Console().width, 120)).print(table)
    print(
        f"Python {platform.python_version()} on {platform.machine()}; command: python bench/bot.py "
        f"--rules {args.rules} --messages {args.messages} --rounds {args.rounds}"
    )


def main() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)  # as the personae CLI does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1_000, help="rules in the persona (default 1,000)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per round (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with new messages (default 3)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
