"""Per-chat and group pacing hold for every send, backlog or not, through the real adapters.

The rates are scaled up (a gap of ~0.3 s instead of Telegram's 1 s) to keep the
tests short. The assertions are lower bounds on the spacing the fakes recorded
between consecutive messages to one chat: a slow machine only makes gaps
longer, so they cannot flake that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.discord_api import FakeChannel, FakeDiscord, FakeGuild
from fakes.telegram_api import FakeTelegram
from personae.adapters.base import Adapter, AdapterConfig, Delivery, IncomingHandler, Limits, Receipt
from personae.adapters.discord import DiscordAdapter
from personae.adapters.telegram import TelegramAdapter
from personae.app.runtime import Bot, BotOptions
from personae.delivery.dispatcher import Dispatcher
from personae.language.loader import load_personas
from personae.storage.store import Store

TG_TOKEN = "987654:TEST-secret-token-do-not-leak"
DC_TOKEN = "TEST.DISCORD.secret-token-do-not-leak"
GUILD = 9_000_000_000_000_000_001
GENERAL = 9_000_000_000_000_000_010
BOT_ID = 9_200_000_000_000_000_001


@pytest.fixture
async def store(tmp_path):
    s = await Store(tmp_path / "pace.db").open()
    yield s
    await s.close()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


@contextlib.asynccontextmanager
async def telegram_bot(persona_dir, store, **options) -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TG_TOKEN, bot_username="LanderBot") as fake:
        opts = {
            "token_env": "TG_TOKEN",
            "base_url": fake.base_url,
            "base_file_url": fake.base_file_url,
            "poll_timeout": 1,
            **options,
        }
        adapter = TelegramAdapter.create(AdapterConfig("tg", "lander", (), (), opts), {"TG_TOKEN": TG_TOKEN})
        bot = Bot(load_personas([persona_dir]), [adapter], store=store, options=BotOptions(seed=1))
        await bot.start(schedules=False)
        try:
            yield fake
            await bot.drain()
        finally:
            await bot.stop()


async def test_telegram_answers_to_questions_asked_quickly_are_paced_per_chat(persona_dir, store):
    # per_chat_rate 3/s: at least ~0.34 s between two messages to one chat (0.97 headroom).
    async with telegram_bot(persona_dir, store, per_chat_rate=3) as fake:
        for n in range(5):
            fake.inject_message(42, f"/echo {n}")
            fake.inject_message(43, f"/echo {n}")
            await asyncio.sleep(0.1)
        await fake.wait_for_sent(10, timeout=20)
    for chat in (42, 43):
        sent = [m for m in fake.sent if m.chat_id == chat]
        assert [m.text for m in sent] == [f"You said: {n}" for n in range(5)]
        assert min(gaps([m.time for m in sent])) >= 0.3, gaps([m.time for m in sent])
    # Chats are paced separately: the two chats' answers interleave, neither waits for the other.
    first_of_43 = next(m.time for m in fake.sent if m.chat_id == 43)
    assert first_of_43 < [m.time for m in fake.sent if m.chat_id == 42][1]


async def test_telegram_group_limit_holds_for_commands_sent_apart(persona_dir, store):
    # 120 a minute: at least ~0.5 s between two messages to one group, though each chat may have 20/s.
    async with telegram_bot(persona_dir, store, per_chat_rate=20, group_per_minute=120) as fake:
        for n in range(3):
            fake.inject_message(-1001, f"/echo {n}", chat_type="supergroup")
            await asyncio.sleep(0.15)
        await fake.wait_for_sent(3, timeout=20)
    times = [m.time for m in fake.sent if m.chat_id == -1001]
    assert len(times) == 3
    assert min(gaps(times)) >= 0.45, gaps(times)


async def test_discord_answers_are_paced_per_channel(persona_dir, store):
    guild = FakeGuild(GUILD, "Mission Control", channels=(FakeChannel(GENERAL, "general"),))
    async with FakeDiscord(DC_TOKEN, bot_user_id=BOT_ID, guilds=[guild], route_limit=(100, 1.0)) as fake:
        with fake.patch_discord():
            options = {"token_env": "DC_TOKEN", "guild_ready_timeout": 0.1, "ready_timeout": 10, "per_chat_rate": 3}
            config = AdapterConfig("dc", "lander", channels=(str(GENERAL),), options=options)
            adapter = DiscordAdapter.create(config, {"DC_TOKEN": DC_TOKEN})
            bot = Bot(load_personas([persona_dir]), [adapter], store=store, options=BotOptions(seed=1))
            await bot.start(schedules=False)
            try:
                for n in range(5):
                    await fake.inject_message(GENERAL, f"!echo {n}")
                    await asyncio.sleep(0.1)
                await fake.wait_for_sent(5, timeout=20)
                await bot.drain()
            finally:
                await bot.stop()
    assert [m.content for m in fake.sent] == [f"You said: {n}" for n in range(5)]
    assert min(gaps([m.time for m in fake.sent])) >= 0.3, gaps([m.time for m in fake.sent])


# --------------------------------------------------------------------------- any arrival pattern, any adapter


class Recorder(Adapter):
    """An adapter that records when each chat was sent to; chats starting with '-' are groups."""

    platform = "recorder"

    def __init__(self, limits: Limits) -> None:
        super().__init__(AdapterConfig("rec", "lander"))
        self.limits = limits
        self.times: dict[str, list[float]] = {}

    async def start(self, on_message: IncomingHandler) -> None:
        return None

    async def stop(self) -> None:
        return None

    def is_group(self, chat: str) -> bool:
        return chat.startswith("-")

    async def send(self, delivery: Delivery) -> Receipt:
        self.times.setdefault(delivery.chat, []).append(time.monotonic())
        return Receipt((str(delivery.id),))


arrivals = st.lists(
    st.tuples(st.sampled_from(["1", "2", "-3"]), st.integers(1, 3), st.floats(0.0, 0.06)), min_size=1, max_size=6
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals=arrivals)
async def test_any_arrival_pattern_keeps_every_chat_and_group_paced(tmp_path_factory, arrivals):
    """Messages queued at any moments, to chats and a group, idle or not: no two sends to one chat too close."""
    limits = Limits(global_rate=500, per_chat_rate=25, group_per_minute=60 * 12, concurrency=4)
    chat_gap, group_gap = 1 / 25, 60 / (60 * 12)  # 40 ms and 83 ms (headroom only makes them longer)
    recorder = Recorder(limits)
    store = await Store(tmp_path_factory.mktemp("pace") / "p.db").open()
    dispatcher = Dispatcher(store, recorder)
    runner = asyncio.create_task(dispatcher.run())
    try:
        n = 0
        for chat, count, pause in arrivals:
            rows = []
            for _ in range(count):
                n += 1
                rows.append((f"k{n}", None, "lander", "rec", chat, f"m{n}", None, None, None, None))
            await store.outbox_add(rows)
            dispatcher.notify()
            await asyncio.sleep(pause)
        dispatcher.notify()
        await asyncio.wait_for(dispatcher.drained(), 30)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await store.close()
    assert sum(len(t) for t in recorder.times.values()) == n
    for chat, times in recorder.times.items():
        least = group_gap if chat.startswith("-") else chat_gap
        assert all(g >= least for g in gaps(times)), (chat, gaps(times))


class _StalledClock:
    """The dispatcher's view of ``time``: the real monotonic clock plus stalls the test adds.

    A stall stands for an event loop that was busy elsewhere (another adapter, a
    slow library call) and woke the dispatcher late, without making the test wait.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class StallingRecorder(Recorder):
    """Records send times on the stalled clock; the first send stalls the loop for ``stall`` seconds."""

    def __init__(self, limits: Limits, clock: _StalledClock, stall: float) -> None:
        super().__init__(limits)
        self.clock = clock
        self.stall = stall
        self.starts: list[float] = []

    async def send(self, delivery: Delivery) -> Receipt:
        self.starts.append(self.clock.monotonic())
        if len(self.starts) == 1:
            self.clock.offset += self.stall
        return Receipt((str(delivery.id),))


