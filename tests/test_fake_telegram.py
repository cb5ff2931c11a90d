"""The fake Telegram server, proved with the real, unmodified python-telegram-bot.

Every test drives PTB's own HTTP path (httpx over a real socket on
127.0.0.1) against `FakeTelegram`; nothing inside PTB is patched. Assertions
are on behaviour only: timings on a loaded CI machine prove nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import Bot, Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes, MessageHandler, filters

from fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram, unused_tcp_port

# PTB 22 warns whenever RetryAfter.retry_after is read (even inside its own
# constructor) because the attribute will become a timedelta; that is PTB's
# migration notice, not something these tests can act on.
pytestmark = pytest.mark.filterwarnings("ignore:.*attribute `retry_after` will be of type:DeprecationWarning")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def make_bot(fake: FakeTelegram, token: str = DEFAULT_TOKEN) -> Bot:
    return Bot(token, base_url=fake.base_url, base_file_url=fake.base_file_url)


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(fake) as client:
        yield client


def retry_seconds(exc: RetryAfter) -> float:
    """retry_after in seconds, whichever type PTB_TIMEDELTA makes PTB return."""
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def build_app(fake: FakeTelegram) -> Application:  # type: ignore[type-arg]
    """An Application whose handlers answer /start and echo text as replies."""

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("welcome")

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        assert message is not None and message.text is not None
        await message.reply_text(f"echo: {message.text}", do_quote=True)

    app = ApplicationBuilder().token(fake.token).base_url(fake.base_url).base_file_url(fake.base_file_url).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    return app


# --------------------------------------------------------------------- basics


async def test_get_me_through_real_bot(fake: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123, True, fake.bot_username)
    # Bot.initialize() already called getMe once.
    assert len(fake.calls_to("getMe")) == 2


async def test_wrong_token_is_invalid_token(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with make_bot(fake, "999:WRONG-TOKEN"):
            pass
    assert fake.calls == []


async def test_send_message_round_trip_with_reply(fake: FakeTelegram, bot: Bot) -> None:
    asked = fake.inject_message(42, "where are you?", first_name="Ada")
    incoming = (await bot.get_updates())[0]
    assert incoming.update_id == asked
    assert incoming.message is not None and incoming.message.from_user is not None
    assert incoming.message.from_user.first_name == "Ada"

    reply = await bot.send_message(
        42, "<b>On the comet</b>", parse_mode="HTML", reply_to_message_id=incoming.message.message_id
    )
    assert reply.text == "<b>On the comet</b>"
    assert reply.chat.id == 42 and reply.chat.type == "private"
    assert reply.from_user is not None and reply.from_user.id == fake.bot_id
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "where are you?"

    (sent,) = fake.sent
    assert (sent.chat_id, sent.text, sent.parse_mode) == (42, "<b>On the comet</b>", "HTML")
    assert sent.reply_to_message_id == incoming.message.message_id
    assert sent.message_id == reply.message_id != incoming.message.message_id


async def test_reply_to_a_missing_message(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match="replied not found"):
        await bot.send_message(42, "hello", reply_to_message_id=999)
    lenient = await bot.send_message(42, "hello", reply_to_message_id=999, allow_sending_without_reply=True)
    assert lenient.reply_to_message is None
    assert fake.texts() == ["hello"]


async def test_text_that_looks_like_json_stays_text(fake: FakeTelegram, bot: Bot) -> None:
    for text in ("42", "true", "[1, 2]", "null"):
        assert (await bot.send_message(7, text)).text == text
    assert fake.texts(7) == ["42", "true", "[1, 2]", "null"]
    assert fake.calls_to("sendMessage")[0] == {"chat_id": 7, "text": "42"}


async def test_entities_and_empty_text(fake: FakeTelegram, bot: Bot) -> None:
    from telegram import MessageEntity

    await bot.send_message(5, "bold", entities=[MessageEntity("bold", 0, 4)])
    assert fake.sent[0].entities == ({"type": "bold", "offset": 0, "length": 4},)
    with pytest.raises(BadRequest, match="text is empty"):
        await bot.send_message(5, " ")


async def test_html_mode_is_parsed_as_telegram_does(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(5, "<b>ok</b> &lt;3 &amp; <i>fine</i>", parse_mode="HTML")
    for broken, why in [
        ("<b>never closed", "Can't find end tag"),
        ("<b><i>crossed</b></i>", "Unmatched end tag"),
        ("<blink>old</blink>", "Unsupported start tag"),
        ("1 < 2", "Unexpected start of tag"),
    ]:
        with pytest.raises(BadRequest, match=f"(?i){why}"):
            await bot.send_message(5, broken, parse_mode="HTML")
    # The limit applies to the text left after parsing: tags do not count, an entity counts one.
    await bot.send_message(5, "<b>" + "&amp;" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match="too long"):
        await bot.send_message(5, "<b>" + "x" * 4097 + "</b>", parse_mode="HTML")
    assert len(fake.sent) == 2


# --------------------------------------------------------------- getUpdates


async def test_get_updates_offsets(fake: FakeTelegram, bot: Bot) -> None:
    ids = [fake.inject_message(1, f"m{i}") for i in range(3)]
    assert [u.update_id for u in await bot.get_updates()] == ids
    # Unconfirmed updates come again; an offset confirms everything below it.
    assert [u.update_id for u in await bot.get_updates(offset=ids[1])] == ids[1:]
    assert [u.update_id for u in await bot.get_updates(offset=ids[0])] == ids[1:]
    assert [u.update_id for u in await bot.get_updates(limit=1)] == ids[1:2]
    assert await bot.get_updates(offset=ids[-1] + 1) == ()
    assert fake.pending_updates == []


async def test_negative_offset_keeps_the_last_updates(fake: FakeTelegram, bot: Bot) -> None:
    ids = [fake.inject_message(1, f"m{i}") for i in range(4)]
    assert [u.update_id for u in await bot.get_updates(offset=-1)] == ids[-1:]


async def test_long_poll_is_woken_by_inject(fake: FakeTelegram, bot: Bot) -> None:
    # A 30 s poll: only the wake-up can finish it before the 5 s guard.
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await fake.wait_for_call("getUpdates")
    update_id = fake.inject_message(9, "wake up")
    updates = await asyncio.wait_for(poll, 5)
    assert [u.update_id for u in updates] == [update_id]


async def test_stop_releases_a_held_poll() -> None:
    fake = FakeTelegram()
    await fake.start()
    async with make_bot(fake) as client:
        poll = asyncio.create_task(client.get_updates(timeout=30))
        await fake.wait_for_call("getUpdates")
        await asyncio.wait_for(fake.stop(), 5)
        assert await asyncio.wait_for(poll, 5) == ()


async def test_allowed_updates_and_raw_updates(fake: FakeTelegram, bot: Bot) -> None:
    first = fake.inject_message(3, "original")
    edited = fake.inject_update(
        {
            "edited_message": {
                "message_id": 1,
                "date": 0,
                "edit_date": 1,
                "chat": {"id": 3, "type": "private", "first_name": "Test"},
                "from": {"id": 3, "is_bot": False, "first_name": "Test"},
                "text": "edited",
            }
        }
    )
    joined = fake.inject_update(
        {
            "message": {
                "message_id": 7,
                "date": 0,
                "chat": {"id": -55, "type": "group", "title": "Crew"},
                "from": {"id": 4, "is_bot": False, "first_name": "New"},
                "new_chat_members": [{"id": 4, "is_bot": False, "first_name": "New"}],
            }
        }
    )
    updates = await bot.get_updates(allowed_updates=["message"])
    assert [u.update_id for u in updates] == [first, joined]
    assert edited not in [u["update_id"] for u in fake.pending_updates]
    assert updates[1].message is not None and updates[1].message.new_chat_members[0].first_name == "New"
    # Messages from raw updates can be replied to.
    reply = await bot.send_message(-55, "welcome", reply_to_message_id=7)
    assert reply.chat.title == "Crew" and reply.reply_to_message is not None


async def test_command_gets_its_bot_command_entity(fake: FakeTelegram, bot: Bot) -> None:
    fake.inject_message(8, "/status@fake_test_bot now")
    (update,) = await bot.get_updates()
    assert update.message is not None
    assert update.message.parse_entities(["bot_command"]) == {update.message.entities[0]: "/status@fake_test_bot"}


# --------------------------------------------------------- PTB Application


async def test_application_polling_echoes(fake: FakeTelegram) -> None:
    app = build_app(fake)
    async with app:
        await app.updater.start_polling(timeout=1)  # type: ignore[union-attr]
        await app.start()
        try:
            asked = fake.inject_message(42, "hello there")
            fake.inject_message(-100123, "/start", chat_type="supergroup", chat_title="Ops")
            sent = await fake.wait_for_sent(2)
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()
    by_chat = {m.chat_id: m for m in sent}
    assert by_chat[42].text == "echo: hello there"
    assert by_chat[42].reply_to_message_id == 1
    assert by_chat[-100123].text == "welcome"
    assert asked == 1
    # PTB's last getUpdates confirmed what it fetched, so nothing is pending.
    assert fake.pending_updates == []
    assert fake.calls_to("deleteWebhook")


async def test_webhook_delivery_and_secret(fake: FakeTelegram) -> None:
    port = unused_tcp_port()
    app = build_app(fake)
    async with app:
        await app.updater.start_webhook(  # type: ignore[union-attr]
            listen="127.0.0.1",
            port=port,
            url_path="hook",
            webhook_url=f"http://127.0.0.1:{port}/hook",
            secret_token="s3cret-token",
        )
        await app.start()
        try:
            assert fake.webhook_url == f"http://127.0.0.1:{port}/hook"
            assert fake.webhook_secret == "s3cret-token"
            async with make_bot(fake) as other:
                info = await other.get_webhook_info()
                assert info.url == fake.webhook_url
                with pytest.raises(Conflict):
                    await other.get_updates()

            good = await fake.deliver_via_webhook(fake.message_update(42, "via hook"))
            assert good == 200
            (sent,) = await fake.wait_for_sent(1)
            assert sent.text == "echo: via hook"

            assert await fake.deliver_via_webhook(fake.message_update(42, "forged"), secret="wrong") == 403
            assert await fake.deliver_via_webhook(fake.message_update(42, "forged"), secret=None) == 403

            fake.inject_message(43, "queued")
            assert await fake.flush_webhook() == [200]
            await fake.wait_for_sent(2)
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()
    assert fake.texts() == ["echo: via hook", "echo: queued"]


async def test_delete_webhook_allows_polling_again(fake: FakeTelegram, bot: Bot) -> None:
    assert await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="abc")
    with pytest.raises(BadRequest, match="unallowed characters"):
        await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="not allowed!")
    fake.inject_message(1, "pending")
    assert (await bot.get_webhook_info()).pending_update_count == 1
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert fake.webhook_url == ""
    assert await bot.get_updates() == ()


# ------------------------------------------------------------ errors, limits


class ManualClock:
    """A clock that moves only when told, so flood windows never depend on machine speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_per_chat_rate_limit_raises_retry_after() -> None:
    clock = ManualClock()
    async with FakeTelegram(per_chat_rate=1, clock=clock) as limited, make_bot(limited) as client:
        await client.send_message(1, "first")
        with pytest.raises(RetryAfter) as caught:
            await client.send_message(1, "second")
        assert retry_seconds(caught.value) == 1
        await client.send_message(2, "another chat is not limited")
        clock.now += 1
        await client.send_message(1, "after the window")
        assert limited.texts() == ["first", "another chat is not limited", "after the window"]
        assert limited.count_429 == 1


