"""Broadcast fan-out through the real client libraries to fake platform servers.

One event is broadcast to many subscribed chats through the full runtime
(engine → outbox → dispatcher → adapter → python-telegram-bot / discord.py →
HTTP on 127.0.0.1). The fake server runs in a child process, so it does not
share the CPU core of the bot it measures. The last row runs three real
``personae run`` workers on one PostgreSQL server started for the run (fsync
on): a live timeline event fires in all three, and they share the broadcast
(one sends at a time, as one bot's limits require). Prints one table:

    python bench/fanout.py                       # Telegram 10,000 chats at 300/s, Discord 200 channels at 50/s
    python bench/fanout.py --telegram-chats 2000 --discord-channels 100 --worker-chats 2000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from personae.app.cli import SWITCH_INTERVAL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PERSONA = """\
persona: probe
name: Probe
events:
  news:
    say: "Big news from the comet: {{ event.what }}!"
"""
TG_TOKEN = "111111:BENCH-not-a-real-token"
DC_TOKEN = "BENCH.DISCORD.not-a-real-token"
GUILD = 7_000_000_000_000_000_001


# --------------------------------------------------------------------------- fake servers in a child process


def _serve(kind: str, options: dict[str, Any], conn: Any) -> None:
    async def main() -> None:
        if kind == "telegram":
            from fakes.telegram_api import FakeTelegram

            fake: Any = FakeTelegram(TG_TOKEN, **options)
            await fake.start()
            conn.send({"base_url": fake.base_url, "base_file_url": fake.base_file_url})
        else:
            from fakes.discord_api import FakeChannel, FakeDiscord, FakeGuild

            channels = options.pop("channels")
            guild = FakeGuild(GUILD, "Bench", channels=tuple(FakeChannel(c, f"c{i}") for i, c in enumerate(channels)))
            fake = FakeDiscord(DC_TOKEN, guilds=[guild], **options)
            await fake.start()
            conn.send({"rest_base": fake.rest_base, "gateway_url": fake.gateway_url})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "stop"
        stats = {"count_429": fake.count_429, "sent": len(fake.sent)}
        if kind == "telegram" and len(fake.sent) > 1:
            # As the fake saw it: the workers' row cannot time sends inside the bot.
            stats["rate"] = (len(fake.sent) - 1) / (fake.sent[-1].time - fake.sent[0].time)
        if kind == "discord":
            stats["repeated_429"] = fake.count_repeated_429
        conn.send(stats)
        await fake.stop()

    asyncio.run(main())


class Server:
    """A fake platform server running in a child process."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.parent, child = mp.Pipe()
        self.proc = mp.get_context("fork").Process(target=_serve, args=(kind, options, child), daemon=True)
        self.proc.start()
        self.info: dict[str, Any] = self.parent.recv()

    def stop(self) -> dict[str, Any]:
        self.parent.send("stop")
        stats: dict[str, Any] = self.parent.recv()
        self.proc.join(10)
        return stats


# --------------------------------------------------------------------------- one run


async def broadcast(adapter: Any, chats: list[str], db: Path) -> tuple[int, float]:
    from personae import Event
    from personae.app.runtime import Bot, BotOptions
    from personae.language.loader import parse_persona
    from personae.storage.store import Store

    done: list[float] = []
    original = adapter.send

    async def timed(delivery: Any) -> Any:
        receipt = await original(delivery)
        done.append(time.monotonic())
        return receipt

    adapter.send = timed
    store = await Store(db).open()
    bot = Bot({"probe": parse_persona(PERSONA)}, [adapter], store=store, options=BotOptions(seed=1))
    await bot.start(schedules=False)
    try:
        await bot.subscribe(adapter.name, chats)
        await bot.deliver(await bot.engine.dispatch(Event("news", datetime.now(UTC), {"what": "touchdown"}, key="k")))
        await bot.drain()
    finally:
        await bot.stop()
        await store.close()
    rate = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else 0.0
    return len(done), rate


def run_telegram(chats: int, limit: int, tmp: Path) -> dict[str, Any]:
    from personae.adapters.base import AdapterConfig
    from personae.adapters.telegram import TelegramAdapter

    server = Server("telegram", global_rate=limit, per_chat_rate=1)
    config = AdapterConfig(
        "tg",
        "probe",
        options={
            "token_env": "T",
            "base_url": server.info["base_url"],
            "base_file_url": server.info["base_file_url"],
            "global_rate": limit,
            "concurrency": 12,  # httpcore scans its whole pool per request: more slots cost CPU
            "poll_timeout": 1,
        },
    )
    adapter = TelegramAdapter.create(config, {"T": TG_TOKEN})
    try:
        _sent, rate = asyncio.run(broadcast(adapter, [str(100_000 + i) for i in range(chats)], tmp / "tg.db"))
    finally:
        stats = server.stop()
    return {
        "platform": "Telegram",
        "chats": chats,
        "limit": limit,
        "sent": stats["sent"],
        "rate": rate,
        "count_429": stats["count_429"],
        "repeated": "-",
    }


