"""Broadcast fan-out through the real client libraries to fake platform servers.

One event is broadcast to many subscribed chats through the full runtime
(engine → outbox → dispatcher → adapter → python-telegram-bot / discord.py →
HTTP on 127.0.0.1). On Mastodon and Bluesky, many mentions arrive at once and
each is answered in its thread (notifications → engine → outbox → dispatcher
→ Mastodon.py / atproto → HTTP). The fake server runs in a child process, so
it does not share the CPU core of the bot it measures. Prints one table:

    python bench/fanout.py                       # all four platforms, as below
    python bench/fanout.py --telegram-chats 2000 --discord-channels 100 --mentions 200
    python bench/fanout.py --only mastodon --only bluesky

Telegram's 30 messages/s is scaled ×10 (300/s). Mastodon's and Bluesky's
budgets are counted over minutes or hours, longer than a benchmark, so they
are scaled ×30 in rate *and* their windows shrunk so that a run spans
several of them (and a pace above the budget meets 429s):

- Mastodon, 300 requests per 5 minutes (1/s) → 300 requests per 10 s
  (30/s); the adapter is told ``requests_per_5min = 9000`` and polls every
  5 s (its default), and the polls spend the same budget as the replies.
- Bluesky, 5,000 points per hour at 3 points a post (0.46 posts/s) → 500
  points per 12 s (13.9 posts/s); the adapter is told
  ``points_per_hour = 150000``.

The workers row runs three real ``personae run`` workers on one PostgreSQL
server started for the run (fsync on): a live timeline event fires in all
three, and they share the broadcast (one sends at a time, as one bot's
limits require): ``--worker-chats 2000`` (0: skip).
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
REPLYING = """\
persona: probe
name: Probe
fallback:
  say: "Thanks for writing to the comet!"