async def test_group_limit_per_minute() -> None:
    clock = ManualClock()
    async with FakeTelegram(group_per_minute=2, clock=clock) as limited, make_bot(limited) as client:
        await client.send_message(-10, "a")
        clock.now += 20
        await client.send_message(-10, "b")
        with pytest.raises(RetryAfter) as caught:
            await client.send_message(-10, "c")
        assert retry_seconds(caught.value) == 40
        clock.now += 39.5
        with pytest.raises(RetryAfter) as caught:
            await client.send_message(-10, "c")
        assert retry_seconds(caught.value) == 1  # whole seconds, never 0
        clock.now += 0.5
        await client.send_message(-10, "c")
        await client.send_message(10, "private chats have no per-minute limit")
        await client.send_message(10, "none at all here")
        assert limited.texts() == ["a", "b", "c", "private chats have no per-minute limit", "none at all here"]
        assert limited.count_429 == 2


async def test_global_limit() -> None:
    clock = ManualClock()
    async with FakeTelegram(global_rate=3, clock=clock) as limited, make_bot(limited) as client:
        for chat_id in (1, 2, 3):
            await client.send_message(chat_id, "burst")
        with pytest.raises(RetryAfter):
            await client.send_message(4, "one too many")
        clock.now += 1
        await client.send_message(4, "next second")
        assert limited.texts(4) == ["next second"] and len(limited.sent) == 4


