"""The Discord adapter end to end: discord.py, unmodified, against a fake REST API and gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from fakes.discord_api import DEFAULT_AUTHOR_ID, FakeChannel, FakeDiscord, FakeGuild, FakeUser
from personae import Event
from personae.adapters.base import AdapterConfig
from personae.adapters.discord import DiscordAdapter
from personae.app.runtime import Bot, BotOptions
from personae.language.loader import load_personas
from personae.storage.store import Store

TOKEN = "TEST.DISCORD.secret-token-do-not-leak"
T0 = datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)
GUILD = 9_000_000_000_000_000_001
GENERAL = 9_000_000_000_000_000_010
OTHER = 9_000_000_000_000_000_011
FORBIDDEN = 9_000_000_000_000_000_012
BROADCAST = [9_000_000_000_000_000_100 + i for i in range(30)]
ADMIN = 9_100_000_000_000_000_001
BOT_ID = 9_200_000_000_000_000_001

GUILD_SPEC = FakeGuild(
    GUILD,
    "Mission Control",
    channels=(
        FakeChannel(GENERAL, "general"),
        FakeChannel(OTHER, "off-topic"),
        FakeChannel(FORBIDDEN, "flight-directors", forbidden=True),
        *(FakeChannel(c, f"news-{i}") for i, c in enumerate(BROADCAST)),
    ),
    members=(FakeUser(DEFAULT_AUTHOR_ID, "earthling"), FakeUser(ADMIN, "flight-director")),
)


@contextlib.asynccontextmanager
async def discord_bot(persona_dir, store, **fake_options) -> AsyncIterator[tuple[FakeDiscord, Bot, DiscordAdapter]]:
    async with FakeDiscord(TOKEN, bot_user_id=BOT_ID, guilds=[GUILD_SPEC], **fake_options) as fake:
        with fake.patch_discord():
            config = AdapterConfig(
                "dc",
                "lander",
                channels=(str(GENERAL),),
                admins=(str(ADMIN),),
                options={"token_env": "DC_TOKEN", "guild_ready_timeout": 0.1, "ready_timeout": 10},
            )
            adapter = DiscordAdapter.create(config, {"DC_TOKEN": TOKEN})
            bot = Bot(load_personas([persona_dir]), [adapter], store=store, options=BotOptions(seed=1))
            await bot.start(schedules=False)
            try:
                yield fake, bot, adapter
            finally:
                await bot.stop()


@pytest.fixture
async def store(tmp_path):
    s = await Store(tmp_path / "dc.db").open()
    yield s
    await s.close()


async def test_command_is_answered_in_the_channel_as_a_reply(persona_dir, store):
    async with discord_bot(persona_dir, store) as (fake, _bot, _):
        asked = await fake.inject_message(GENERAL, "!status")
        [sent] = await fake.wait_for_sent(1)
        await fake.inject_message(GENERAL, "/echo slash works too")
        await fake.wait_for_sent(2)
    assert (sent.channel_id, sent.content) == (GENERAL, "Phase cruise, battery 100%.")
    assert sent.reference_id == asked
    assert fake.sent[1].content == "You said: slash works too"


async def test_mention_keyword_and_quiet_ambient_talk(persona_dir, store):
    async with discord_bot(persona_dir, store) as (fake, _bot, _):
        await fake.inject_message(GENERAL, f"<@{BOT_ID}> how far is Mars?")
        await fake.inject_message(GENERAL, "just chatting about lunch")  # no rule: no fallback here
        await fake.inject_message(GENERAL, "La Comète is pretty")
        await fake.inject_message(GENERAL, f"<@{BOT_ID}>")  # a bare mention does get the fallback
        await fake.wait_for_sent(3)
        await asyncio.sleep(0.3)
    assert [m.content for m in fake.sent] == ["Mars is far.", "Comets! Question 1.", "I'm only a small lander."]


async def test_silent_outside_its_channels_but_answers_dms(persona_dir, store):
    async with discord_bot(persona_dir, store) as (fake, _bot, _):
        await fake.inject_message(OTHER, "!status")
        await fake.inject_message(OTHER, f"<@{BOT_ID}> hello?")
        await fake.inject_message(9_300_000_000_000_000_001, "!status")  # a DM channel
        await fake.wait_for_sent(1)
        await asyncio.sleep(0.3)
    assert [(m.channel_id, m.content) for m in fake.sent] == [
        (9_300_000_000_000_000_001, "Phase cruise, battery 100%.")
    ]
    statuses = [
        r[0]
        for r in sqlite3.connect(store.path).execute(
            "SELECT status FROM interactions WHERE direction = 'in' ORDER BY id"
        )
    ]
    assert statuses == ["ignored: outside", "ignored: outside", "ok"]


async def test_echoed_everyone_pings_nobody(persona_dir, store):
    async with discord_bot(persona_dir, store) as (fake, _bot, _):
        await fake.inject_message(GENERAL, f"!echo @everyone @here <@{ADMIN}> look")
        [sent] = await fake.wait_for_sent(1)
    # User text is escaped as Markdown (shown literally) *and* allowed_mentions forbids pings.
    assert sent.content == f"You said: \\@everyone \\@here \\<\\@{ADMIN}\\> look"
    assert sent.mention_everyone is False
    assert sent.pinged_roles == frozenset()
    # Only the author of the message it replies to is notified; the echoed user mention pings no one.
    assert sent.pinged == frozenset({DEFAULT_AUTHOR_ID})
    assert sent.allowed_mentions == {"parse": [], "replied_user": True}


async def test_gateway_drop_mid_broadcast_delivers_every_message_once(persona_dir, store):
    async with discord_bot(persona_dir, store, global_rate=50) as (fake, bot, _adapter):
        await bot.subscribe("dc", [str(c) for c in BROADCAST])
        await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="b1")))
        await fake.wait_for_sent(5)
        await fake.drop_gateway(resumable=True)
        asked = await fake.inject_message(GENERAL, "!status")  # waits for the resumed session
        await fake.wait_resumed(1, timeout=15)
        await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="b2")))
        await fake.drop_gateway(resumable=False)
        await bot.drain()
        await fake.wait_until(lambda: any(m.reference_id == asked for m in fake.sent), timeout=15)
        await fake.wait_ready(2, timeout=20)  # discord.py waits ~5 s before a fresh IDENTIFY
    counts = Counter((m.channel_id, m.content) for m in fake.sent)
    expected = {(c, t) for c in [GENERAL, *BROADCAST] for t in ("Battery at 90%.", "Battery at 80%.")}
    assert expected <= set(counts)
    assert set(counts.values()) == {1}
    assert fake.identifies >= 2  # the non-resumable drop forced a fresh IDENTIFY


async def test_rate_limit_buckets_are_honoured(persona_dir, store):
    async with discord_bot(persona_dir, store, route_limit=(2, 1.0)) as (fake, bot, _):
        fake.fail_next("429", 1, retry_after=0.5)
        for i in range(5):
            await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key=f"r{i}")))
        await bot.drain()
    assert [m.content for m in fake.sent] == [f"Battery at {90 - 10 * i}%." for i in range(5)]
    assert fake.count_429 == 1  # the injected one; pacing kept the bucket from ever running dry
    assert fake.count_repeated_429 == 0


async def test_forbidden_channel_is_reported_once_and_skipped(persona_dir, store, caplog):
    async with discord_bot(persona_dir, store) as (fake, bot, _):
        await bot.subscribe("dc", [str(FORBIDDEN)])
        for i in range(3):
            await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key=f"f{i}")))
        await bot.drain()
    tries = [r for r in fake.requests if r.path.endswith(f"/channels/{FORBIDDEN}/messages")]
    assert len(tries) == 1 and tries[0].status == 403
    assert [m.content for m in fake.sent if m.channel_id == GENERAL] == [
        "Battery at 90%.",
        "Battery at 80%.",
        "Battery at 70%.",
    ]
    gone = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(gone) == 1


async def test_token_never_leaks(persona_dir, store, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    async with discord_bot(persona_dir, store, fault_ratio=0.3, fault_kinds=("500", "502", "503")) as (fake, bot, _):
        await bot.subscribe("dc", [str(c) for c in BROADCAST[:10]])
        await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="t")))
        await fake.inject_message(GENERAL, "!status")
        await bot.drain()
        await fake.wait_for_sent(12, timeout=20)
    await store.flush()
    secret = TOKEN.split(".", 2)[2]
    out = capsys.readouterr()
    assert secret not in caplog.text and secret not in out.out + out.err
    con = sqlite3.connect(store.path)
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in con.execute(f"SELECT * FROM {table}"):
            assert secret not in " ".join(map(str, row)), table


async def test_admin_commands_only_for_admins(persona_dir, store):
    async with discord_bot(persona_dir, store) as (fake, bot, _):
        await fake.inject_message(GENERAL, "!emit touchdown site=Nowhere")
        await fake.wait_for_sent(1)
        assert bot.engine.state("lander")["phase"] == "cruise"
        await fake.inject_message(GENERAL, "!emit touchdown site=Agilkia", author_id=ADMIN)
        await fake.wait_until(lambda: any(m.content == "Event 'touchdown' raised." for m in fake.sent))
    assert fake.sent[0].content == "Sorry, only the bot's admins can do that."
    assert bot.engine.state("lander")["location"] == "Agilkia"
