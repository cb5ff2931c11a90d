"""The Telegram adapter end to end: python-telegram-bot, unmodified, against a fake Bot API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import pytest

from fakes.telegram_api import FakeTelegram, unused_tcp_port
from personae import Event
from personae.adapters.base import AdapterConfig
from personae.adapters.telegram import TelegramAdapter
from personae.app.runtime import Bot, BotOptions
from personae.language.loader import load_personas
from personae.storage.store import Store

# Shaped like a token (id:secret) but obviously fake.
TOKEN = "987654:TEST-secret-token-do-not-leak"
T0 = datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)


def adapter_for(fake: FakeTelegram, **options) -> TelegramAdapter:
    opts = {
        "token_env": "TG_TOKEN",
        "base_url": fake.base_url,
        "base_file_url": fake.base_file_url,
        "poll_timeout": 1,
        **options,
    }
    config = AdapterConfig("tg", "lander", tuple(options.pop("channels", ())), ("1",), opts)
    return TelegramAdapter.create(config, {"TG_TOKEN": TOKEN, "TG_SECRET": "s3cret-webhook-token"})


@pytest.fixture
async def store(tmp_path):
    s = await Store(tmp_path / "tg.db").open()
    yield s
    await s.close()


async def running(persona_dir, store, adapter):
    bot = Bot(load_personas([persona_dir]), [adapter], store=store, options=BotOptions(seed=1))
    await bot.start(schedules=False)
    return bot


async def broadcast_once(persona_dir, store, adapter, chats):
    """Start a bot on ``adapter``, broadcast one event to ``chats``, wait until delivered, stop."""
    bot = await running(persona_dir, store, adapter)
    try:
        await bot.subscribe("tg", chats)
        await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="broadcast")))
        await bot.drain()
    finally:
        await bot.stop()


async def test_status_in_a_private_chat_is_answered_as_a_reply(persona_dir, store):
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(persona_dir, store, adapter_for(fake))
        try:
            fake.inject_message(42, "/status", first_name="Ann")
            [sent] = await fake.wait_for_sent(1)
        finally:
            await bot.stop()
    assert (sent.chat_id, sent.text) == (42, "Phase cruise, battery 100%.")
    asked = fake.calls_to("getUpdates")
    assert asked  # it really long-polled
    assert sent.reply_to_message_id == 1  # threaded to the user's message
    assert sent.parse_mode is None


LONG_HTML = """\
persona: lander
name: Lander
replies:
  - when: {command: story}
    say: "<b>{{ message.args }}</b>: <i>{% for i in range(300) %}Day {{ i }} on the comet was long. {% endfor %}</i>"