"""
TG_TOKEN = "111111:BENCH-not-a-real-token"
MASTODON_TOKEN = "BENCH-mastodon-not-a-real-token"
BSKY_HANDLE = "probe.bsky.social"
BSKY_PASSWORD = "bench-app-password"
DC_TOKEN = "BENCH.DISCORD.not-a-real-token"
GUILD = 7_000_000_000_000_000_001


# --------------------------------------------------------------------------- fake servers in a child process


def _serve(kind: str, options: dict[str, Any], conn: Any) -> None:
    async def main() -> None:
        if kind in ("mastodon", "bluesky"):
            await _serve_social(kind, options, conn)
            return
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


async def _serve_social(kind: str, options: dict[str, Any], conn: Any) -> None:
    """A fake Mastodon or Bluesky: on ("mentions", N), N accounts mention the bot at once; on "stop", stats."""
    from fakes.bluesky_api import FakeBluesky
    from fakes.mastodon_api import FakeMastodon

    fake: Any
    if kind == "mastodon":
        fake = FakeMastodon(MASTODON_TOKEN, **options)
    else:
        fake = FakeBluesky(BSKY_HANDLE, BSKY_PASSWORD, **options)
    async with fake:
        conn.send({"base_url": fake.base_url})
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
            for i in range(command[1]):
                if kind == "mastodon":
                    fake.inject_mention(fake.account(f"user{i}"), f"@{fake.me.username} hello comet!")
                else:
                    fake.inject_post(fake.actor(f"user{i}.bsky.social"), f"@{BSKY_HANDLE} hello comet!")
            conn.send(len(fake.notifications))
        conn.send({"count_429": fake.throttled, "sent": len(fake.created), "requests": len(fake.requests)})


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


async def answer(adapter: Any, server: Server, mentions: int, db: Path) -> tuple[int, float]:
    """Start a bot on ``adapter``, let ``mentions`` accounts mention it at once, wait for every answer."""
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
    bot = Bot({"probe": parse_persona(REPLYING)}, [adapter], store=store, options=BotOptions(seed=1))
    await bot.start(schedules=False)
    try:
        loop = asyncio.get_running_loop()
        server.parent.send(("mentions", mentions))
        await loop.run_in_executor(None, server.parent.recv)
        deadline = time.monotonic() + 30 + mentions  # a hang guard, far above any expected duration
        while len(done) < mentions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await bot.drain()
    finally:
        await bot.stop()
        await store.close()
    rate = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else 0.0
    return len(done), rate


def run_mastodon(mentions: int, limit: int, tmp: Path) -> dict[str, Any]:
    from personae.adapters.base import AdapterConfig
    from personae.adapters.mastodon import MastodonAdapter

    window = 10.0  # five minutes shrunk 30 times
    server = Server("mastodon", rate_limit=round(limit * window), rate_window=window)
    config = AdapterConfig(
        "md",
        "probe",
        options={
            "token_env": "T",
            "base_url": server.info["base_url"],
            "requests_per_5min": limit * 300,
            # The default poll interval: polls spend the same request budget as replies.
            "poll_interval": 5,
            "concurrency": 4,
        },
    )
    adapter = MastodonAdapter.create(config, {"T": MASTODON_TOKEN})
    try:
        _answered, rate = asyncio.run(answer(adapter, server, mentions, tmp / "md.db"))
    finally:
        stats = server.stop()
    return {
        "platform": "Mastodon",
        "chats": mentions,
        "limit": limit,
        "sent": stats["sent"],
        "rate": rate,
        "count_429": stats["count_429"],
        "repeated": "-",
        "unit": "requests/s",
    }


def run_bluesky(mentions: int, points: int, tmp: Path) -> dict[str, Any]:
    from personae.adapters.base import AdapterConfig
    from personae.adapters.bluesky import POINTS_PER_CREATE, BlueskyAdapter

    window = 12.0  # an hour shrunk 300 times
    server = Server("bluesky", points_per_hour=points, hour_window=window, points_per_day=10**9)
    config = AdapterConfig(
        "bs",
        "probe",
        options={
            "handle": BSKY_HANDLE,
            "password_env": "P",
            "base_url": server.info["base_url"],
            "points_per_hour": points * 3600 / window,
            "points_per_day": 10**9,
            "poll_interval": 1,
            "concurrency": 4,
        },
    )
    adapter = BlueskyAdapter.create(config, {"P": BSKY_PASSWORD})
    try:
        _answered, rate = asyncio.run(answer(adapter, server, mentions, tmp / "bs.db"))
    finally:
        stats = server.stop()
    return {
        "platform": "Bluesky",
        "chats": mentions,
        "limit": points / POINTS_PER_CREATE / window,
        "sent": stats["sent"],
        "rate": rate,
        "count_429": stats["count_429"],
        "repeated": "-",
        "unit": "posts/s",
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
    parser.add_argument("--mentions", type=int, default=500, help="mentions at once on Mastodon and Bluesky (500)")
    parser.add_argument(
        "--mastodon-limit", type=int, default=30, help="requests/s: Mastodon's 1/s (300 per 5 min) ×30 (default)"
    )
    parser.add_argument(
        "--bluesky-points",
        type=int,
        default=500,
        help="points per 12 s: Bluesky's 5,000 per hour ×30 (default; a post costs 3)",
    )
    parser.add_argument("--only", choices=("telegram", "discord", "mastodon", "bluesky", "workers"), action="append")
    parser.add_argument("--worker-chats", type=int, default=10_000, help="chats for 3 workers on PostgreSQL (0: skip)")
    args = parser.parse_args()
    runs = {
        "telegram": lambda d: run_telegram(args.telegram_chats, args.telegram_limit, d),
        "discord": lambda d: run_discord(args.discord_channels, args.discord_limit, d),
        "mastodon": lambda d: run_mastodon(args.mentions, args.mastodon_limit, d),
        "bluesky": lambda d: run_bluesky(args.mentions, args.bluesky_points, d),
        "workers": lambda d: run_telegram_workers(args.worker_chats, args.telegram_limit, d),
    }
    with tempfile.TemporaryDirectory() as d:
        sizes = {"telegram": args.telegram_chats, "discord": args.discord_channels, "workers": args.worker_chats}
        wanted = [n for n in runs if (not args.only or n in args.only) and sizes.get(n, args.mentions) > 0]
        rows = [runs[name](Path(d)) for name in wanted]
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="personae fan-out: one event broadcast (Telegram, Discord) or mentions answered at once "
        "(Mastodon, Bluesky) through the real client library to a fake server"
    )
    for col in (
        "platform",
        "chats",
        "delivered",
        "limit",
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
            f"{r['limit']:,.1f} {r.get('unit', 'msg/s')}",
            f"{r['rate']:,.1f}",
            f"{100 * r['rate'] / r['limit']:.1f} %",
            str(r["count_429"]),
            str(r["repeated"]),
        )
    Console(width=max(Console().width, 130)).print(table)
    print(
        f"Python {platform.python_version()}, {platform.machine()}; command: python bench/fanout.py "
        f"--telegram-chats {args.telegram_chats} --discord-channels {args.discord_channels} "
        f"--mentions {args.mentions}"
        f" --worker-chats {args.worker_chats} --telegram-limit {args.telegram_limit}"
    )


if __name__ == "__main__":
    main()
