"""The runtime: outbox fan-out, subscriptions, built-in and admin commands, retries, reload.

The adapter here is a recording test double of the *platform*; what is under
test is the runtime and dispatcher (the real platform adapters have their own
end-to-end tests against fake servers).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections import Counter
from datetime import UTC, datetime

import pytest

from personae import Chat, Event, Incoming, User
from personae.adapters.base import Adapter, AdapterConfig, Delivery, DeliveryError, Limits, Receipt
from personae.app.runtime import Bot, BotOptions
from personae.language.errors import PersonaeError
from personae.language.loader import load_personas
from personae.storage.store import Store

T0 = datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)


class Recorder(Adapter):
    """Records deliveries; fails according to a script of (chat -> errors to raise first)."""

    platform = "telegram"
    limits = Limits(max_length=80, concurrency=4)

    def __init__(self, config: AdapterConfig, failures: dict[str, list[DeliveryError]] | None = None) -> None:
        super().__init__(config)
        self.failures = failures or {}
        self.sent: list[Delivery] = []
        self.attempts: Counter[str] = Counter()

    async def start(self, on_message):
        self.on_message = on_message

    async def send(self, delivery: Delivery) -> Receipt:
        self.attempts[delivery.chat] += 1
        script = self.failures.get(delivery.chat)
        if script:
            raise script.pop(0)
        self.sent.append(delivery)
        return Receipt((str(len(self.sent)),))

    async def stop(self):
        pass


_ids = itertools.count(1)


def incoming(text: str, chat: str = "100", user: str = "7") -> Incoming:
    # Message ids are unique per platform chat, as on real platforms (replies are keyed by them).
    return Incoming("lander", "telegram", Chat(chat), User(user, "Ann"), text, message_id=str(next(_ids)), adapter="tg")


@pytest.fixture
async def store(tmp_path):
    s = await Store(tmp_path / "bot.db").open()
    yield s
    await s.close()


async def make_bot(persona_dir, store, **kw):
    adapter = Recorder(AdapterConfig("tg", "lander", channels=("-500",), admins=("1",)), kw.pop("failures", None))
    bot = Bot(load_personas([persona_dir]), [adapter], store=store, options=BotOptions(seed=1), **kw)
    await bot.start(schedules=False)
    return bot, adapter


async def test_subscribe_broadcast_unsubscribe(persona_dir, store):
    bot, tg = await make_bot(persona_dir, store)
    try:
        await bot.on_message(incoming("/subscribe", chat="100"))
        await bot.on_message(incoming("/subscribe", chat="200"))
        await bot.on_message(incoming("/subscribe", chat="200"))
        await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="e1")))
        await bot.on_message(incoming("/unsubscribe", chat="200"))
        await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="e2")))
        await bot.drain()
    finally:
        await bot.stop()
    got = [(d.chat, d.text) for d in tg.sent]
    assert ("100", "Subscribed: Lander's news will arrive here.") in got
    assert ("200", "This chat is already subscribed.") in got
    assert ("200", "Unsubscribed. Farewell!") in got
    first = [c for c, t in got if t == "Battery at 90%."]
    second = [c for c, t in got if t == "Battery at 80%."]
    assert sorted(first) == ["-500", "100", "200"]  # the channel plus both subscribers
    assert sorted(second) == ["-500", "100"]


async def test_every_message_delivered_exactly_once_despite_failures(persona_dir, store):
    failures = {
        "100": [DeliveryError("Too Many Requests", retry_after=0.05), DeliveryError("502 Bad Gateway")],
        "200": [DeliveryError("connection dropped"), DeliveryError("slow: timed out")],
    }
    bot, tg = await make_bot(persona_dir, store, failures=failures)
    bot.dispatchers["tg"].base_backoff = 0.01
    try:
        await store.subscribe_many("tg", ["100", "200", "300"], "lander")
        bot.outlet.subscribers["tg"] = ["100", "200", "300"]
        for i in range(5):
            await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key=f"e{i}")))
        await bot.drain()
    finally:
        await bot.stop()
    per_chat = Counter(d.chat for d in tg.sent)
    assert per_chat == {"-500": 5, "100": 5, "200": 5, "300": 5}
    # Order within each chat is the order of the events.
    assert [d.text for d in tg.sent if d.chat == "100"] == [f"Battery at {90 - 10 * i}%." for i in range(5)]
    stats = bot.dispatchers["tg"].stats
    assert (stats.rate_limited, stats.retries, stats.failed) == (1, 4, 0)
    rows = sqlite3.connect(store.path).execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
    assert rows == [("sent", 20)]


async def test_a_long_outage_loses_nothing(persona_dir, store):
    # Forty transient failures in a row (a platform down for a while): retried until sent.
    outage = [DeliveryError("503 Service Unavailable") for _ in range(40)]
    bot, tg = await make_bot(persona_dir, store, failures={"100": outage})
    bot.dispatchers["tg"].base_backoff = bot.dispatchers["tg"].max_backoff = 0.001
    try:
        await bot.on_message(incoming("/status"))
        await bot.drain()
    finally:
        await bot.stop()
    assert [d.text for d in tg.sent] == ["Phase cruise, battery 100%."] and tg.attempts["100"] == 41
    row = sqlite3.connect(store.path).execute("SELECT status, attempts FROM outbox").fetchone()
    assert row == ("sent", 41)


async def test_an_adapter_bug_does_not_block_its_chat_for_ever(persona_dir, store):
    # An exception the adapter does not map to DeliveryError: retried a bounded number of times.
    bot, tg = await make_bot(persona_dir, store, failures={"100": [ValueError("poison")] * 50})
    bot.dispatchers["tg"].base_backoff = bot.dispatchers["tg"].max_backoff = 0.001
    try:
        await bot.on_message(incoming("/status"))
        await asyncio.wait_for(bot.drain(), 10)
    finally:
        await bot.stop()
    assert tg.attempts["100"] == 12 and tg.sent == []
    row = sqlite3.connect(store.path).execute("SELECT status, last_error FROM outbox").fetchone()
    assert row == ("failed", "ValueError: poison")


async def test_blocked_chat_is_unsubscribed_once_without_retry_storm(persona_dir, store):
    gone = DeliveryError("Forbidden: bot was blocked by the user", chat_gone=True)
    bot, tg = await make_bot(persona_dir, store, failures={"300": [gone]})
    try:
        await store.subscribe_many("tg", ["100", "300"], "lander")
        bot.outlet.subscribers["tg"] = ["100", "300"]
        for i in range(3):
            await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key=f"e{i}")))
        await bot.drain()
    finally:
        await bot.stop()
    assert tg.attempts["300"] == 1
    assert await store.subscribers("tg") == ["100"]
    assert bot.dispatchers["tg"].stats.unsubscribed == 1
    failed = sqlite3.connect(store.path).execute("SELECT count(*) FROM outbox WHERE status='failed'").fetchone()[0]
    assert failed == 3


async def test_a_chat_that_unblocks_the_bot_is_answered_again(persona_dir, store):
    gone = DeliveryError("Forbidden: bot was blocked by the user", chat_gone=True)
    bot, tg = await make_bot(persona_dir, store, failures={"300": [gone]})
    try:
        await bot.on_message(incoming("/status", chat="300"))  # blocked meanwhile: 403
        await bot.drain()
        assert bot.dispatchers["tg"].is_gone("tg", "300")
        await bot.on_message(incoming("/status", chat="300"))  # unblocked, and asks again
        await bot.drain()
    finally:
        await bot.stop()
    assert [d.chat for d in tg.sent] == ["300"] and tg.attempts["300"] == 2


async def test_permanent_error_is_not_retried(persona_dir, store):
    bot, tg = await make_bot(persona_dir, store, failures={"-500": [DeliveryError("Bad Request", permanent=True)]})
    try:
        await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="e")))
        await bot.drain()
    finally:
        await bot.stop()
    assert tg.attempts["-500"] == 1 and tg.sent == []
    row = sqlite3.connect(store.path).execute("SELECT status, attempts, last_error FROM outbox").fetchone()
    assert row == ("failed", 1, "Bad Request")


async def test_long_messages_are_split_on_sentences(persona_dir, store):
    bot, tg = await make_bot(persona_dir, store)
    text = "First sentence is here. " * 3 + "And a final one that is long enough to overflow the limit!"
    try:
        await bot.on_message(incoming(f"/echo {text}"))
        await bot.drain()
    finally:
        await bot.stop()
    parts = [d.text for d in tg.sent]
    assert all(len(p) <= 80 for p in parts) and len(parts) > 1
    assert " ".join(parts) == f"You said: {text}".strip()
    assert tg.sent[0].reply_to is not None and all(d.reply_to is None for d in tg.sent[1:])


async def test_admin_commands_refused_for_others_and_logged(persona_dir, store):
    bot, tg = await make_bot(persona_dir, store)
    try:
        await bot.on_message(incoming("/emit touchdown site=Nowhere", user="7"))
        await bot.on_message(incoming("/reload", user="7"))
        await bot.drain()
        assert bot.engine.state("lander")["phase"] == "cruise"
        await bot.on_message(incoming("/emit touchdown site=Abydos", user="1"))
        await bot.drain()
        assert bot.engine.state("lander")["location"] == "Abydos"
    finally:
        await bot.stop()
    texts = [d.text for d in tg.sent]
    assert texts.count("Sorry, only the bot's admins can do that.") == 2
    assert "Event 'touchdown' raised." in texts
    rows = (
        sqlite3.connect(store.path)
        .execute("SELECT user, text FROM interactions WHERE status = 'refused: not an admin'")
        .fetchall()
    )
    assert rows == [("7", "/emit touchdown site=Nowhere"), ("7", "/reload")]


async def test_emit_says_when_a_reaction_failed_or_nobody_reacts(persona_dir, store):
    bot, tg = await make_bot(persona_dir, store)
    try:
        await bot.on_message(incoming("/emit touchdown", user="1"))  # its template needs event.site
        await bot.on_message(incoming("/emit no_such_event", user="1"))
        await bot.drain()
    finally:
        await bot.stop()
    *pieces, nobody = [d.text for d in tg.sent]  # the first answer is long: sent in pieces
    failed = " ".join(pieces)
    assert failed.startswith("Event 'touchdown' raised, but 1 reaction(s) failed: lander (lander.yaml:10): undefined")
    assert "'site'" in failed
    assert nobody == "Event 'no_such_event' raised; no persona reacts to it."


async def test_reload_keeps_last_good_version(persona_dir, store, tmp_path):
    calls = {"n": 0}

    def reload():
        calls["n"] += 1
        if calls["n"] == 1:
            raise PersonaeError("broken.yaml:1:1: nope")
        return load_personas([persona_dir])

    bot, tg = await make_bot(persona_dir, store, reload=reload)
    try:
        ok, message = bot.reload()
        assert not ok and "still running the previous version" in message
        await bot.on_message(incoming("/status"))
        ok, _ = bot.reload()
        assert ok
        await bot.drain()
    finally:
        await bot.stop()
    assert [d.text for d in tg.sent] == ["Phase cruise, battery 100%."]


async def test_outbox_is_idempotent_per_key(persona_dir, store):
    bot, tg = await make_bot(persona_dir, store)
    try:
        out = await bot.engine.dispatch(Event("drain", T0, key="same"))
        await bot.deliver(out)
        await bot.deliver(out)  # the same messages again, e.g. a resumed replay
        await bot.drain()
    finally:
        await bot.stop()
    assert [d.chat for d in tg.sent] == ["-500"]


async def test_stop_flushes_the_log(persona_dir, tmp_path):
    store = await Store(tmp_path / "x.db").open()
    bot, tg = await make_bot(persona_dir, store)
    for i in range(50):
        await bot.on_message(incoming(f"hello {i}"))
    await bot.stop()
    await store.close()
    n = sqlite3.connect(tmp_path / "x.db").execute("SELECT count(*) FROM interactions").fetchone()[0]
    assert n == 100 and len(tg.sent) == 50
    await asyncio.sleep(0)