"""


async def test_a_long_html_reply_arrives_in_valid_pieces(tmp_path, store):
    from fakes.telegram_api import _parse_html

    (tmp_path / "lander.yaml").write_text(LONG_HTML, encoding="utf-8")
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(tmp_path, store, adapter_for(fake, parse_mode="html", per_chat_rate=100))
        try:
            fake.inject_message(42, "/story <b>x</b> & y")
            await fake.wait_for_sent(3)
            await bot.drain()
        finally:
            await bot.stop()
    sent = fake.sent
    assert len(sent) >= 3 and all(m.parse_mode == "HTML" for m in sent)  # the fake refuses broken HTML
    visible = [_parse_html(m.text) for m in sent]
    assert all(len(v) <= 4096 for v in visible)
    story = "".join(f"Day {i} on the comet was long. " for i in range(300))
    assert "".join("".join(visible).split()) == "".join(f"<b>x</b> & y: {story}".split())  # user text escaped
    assert sent[0].text.startswith("<b>&lt;b&gt;x&lt;/b&gt; &amp; y</b>: <i>Day 0")
    assert all(m.text.startswith("<i>") and m.text.endswith("</i>") for m in sent[1:])


async def test_group_commands_mentions_and_chatter(persona_dir, store):
    async with FakeTelegram(TOKEN, bot_username="LanderBot") as fake:
        # Telegram allows a group 20 messages a minute; scaled up so three answers take no time.
        bot = await running(persona_dir, store, adapter_for(fake, group_per_minute=600))
        try:
            group = -1001
            fake.inject_message(group, "/status@OtherBot", chat_type="supergroup")
            fake.inject_message(group, "nice weather, everyone", chat_type="supergroup")
            fake.inject_message(group, "/status@LanderBot", chat_type="supergroup")
            fake.inject_message(group, "@LanderBot how far is Mars?", chat_type="supergroup")
            fake.inject_message(group, "/echo done", chat_type="supergroup")
            await fake.wait_for_sent(3)
            await asyncio.sleep(0.2)
        finally:
            await bot.stop()
    assert fake.texts(group) == ["Phase cruise, battery 100%.", "Mars is far.", "You said: done"]
    statuses = [
        r[0]
        for r in sqlite3.connect(store.path).execute(
            "SELECT status FROM interactions WHERE direction = 'in' ORDER BY id"
        )
    ]
    assert statuses == ["ignored: addressed to another bot", "ignored: chatter", "ok", "ok", "ok"]


async def test_stickers_edits_and_joins_never_crash(persona_dir, store):
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(persona_dir, store, adapter_for(fake))
        try:
            base = fake.message_update(42, "hi")
            message = base["message"]
            fake.inject_update({"update_id": 900, "edited_message": {**message, "text": "edited", "edit_date": 1}})
            sticker = {k: v for k, v in message.items() if k != "text"}
            sticker["sticker"] = {
                "file_id": "x",
                "file_unique_id": "y",
                "type": "regular",
                "width": 1,
                "height": 1,
                "is_animated": False,
                "is_video": False,
                "emoji": "☄️",
            }
            fake.inject_update({"update_id": 901, "message": sticker})
            fake.inject_update(
                {
                    "update_id": 902,
                    "message": {
                        **sticker,
                        "sticker": None,
                        "new_chat_members": [{"id": 5, "is_bot": False, "first_name": "Bo"}],
                    },
                }
            )
            fake.inject_update({"update_id": 903, "poll": {"id": "p"}})
            fake.inject_message(42, "/status")
            await fake.wait_for_sent(1)
        finally:
            await bot.stop()
    assert fake.texts() == ["Phase cruise, battery 100%."]
    statuses = [
        r[0]
        for r in sqlite3.connect(store.path).execute(
            "SELECT status FROM interactions WHERE direction = 'in' ORDER BY id"
        )
    ]
    assert statuses == ["ignored: edited", "ignored: sticker", "ignored: join", "ok"]


async def test_removal_from_a_group_unsubscribes_it(persona_dir, store):
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(persona_dir, store, adapter_for(fake))
        me = {"id": fake.bot_id, "is_bot": True, "first_name": "Fake Bot", "username": "fake_test_bot"}
        admin = {"id": 9, "is_bot": False, "first_name": "Ada"}
        group = {"id": -1001, "type": "supergroup", "title": "Comet fans"}

        def member(update_id: int, old: str, new: str) -> dict:
            return {
                "update_id": update_id,
                "my_chat_member": {
                    "chat": group,
                    "from": admin,
                    "date": 1,
                    "old_chat_member": {"user": me, "status": old},
                    "new_chat_member": {"user": me, "status": new},
                },
            }

        try:
            await bot.subscribe("tg", ["-1001", "42"])
            fake.inject_update(member(800, "left", "member"))  # added: logged
            fake.inject_update(member(801, "member", "left"))  # removed: unsubscribed
            fake.inject_message(42, "/status")
            await fake.wait_for_sent(1)
            await bot.drain()
        finally:
            await bot.stop()
    assert await store.subscribers("tg") == ["42"]
    rows = sqlite3.connect(store.path).execute(
        "SELECT chat, status FROM interactions WHERE direction = 'in' ORDER BY id"
    )
    assert rows.fetchall() == [("-1001", "ignored: added"), ("-1001", "unsubscribed: bot removed"), ("42", "ok")]


async def test_a_group_that_became_a_supergroup_gets_its_posts_at_the_new_id(persona_dir, store):
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(persona_dir, store, adapter_for(fake, group_per_minute=600))
        try:
            await bot.subscribe("tg", ["-55", "42"])
            fake.migrate_chat(-55, -10055)
            for i in range(2):
                await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key=f"m{i}")))
            await bot.drain()
        finally:
            await bot.stop()
    assert fake.texts(-10055) == ["Battery at 90%.", "Battery at 80%."]
    assert fake.texts(42) == ["Battery at 90%.", "Battery at 80%."]
    assert sorted(await store.subscribers("tg")) == ["-10055", "42"]
    rows = sqlite3.connect(store.path).execute("SELECT chat, status FROM outbox ORDER BY id").fetchall()
    assert sorted(rows) == [("-10055", "sent")] * 2 + [("42", "sent")] * 2


async def test_broadcast_to_500_chats_stays_under_the_limit_without_429(persona_dir, store):
    # Telegram's 30/s scaled ×5 so the test runs fast. The fake answers 429 past its limit, so no 429
    # means the pace held; how close to the limit it runs is bench/fanout.py's to measure, not a test's.
    limit = 150
    chats = [str(10_000 + i) for i in range(500)]
    async with FakeTelegram(TOKEN, global_rate=limit, per_chat_rate=1) as fake:
        adapter = adapter_for(fake, global_rate=limit, per_chat_rate=1, concurrency=16)
        await broadcast_once(persona_dir, store, adapter, chats)
    assert fake.count_429 == 0
    assert sorted(str(m.chat_id) for m in fake.sent) == sorted(chats)


async def test_a_limit_lower_than_configured_slows_the_whole_bot_down(persona_dir, store):
    # Another process shares the token, or the limit is lower than bot.toml says: the server
    # allows 20/s, the adapter is told 200/s (ten times more, so even a slow machine runs into
    # the real limit). A 429 pauses every chat and halves the pace.
    chats = [str(30_000 + i) for i in range(100)]
    async with FakeTelegram(TOKEN, global_rate=20) as fake:
        await broadcast_once(persona_dir, store, adapter_for(fake, global_rate=200, concurrency=16), chats)
    assert sorted(str(m.chat_id) for m in fake.sent) == sorted(chats)  # every one, once
    # Without the bot-wide pause each chat ran into the limit on its own (190 429s for 300 messages).
    assert 0 < fake.count_429 <= 10, fake.count_429


async def test_faults_still_deliver_every_message_exactly_once(persona_dir, store):
    async with FakeTelegram(TOKEN, seed=5, fault_ratio=0.1, faults=("5xx", "drop", "429"), fault_retry_after=1) as fake:
        # Injected 429s halve the pace each time; from a higher pace the test stays short.
        adapter = adapter_for(fake, concurrency=8, global_rate=300)
        bot = await running(persona_dir, store, adapter)
        bot.dispatchers["tg"].base_backoff = 0.05
        chats = [str(20_000 + i) for i in range(120)]
        try:
            await bot.subscribe("tg", chats)
            for i in range(2):
                await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key=f"e{i}")))
            await bot.drain()
        finally:
            await bot.stop()
    assert fake.count_5xx + fake.count_dropped + fake.count_429 > 0  # faults did happen
    got = Counter((m.chat_id, m.text) for m in fake.sent)
    expected = {(int(c), t) for c in chats for t in ("Battery at 90%.", "Battery at 80%.")}
    assert set(got) == expected and set(got.values()) == {1}
    per_chat = {}
    for m in fake.sent:
        per_chat.setdefault(m.chat_id, []).append(m.text)
    assert all(v == ["Battery at 90%.", "Battery at 80%."] for v in per_chat.values())  # order kept per chat
    rows = sqlite3.connect(store.path).execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
    assert rows == [("sent", 240)]


async def test_blocked_chats_are_unsubscribed_once(persona_dir, store):
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(persona_dir, store, adapter_for(fake))
        chats = [str(30_000 + i) for i in range(10)]
        fake.block_chat(30_003)
        fake.block_chat(30_007)
        try:
            await bot.subscribe("tg", chats)
            for i in range(3):
                await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key=f"b{i}")))
            await bot.drain()
        finally:
            await bot.stop()
    attempts = Counter(int(c["chat_id"]) for c in fake.calls_to("sendMessage"))
    assert attempts[30_003] == 1 and attempts[30_007] == 1
    assert await store.subscribers("tg") == [c for c in chats if c not in ("30003", "30007")]
    assert len(fake.sent) == 8 * 3


async def test_webhook_mode_checks_the_secret(persona_dir, store, caplog):
    port = unused_tcp_port()
    async with FakeTelegram(TOKEN) as fake:
        adapter = adapter_for(
            fake,
            mode="webhook",
            listen="127.0.0.1",
            port=port,
            url_path="tg-hook",
            webhook_url=f"http://127.0.0.1:{port}/tg-hook",
            secret_token_env="TG_SECRET",
        )
        bot = await running(persona_dir, store, adapter)
        try:
            assert fake.webhook_url == f"http://127.0.0.1:{port}/tg-hook"
            assert fake.webhook_secret == "s3cret-webhook-token"
            bad = await fake.deliver_via_webhook(fake.message_update(42, "/echo forged"), secret="wrong")
            missing = await fake.deliver_via_webhook(fake.message_update(42, "/echo forged"), secret="")
            good = await fake.deliver_via_webhook(fake.message_update(42, "/echo real"))
            await fake.wait_for_sent(1)
        finally:
            await bot.stop()
    assert (bad, missing, good) == (403, 403, 200)
    assert fake.texts() == ["You said: real"]
    assert adapter.refused_webhook_requests == 2
    refusals = [r.getMessage() for r in caplog.records if "refused a webhook request" in r.getMessage()]
    assert len(refusals) == 2


async def test_token_never_leaks_into_logs_or_database(persona_dir, store, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    # Commands run in-process by other tests quiet the HTTP client's logger; this test needs its URLs.
    caplog.set_level(logging.DEBUG, logger="httpx")
    async with FakeTelegram(TOKEN, seed=9, fault_ratio=0.3, faults=("5xx", "drop", "429")) as fake:
        adapter = adapter_for(fake, global_rate=300)
        bot = await running(persona_dir, store, adapter)
        bot.dispatchers["tg"].base_backoff = 0.05
        try:
            await bot.subscribe("tg", [str(40_000 + i) for i in range(20)])
            await bot.deliver(await bot.engine.dispatch(Event("drain", T0, key="leak")))
            fake.inject_message(42, "/status")
            await bot.drain()
            await fake.wait_for_sent(21)
        finally:
            await bot.stop()
    await store.flush()
    assert fake.count_5xx + fake.count_dropped + fake.count_429 > 0
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # the HTTP client did log its URLs
    assert TOKEN not in caplog.text
    secret_part = TOKEN.split(":")[1]
    assert secret_part not in caplog.text
    out = capsys.readouterr()
    assert secret_part not in out.out + out.err
    con = sqlite3.connect(store.path)
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in con.execute(f"SELECT * FROM {table}"):
            assert secret_part not in " ".join(map(str, row)), table


async def test_admin_commands_only_for_admins(persona_dir, store):
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(persona_dir, store, adapter_for(fake))
        try:
            fake.inject_message(7, "/emit touchdown site=Nowhere", user_id=7)
            await fake.wait_for_sent(1)
            assert bot.engine.state("lander")["phase"] == "cruise"
            fake.inject_message(1, "/emit touchdown site=Agilkia", user_id=1)
            await fake.wait_for_sent(2)
        finally:
            await bot.stop()
    assert fake.texts(7) == ["Sorry, only the bot's admins can do that."]
    assert fake.texts(1) == ["Event 'touchdown' raised."]
    assert bot.engine.state("lander")["location"] == "Agilkia"


def test_missing_token_variable_is_a_clear_error(persona_dir, tmp_path):
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{persona_dir}/*.yaml"]\n\n[[adapters]]\ntype = "telegram"\npersona = "lander"\n'
        'token_env = "LANDER_TG_TOKEN_UNSET"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "LANDER_TG_TOKEN_UNSET"}
    r = subprocess.run(
        [sys.executable, "-m", "personae", "run"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 1
    assert (
        r.stderr == "error: bot.toml:7: adapters[0].token_env: environment variable LANDER_TG_TOKEN_UNSET is not set\n"
    )


# --------------------------------------------------------------------------- /replay, the admin command

TIMELINE = """\
timeline: mini
events:
  - {at: "2014-11-12T15:34:04Z", event: touchdown, data: {site: Abydos}}
  - {at: "2014-11-12T16:34:04Z", event: drain}
  - {at: "2014-11-12T17:34:04Z", event: drain}