def run_discord(channels: int, limit: int, tmp: Path) -> dict[str, Any]:
    import discord.gateway
    import discord.http
    import yarl

    from personae.adapters.base import AdapterConfig
    from personae.adapters.discord import DiscordAdapter

    ids = [7_000_000_000_000_100_000 + i for i in range(channels)]
    server = Server("discord", channels=list(ids), global_rate=limit, route_limit=(5, 5.0))
    discord.http.Route.BASE = server.info["rest_base"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.info["gateway_url"])
    config = AdapterConfig(
        "dc",
        "probe",
        options={"token_env": "D", "global_rate": limit, "concurrency": 16, "guild_ready_timeout": 0.1},
    )
    adapter = DiscordAdapter.create(config, {"D": DC_TOKEN})
    try:
        _sent, rate = asyncio.run(broadcast(adapter, [str(c) for c in ids], tmp / "dc.db"))
    finally:
        stats = server.stop()
    return {
        "platform": "Discord",
        "chats": channels,
        "limit": limit,
        "sent": stats["sent"],
        "rate": rate,
        "count_429": stats["count_429"],
        "repeated": stats["repeated_429"],
    }


WORKER_TOML = """\
[bot]
personas = ["personas/*.yaml"]
database = "{url}"
reload = false

[[adapters]]
name = "tg"
type = "telegram"
persona = "probe"
token_env = "T"
base_url = "{base_url}"
base_file_url = "{base_file_url}"
mode = "webhook"
webhook_url = "https://bot.example/tg"
port = {port}
global_rate = {limit}
concurrency = 12

[[timelines]]
file = "news.yaml"
mode = "live"
"""


def run_telegram_workers(chats: int, limit: int, tmp: Path, workers: int = 3, margin: float = 30.0) -> dict[str, Any]:
    """Three ``personae run`` processes on one PostgreSQL; a live timeline event broadcast to ``chats``."""
    import os
    import signal
    import subprocess
    from datetime import timedelta

    from pgserver import pg_bin, running_postgres

    from fakes.telegram_api import unused_tcp_port
    from personae.storage.postgres import PostgresStore

    bindir = pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    with running_postgres(bindir, fsync=True) as pg:
        url = pg.new_database()

        async def prepare() -> None:
            async with PostgresStore(url) as store:
                await store.subscribe_many("tg", [str(100_000 + i) for i in range(chats)], "probe")

        asyncio.run(prepare())
        (tmp / "personas").mkdir(exist_ok=True)
        (tmp / "personas" / "probe.yaml").write_text(PERSONA, encoding="utf-8")
        at = (datetime.now(UTC) + timedelta(seconds=margin)).isoformat()
        (tmp / "news.yaml").write_text(
            f'timeline: news\ncast: [probe]\nevents:\n  - {{at: "{at}", event: news, data: {{what: touchdown}}}}\n',
            encoding="utf-8",
        )
        server = Server("telegram", global_rate=limit, per_chat_rate=1)
        procs = []
        try:
            for n in range(workers):
                config = tmp / f"worker-{n}.toml"
                config.write_text(
                    WORKER_TOML.format(url=url, port=unused_tcp_port(), limit=limit, **server.info), encoding="utf-8"
                )
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "personae", "run", "--config", str(config)],
                        cwd=tmp,
                        env={**os.environ, "T": TG_TOKEN},
                        stderr=subprocess.DEVNULL,
                    )
                )

            async def wait_sent() -> None:
                async with PostgresStore(url) as store:
                    while (await store.outbox_counts()).get("sent", 0) < chats:
                        if any(p.poll() is not None for p in procs):
                            raise SystemExit("a worker exited early")
                        await asyncio.sleep(0.5)

            asyncio.run(wait_sent())
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            stats = server.stop()
    return {
        "platform": f"Telegram, {workers} workers (PostgreSQL)",
        "chats": chats,
        "limit": limit,
        "sent": stats["sent"],
        "rate": stats.get("rate", 0.0),
        "count_429": stats["count_429"],
        "repeated": "-",
    }


def main() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)  # as the personae CLI does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--telegram-chats", type=int, default=10_000, help="subscribed chats (default 10,000; 0: skip)")
    parser.add_argument("--telegram-limit", type=int, default=300, help="global msg/s: Telegram's 30 ×10 (default)")
    parser.add_argument("--discord-channels", type=int, default=200, help="subscribed channels (default 200; 0: skip)")
    parser.add_argument("--discord-limit", type=int, default=50, help="global requests/s (Discord's 50, default)")
    parser.add_argument("--worker-chats", type=int, default=10_000, help="chats for 3 workers on PostgreSQL (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = []
        if args.telegram_chats:
            rows.append(run_telegram(args.telegram_chats, args.telegram_limit, Path(d)))
        if args.discord_channels:
            rows.append(run_discord(args.discord_channels, args.discord_limit, Path(d)))
        if args.worker_chats:
            rows.append(run_telegram_workers(args.worker_chats, args.telegram_limit, Path(d)))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="personae fan-out: one event broadcast through the real client library to a fake server")
    for col in (
        "platform",
        "chats",
        "delivered",
        "limit (msg/s)",
        "achieved (msg/s)",
        "share of limit",
        "429s",
        "repeated 429s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["platform"],
            f"{r['chats']:,}",
            f"{r['sent']:,}",
            f"{r['limit']:,}",
            f"{r['rate']:,.1f}",
            f"{100 * r['rate'] / r['limit']:.1f} %",
            str(r["count_429"]),
            str(r["repeated"]),
        )
    Console(width=max(Console().width, 130)).print(table)
    print(
        f"Python {platform.python_version()}, {platform.machine()}; command: python bench/fanout.py "
        f"--telegram-chats {args.telegram_chats} --discord-channels {args.discord_channels}"
        f" --worker-chats {args.worker_chats} --telegram-limit {args.telegram_limit}"
    )


if __name__ == "__main__":
    main()