async def _paced_sends(tmp_path, monkeypatch, limits: Limits, headroom: float, stall: float, n: int) -> list[float]:
    import personae.delivery.dispatcher as dispatcher_module

    clock = _StalledClock()
    monkeypatch.setattr(dispatcher_module, "time", clock)  # only the dispatcher's clock; asyncio keeps its own
    recorder = StallingRecorder(limits, clock, stall)
    store = await Store(tmp_path / "stall.db").open()
    dispatcher = Dispatcher(store, recorder, headroom=headroom)
    runner = asyncio.create_task(dispatcher.run())
    try:
        rows = [(f"k{i}", None, "lander", "rec", str(i), f"m{i}", None, None, None, None) for i in range(n)]
        await store.outbox_add(rows)
        dispatcher.notify()
        await asyncio.wait_for(dispatcher.drained(), 30)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await store.close()
    return recorder.starts


async def test_a_late_wake_up_catches_up_a_few_sends_within_the_headroom(tmp_path, monkeypatch):
    """A dispatcher woken late sends what it fell behind on, within a bank the headroom pays for.

    20/s with headroom 0.2: paced at 4/s (one send per 250 ms), and up to 8 sends
    (half the headroom's share of a second) may be caught up. The first send stalls
    the loop by 1.1 s: the four sends due meanwhile go at once (the last second
    holds none), then the pace resumes once a second holds no more than the pace.
    Before, lateness beyond one interval was dropped, so a loop busy for a few
    milliseconds at a time lost part of the platform's rate for good.
    """
    starts = await _paced_sends(tmp_path, monkeypatch, Limits(global_rate=20, concurrency=8), 0.2, 1.1, 9)
    resumed = starts[1]
    at_once = [t for t in starts[1:] if t - resumed < 0.075]
    assert len(at_once) == 4, [round(t - resumed, 3) for t in starts[1:]]
    # After the catch-up, the pace holds: never two sends closer than about one interval.
    assert all(g >= 0.2 for g in gaps(starts[5:])), gaps(starts[5:])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stall=st.floats(0.0, 3.0), rate=st.sampled_from([20, 30, 40, 300]), headroom=st.sampled_from([0.5, 0.9, 0.97])
)
async def test_catching_up_never_puts_more_than_the_limit_in_one_second(tmp_path_factory, stall, rate, headroom):
    """Whatever the stall, no one-second window of send starts holds more than the pace, rounded down.

    Rounded down, a per-second limit keeps a whole message of slack: at 30/s and the default
    headroom, 30 sends in one second by our clock were 31 by the platform's (a 429, measured).
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        limits = Limits(global_rate=rate, concurrency=16)
        tmp = tmp_path_factory.mktemp("stall")
        starts = await _paced_sends(tmp, monkeypatch, limits, headroom, stall, rate + 8)
    for i, t in enumerate(starts):
        in_window = sum(1 for u in starts[i:] if u - t < 1.0)
        assert in_window <= max(1, math.floor(rate * headroom)) < rate, (i, in_window)