async def test_raw_429_body(fake: FakeTelegram) -> None:
    fake.fail_next("429")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.base_url}{fake.token}/sendMessage", data={"chat_id": "1", "text": "x"}) as response,
    ):
        assert response.status == 429
        assert json.loads(await response.read()) == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        }


async def test_fault_429_uses_configured_retry_after() -> None:
    async with FakeTelegram(fault_retry_after=7) as faulty, make_bot(faulty) as client:
        faulty.fail_next("429")
        with pytest.raises(RetryAfter) as caught:
            await client.send_message(1, "x")
        assert retry_seconds(caught.value) == 7


async def test_5xx_is_network_error_and_not_recorded(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("5xx", n=2)
    for _ in range(2):
        with pytest.raises(NetworkError):
            await bot.send_message(1, "retry me")
    await bot.send_message(1, "retry me")
    assert fake.texts() == ["retry me"]
    assert fake.count_5xx == 2
    assert len(fake.calls_to("sendMessage")) == 3


async def test_dropped_connection_is_network_error(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("drop")
    # TimedOut is a NetworkError too, so either way of noticing the drop passes.
    with pytest.raises(NetworkError):
        await bot.send_message(1, "lost")
    assert fake.sent == [] and fake.count_dropped == 1
    # The client recovers on a fresh connection.
    await bot.send_message(1, "found")
    assert fake.texts() == ["found"]


async def test_slow_answer_still_delivers_once() -> None:
    async with FakeTelegram(slow_delay=0.05) as faulty, make_bot(faulty) as client:
        faulty.fail_next("slow")
        assert (await client.send_message(1, "eventually")).text == "eventually"
        assert faulty.texts() == ["eventually"] and faulty.count_slow == 1


async def test_random_faults_with_retries_deliver_exactly_once() -> None:
    async with FakeTelegram(fault_ratio=0.5, slow_delay=0.01, fault_retry_after=1, seed=7) as faulty:
        async with make_bot(faulty) as client:
            for i in range(12):
                for _attempt in range(50):
                    try:
                        await client.send_message(1, f"msg {i}")
                        break
                    except NetworkError:
                        continue  # 5xx, drop (RetryAfter is not a NetworkError)
                    except RetryAfter:
                        continue  # a test need not honour the wait; the fake keeps no state for it
        faults = faulty.count_5xx + faulty.count_dropped + faulty.count_429
        assert faults > 0
        assert faulty.texts() == [f"msg {i}" for i in range(12)]
        assert len(faulty.calls_to("sendMessage")) == 12 + faults


async def test_blocked_unknown_and_migrated_chats(fake: FakeTelegram, bot: Bot) -> None:
    fake.block_chat(42)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(42, "hi")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(42, "typing")
    fake.unblock_chat(42)
    await bot.send_message(42, "hi again")

    fake.forget_chat(77)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(77, "anyone?")

    fake.migrate_chat(-5, -1005)
    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(-5, "moved")
    assert caught.value.new_chat_id == -1005
    assert fake.texts() == ["hi again"]


async def test_strict_chats() -> None:
    async with FakeTelegram(strict_chats=True) as strict, make_bot(strict) as client:
        with pytest.raises(BadRequest, match="Chat not found"):
            await client.send_message(12, "cold call")
        strict.inject_message(12, "hi")
        await client.send_message(12, "hello")
        assert strict.texts() == ["hello"]


# --------------------------------------------------------------- the rest


async def test_commands_chat_action_close_and_generic(fake: FakeTelegram, bot: Bot) -> None:
    from telegram import BotCommand

    assert await bot.set_my_commands([BotCommand("status", "Where are you?")])
    assert [c.command for c in await bot.get_my_commands()] == ["status"]
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([BotCommand("Status", "capitals are refused")])
    assert await bot.send_chat_action(3, "typing")
    assert fake.chat_actions == [(3, "typing")]
    assert await bot.delete_message(3, 1)
    assert await bot.log_out()
    assert await bot.close()
    assert [m for m, _ in fake.calls][-3:] == ["deleteMessage", "logOut", "close"]


async def test_file_download(fake: FakeTelegram, bot: Bot) -> None:
    file_id = fake.add_file(b"\x89PNG fake", file_path="photos/p.png")
    tg_file = await bot.get_file(file_id)
    assert bytes(await tg_file.download_as_bytearray()) == b"\x89PNG fake"


async def test_bodies_json_empty_and_query(fake: FakeTelegram) -> None:
    url = f"{fake.base_url}{fake.token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/sendMessage", json={"chat_id": 4, "text": "json body"}) as response:
            assert (await response.json())["result"]["text"] == "json body"
        async with http.post(f"{url}/getMe", data=b"", headers={"Content-Type": "text/plain"}) as response:
            assert (await response.json())["ok"] is True
        async with http.get(f"{url}/sendMessage", params={"chat_id": "4", "text": "query"}) as response:
            assert (await response.json())["result"]["chat"]["id"] == 4
        async with http.post(f"{url}/sendMessage", data=b"{broken", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with http.post(f"{fake.url}/nowhere") as response:
            assert response.status == 404
        async with http.post(f"{fake.base_url}1:NOPE/getMe") as response:
            assert response.status == 401
            assert await response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert fake.texts() == ["json body", "query"]


async def test_wait_for_sent_times_out_clearly(fake: FakeTelegram) -> None:
    with pytest.raises(TimeoutError, match=r"expected 1 sent message\(s\) within 0.05s, got 0"):
        await fake.wait_for_sent(1, timeout=0.05)