"""


async def replaying(persona_dir, store, adapter, tmp_path):
    from personae.app.replay_control import Replayable, ReplayControl
    from personae.timing.timeline import load_timeline

    (tmp_path / "mini.yaml").write_text(TIMELINE)
    bot = await running(persona_dir, store, adapter)
    bot.replays = ReplayControl(bot, [Replayable(load_timeline(tmp_path / "mini.yaml"), speed=None)])
    return bot


async def test_admin_replay_here_plays_the_timeline_into_that_chat_only(persona_dir, store, tmp_path):
    async with FakeTelegram(TOKEN) as fake:
        bot = await replaying(persona_dir, store, adapter_for(fake), tmp_path)
        try:
            await bot.subscribe("tg", ["500", "501"])
            fake.inject_message(1, "/replay here", user_id=1)
            await fake.wait_for_sent(5)
            await bot.drain()
        finally:
            await bot.stop()
    texts = fake.texts(1)
    assert texts[0].startswith("Replaying mini: 3 events from 2014-11-12 15:34 UTC to 2014-11-12 17:34 UTC")
    assert texts[1:] == [
        "Touchdown at Abydos!",
        "Battery at 90%.",  # set: applies before say: renders
        "Battery at 80%.",
        f"Replay {texts[0].split('(run ')[1].split(')')[0]} of mini finished: 3 events.",
    ]
    assert fake.texts(500) == fake.texts(501) == []  # a preview is not a broadcast
    # The replay has its own state: the live lander never landed and kept its battery.
    assert bot.engine.state("lander") == {"phase": "cruise", "battery": 100, "location": "aboard the orbiter"}


async def test_admin_replay_broadcasts_to_subscribers(persona_dir, store, tmp_path):
    async with FakeTelegram(TOKEN) as fake:
        bot = await replaying(persona_dir, store, adapter_for(fake), tmp_path)
        try:
            await bot.subscribe("tg", ["500", "501"])
            fake.inject_message(1, "/replay mini from=2014-11-12T16:00Z", user_id=1)
            await fake.wait_for_sent(1 + 2 * 2 + 1)
            await bot.drain()
        finally:
            await bot.stop()
    for chat in (500, 501):
        # From 16:00: the touchdown happened silently before the window, so the state is right.
        assert fake.texts(chat) == ["Battery at 90%.", "Battery at 80%."]
    assert fake.texts(1)[-1].endswith("finished: 2 events.")
    rows = sqlite3.connect(store.path).execute("SELECT count(*) FROM outbox WHERE run IS NOT NULL").fetchone()
    assert rows == (4,)


async def test_replay_is_refused_to_non_admins_and_logged(persona_dir, store, tmp_path, caplog):
    async with FakeTelegram(TOKEN) as fake:
        bot = await replaying(persona_dir, store, adapter_for(fake), tmp_path)
        try:
            with caplog.at_level(logging.WARNING, logger="personae.app.runtime"):
                fake.inject_message(7, "/replay here", user_id=7)
                await fake.wait_for_sent(1)
            await asyncio.sleep(0.2)
            await store.flush()
            assert not bot.replays.running
        finally:
            await bot.stop()
    assert fake.texts(7) == ["Sorry, only the bot's admins can do that."]
    assert "refused /replay from non-admin user 7 on tg" in caplog.text
    rows = sqlite3.connect(store.path).execute("SELECT text, status FROM interactions WHERE user = '7'").fetchall()
    assert rows == [("/replay here", "refused: not an admin")]
    assert sqlite3.connect(store.path).execute("SELECT count(*) FROM replays").fetchone() == (0,)


async def test_replay_status_and_stop_cancel_what_is_not_sent(persona_dir, store, tmp_path):
    # A slow bot (5 msg/s) and 40 subscribers: the replay queues 120 posts at once, far
    # more than can go out before the stop.
    async with FakeTelegram(TOKEN) as fake:
        bot = await replaying(persona_dir, store, adapter_for(fake, global_rate=5, concurrency=2), tmp_path)
        chats = [str(700 + i) for i in range(40)]
        try:
            await bot.subscribe("tg", chats)
            fake.inject_message(1, "/replay", user_id=1)
            await fake.wait_for_sent(4)
            fake.inject_message(1, "/replay status", user_id=1)
            await fake.wait_for_call("sendMessage", 6, timeout=10)
            fake.inject_message(1, "/replay stop", user_id=1)
            await asyncio.sleep(1.5)
            sent_after_stop = len(fake.sent)
            await asyncio.sleep(1.0)
            assert len(fake.sent) == sent_after_stop  # nothing more goes out
            fake.inject_message(1, "/replay status", user_id=1)
            await asyncio.sleep(1.0)
        finally:
            await bot.stop()
    admin = fake.texts(1)
    assert admin[1].startswith("Replaying mini (run ") and "to subscribers and channels" in admin[1]
    stopped = next(t for t in admin if t.startswith("Stopped replay"))
    assert admin[-1] == "No replay is running."
    broadcast = [m for m in fake.sent if str(m.chat_id) in chats]
    assert 0 < len(broadcast) < 120
    con = sqlite3.connect(store.path)
    cancelled = con.execute(
        "SELECT count(*) FROM outbox WHERE status = 'failed' AND last_error = 'cancelled by /replay stop'"
    ).fetchone()[0]
    assert f"{cancelled} queued post(s) cancelled" in stopped
    sent = con.execute("SELECT count(*) FROM outbox WHERE run IS NOT NULL AND status = 'sent'").fetchone()[0]
    # Every post is either sent once or cancelled: none lost in between, none twice.
    assert sent == len(broadcast) and sent + cancelled == 120
    assert con.execute("SELECT status FROM replays").fetchall() == [("stopped",)]


async def test_a_lone_surrogate_from_the_wire_is_answered_and_logged(persona_dir, store):
    # JSON may carry "\ud800"; decoded, it is a str no UTF-8 codec (nor SQLite) accepts.
    async with FakeTelegram(TOKEN) as fake:
        bot = await running(persona_dir, store, adapter_for(fake))
        try:
            fake.inject_message(42, "/echo hi \ud800 there", first_name="An\udc00n")
            [sent] = await fake.wait_for_sent(1)
            fake.inject_message(42, "/status")
            await fake.wait_for_sent(2)
        finally:
            await bot.stop()
    assert sent.text == "You said: hi \ufffd there"
    rows = sqlite3.connect(store.path).execute("SELECT direction, text, user_name FROM interactions ORDER BY id")
    assert list(rows)[:3] == [
        ("in", "/echo hi \ufffd there", "An\ufffdn"),
        ("out", "You said: hi \ufffd there", None),
        ("in", "/status", "Test"),
    ]
