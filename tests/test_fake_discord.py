"""The fake Discord against the real, unmodified discord.py: login, gateway, sending, rate limits, faults.

These tests pin what discord.py 2.x does against Discord-shaped answers, so the
adapter can be tested on the same fake.  They assert behaviour, never timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest

from fakes.discord_api import (
    DEFAULT_AUTHOR_ID,
    FORBIDDEN_CHANNEL_ID,
    GENERAL_CHANNEL_ID,
    GUILD_ID,
    FakeDiscord,
)

TOKEN = "TEST.DISCORD.TOKEN"
TIMEOUT = 5.0


class RecordingClient(discord.Client):
    """A plain discord.Client whose on_message queues every message it is given."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()

    async def on_message(self, message: discord.Message) -> None:
        await self.inbox.put(message)

    async def next_message(self) -> discord.Message:
        """The next message on_message saw (fails after TIMEOUT)."""
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT)


class NoIdentifyPauseClient(RecordingClient):
    """Skips the 5 s discord.py sleeps before every IDENTIFY after the first (public hook)."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


def content_intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


@contextlib.asynccontextmanager
async def serve(**kwargs: Any) -> AsyncIterator[FakeDiscord]:
    """A started fake with discord.py pointed at it for the duration."""
    async with FakeDiscord(TOKEN, **kwargs) as fake:
        with fake.patch_discord():
            yield fake


@contextlib.asynccontextmanager
async def running(
    fake: FakeDiscord,
    *,
    intents: discord.Intents | None = None,
    client_cls: type[RecordingClient] = RecordingClient,
) -> AsyncIterator[RecordingClient]:
    """Log a client in and run its gateway loop as a task of the current event loop until on_ready.

    On exit the client is closed and the connect task awaited, so a crash inside it fails the test.
    """
    client = client_cls(intents=intents or content_intents(), guild_ready_timeout=0.1)
    await client.login(fake.token)
    connect = asyncio.create_task(client.connect())
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({connect, ready}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if connect in done:
            connect.result()  # raise the reason it stopped
        assert ready in done, "discord.py never became ready"
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(connect, TIMEOUT)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serve() as server:
        yield server


# -- wiring ------------------------------------------------------------------


async def test_patch_discord_sets_and_restores_the_endpoints() -> None:
    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    async with FakeDiscord(TOKEN) as fake:
        with fake.patch_discord():
            assert fake.rest_base == discord.http.Route.BASE
            assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fake.gateway_url
            assert fake.rest_base.startswith("http://127.0.0.1:")
    assert before == (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)


async def test_login_reaches_on_ready_and_sees_the_guild_channels(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        assert client.is_ready()
        assert client.user is not None and client.user.id == fake.bot_user.id
        assert client.application_id == fake.application_id
        channel = client.get_channel(GENERAL_CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        assert channel.name == "general" and channel.guild.id == GUILD_ID
        locked = client.get_channel(FORBIDDEN_CHANNEL_ID)
        assert isinstance(locked, discord.TextChannel)
        assert not locked.permissions_for(channel.guild.me).send_messages
        assert (fake.identifies, fake.ready_count) == (1, 1)
        assert fake.heartbeats >= 1  # discord.py beats at once after HELLO


async def test_wrong_token_is_a_login_failure(fake: FakeDiscord) -> None:
    client = discord.Client(intents=content_intents())
    with pytest.raises(discord.LoginFailure):
        await client.login("WRONG.DISCORD.TOKEN")
    await client.close()
    bad_auth = {"Authorization": "Bot nope"}
    async with aiohttp.ClientSession() as http, http.get(fake.rest_base + "/users/@me", headers=bad_auth) as resp:
        assert resp.status == 401
        assert resp.headers["Content-Type"] == "application/json"
        assert await resp.json() == {"message": "401: Unauthorized", "code": 0}


async def test_rate_limit_wire_format() -> None:
    """The exact headers and bodies discord.py keys on, read without discord.py."""
    async with serve(route_limit=(1, 60.0)) as fake, aiohttp.ClientSession() as http:
        url = f"{fake.rest_base}/channels/{GENERAL_CHANNEL_ID}/messages"
        auth = {"Authorization": f"Bot {TOKEN}"}
        async with http.post(url, json={"content": "one"}, headers=auth) as ok:
            assert ok.status == 200
            assert ok.headers["Content-Type"] == "application/json"
            assert ok.headers["X-RateLimit-Limit"] == "1"
            assert ok.headers["X-RateLimit-Remaining"] == "0"
            assert float(ok.headers["X-RateLimit-Reset-After"]) > 0
            assert float(ok.headers["X-RateLimit-Reset"]) > 0
            bucket = ok.headers["X-RateLimit-Bucket"]
            message = await ok.json()
            assert message["type"] == 0 and message["content"] == "one"
            assert message["author"]["id"] == str(fake.bot_user.id)
        async with http.post(url, json={"content": "two"}, headers=auth) as limited:
            assert limited.status == 429
            assert limited.headers["Via"] == "1.1 google"
            assert limited.headers["X-RateLimit-Scope"] == "user"
            assert limited.headers["X-RateLimit-Bucket"] == bucket
            assert int(limited.headers["Retry-After"]) >= 1
            body = await limited.json()
            assert body["message"] == "You are being rate limited."
            assert body["global"] is False and body["retry_after"] > 0
        fake.fail_next("429_global", route=None, retry_after=2.0)
        async with http.get(fake.rest_base + "/users/@me", headers=auth) as glob:
            assert glob.status == 429
            assert glob.headers["X-RateLimit-Global"] == "true"
            assert glob.headers["X-RateLimit-Scope"] == "global"
            assert (await glob.json())["global"] is True
        assert len(fake.sent) == 1
        assert fake.count_429 == 2
        assert fake.count_429_by_bucket == {
            f"POST /channels/{{channel_id}}/messages:{GENERAL_CHANNEL_ID}": 1,
            "global": 1,
        }


async def test_fault_ratio_is_repeatable_for_a_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        auth = {"Authorization": f"Bot {TOKEN}"}
        result = []
        async with (
            serve(fault_ratio=0.5, fault_kinds=("503",), seed=seed, route_limit=(100, 1.0)) as fake,
            aiohttp.ClientSession() as http,
        ):
            url = f"{fake.rest_base}/channels/{GENERAL_CHANNEL_ID}/messages"
            for i in range(12):
                async with http.post(url, json={"content": str(i)}, headers=auth) as response:
                    result.append(response.status)
        return result

    first = await statuses(7)
    assert first == await statuses(7)
    assert set(first) == {200, 503}


# -- receiving -----------------------------------------------------------------


async def test_injected_guild_message_reaches_on_message(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        msg_id = await fake.inject_message(GENERAL_CHANNEL_ID, "where are you?", author_name="earthling")
        message = await client.next_message()
        assert message.id == msg_id
        assert message.content == "where are you?"
        assert message.author.id == DEFAULT_AUTHOR_ID and message.author.name == "earthling"
        assert isinstance(message.author, discord.Member)
        assert message.guild is not None and message.guild.id == GUILD_ID
        assert message.channel.id == GENERAL_CHANNEL_ID


async def test_injected_dm_reaches_on_message_and_the_answer_goes_back(fake: FakeDiscord) -> None:
    dm_channel = 1_300_000_000_000_000_001
    async with running(fake) as client:
        await fake.inject_message(dm_channel, "hello lander", author_id=4242, author_name="stranger")
        message = await client.next_message()
        assert message.guild is None
        assert isinstance(message.channel, discord.DMChannel)
        assert message.content == "hello lander" and message.author.name == "stranger"
        await message.channel.send("Hi stranger!")
        (record,) = await fake.wait_for_sent(1)
        assert (record.channel_id, record.content) == (dm_channel, "Hi stranger!")


async def test_without_message_content_intent_guild_content_is_blank(fake: FakeDiscord) -> None:
    async with running(fake, intents=discord.Intents.default()) as client:
        await fake.inject_message(GENERAL_CHANNEL_ID, "status")
        assert (await client.next_message()).content == ""
        mention = f"<@{fake.bot_user.id}> status"
        await fake.inject_message(GENERAL_CHANNEL_ID, mention)
        assert (await client.next_message()).content == mention


async def test_own_messages_come_back_on_the_gateway(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        channel = client.get_channel(GENERAL_CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("Touchdown!")
        echo = await client.next_message()
        assert echo.id == sent.id and echo.author == client.user


# -- sending -------------------------------------------------------------------


async def test_allowed_mentions_none_pings_nobody(fake: FakeDiscord) -> None:
    text = f"@everyone look, <@{DEFAULT_AUTHOR_ID}>!"
    async with running(fake) as client:
        channel = client.get_channel(GENERAL_CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        quiet = await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        loud = await channel.send(text)  # no allowed_mentions at all: Discord parses everything
        first, second = await fake.wait_for_sent(2)
    assert first.content == text
    assert first.allowed_mentions == {"parse": []}
    assert first.nonce is not None  # discord.py always sends one, with enforce_nonce
    assert not first.mention_everyone and first.pinged == frozenset()
    assert not quiet.mention_everyone and quiet.mentions == []
    assert second.allowed_mentions is None
    assert second.mention_everyone and second.pinged == {DEFAULT_AUTHOR_ID}
    assert loud.mention_everyone


async def test_reply_carries_message_reference(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        original = await fake.inject_message(GENERAL_CHANNEL_ID, "ping")
        message = await client.next_message()
        reply = await message.reply("pong")
        quiet = await message.reply("pong again", mention_author=False)
        pinging, silent = await fake.wait_for_sent(2)
    assert pinging.reference_id == original and silent.reference_id == original
    assert reply.type is discord.MessageType.reply
    assert reply.reference is not None and reply.reference.message_id == original
    assert pinging.pinged == {DEFAULT_AUTHOR_ID}  # replies ping the author by default
    # mention_author=False sends AllowedMentions() (parse everything) with replied_user False.
    assert silent.allowed_mentions is not None and silent.allowed_mentions["replied_user"] is False
    assert sorted(silent.allowed_mentions["parse"]) == ["everyone", "roles", "users"]
    assert silent.pinged == frozenset()
    assert quiet.reference is not None


async def test_file_upload_is_recorded_from_multipart(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        channel = client.get_partial_messageable(GENERAL_CHANNEL_ID)
        message = await channel.send("telemetry", file=discord.File(io.BytesIO(b"42"), filename="log.txt"))
        (record,) = await fake.wait_for_sent(1)
    assert (record.content, record.attachments) == ("telemetry", ("log.txt",))
    assert [a.filename for a in message.attachments] == ["log.txt"]


async def test_channel_errors_are_discord_shaped(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        with pytest.raises(discord.NotFound) as unknown:
            await client.get_partial_messageable(999).send("hello?")
        assert (unknown.value.status, unknown.value.code, unknown.value.text) == (404, 10003, "Unknown Channel")
        with pytest.raises(discord.NotFound):
            await client.fetch_channel(999)
        with pytest.raises(discord.Forbidden) as forbidden:
            await client.get_partial_messageable(FORBIDDEN_CHANNEL_ID).send("let me in")
        assert (forbidden.value.code, forbidden.value.text) == (50001, "Missing Access")
        general = client.get_partial_messageable(GENERAL_CHANNEL_ID)
        with pytest.raises(discord.HTTPException) as too_long:
            await general.send("x" * 2001)
        assert (too_long.value.status, too_long.value.code) == (400, 50035)
        fetched = await client.fetch_channel(GENERAL_CHANNEL_ID)
        assert isinstance(fetched, discord.TextChannel) and fetched.name == "general"
    assert fake.sent == []


# -- rate limits ---------------------------------------------------------------


async def test_429_is_waited_out_and_retried_once(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        fake.fail_next("429", retry_after=0.2)
        channel = client.get_partial_messageable(GENERAL_CHANNEL_ID)
        message = await channel.send("after the limit")
        (record,) = await fake.wait_for_sent(1)
    assert record.id == message.id
    assert fake.count_429 == 1
    assert fake.count_429_by_bucket == {f"POST /channels/{{channel_id}}/messages:{GENERAL_CHANNEL_ID}": 1}
    assert fake.count_repeated_429 == 0


async def test_bucket_headers_make_discord_py_wait_before_a_429() -> None:
    async with serve(route_limit=(2, 0.3)) as fake, running(fake) as client:
        channel = client.get_partial_messageable(GENERAL_CHANNEL_ID)
        for i in range(5):
            await channel.send(f"burst {i}")
        sent = await fake.wait_for_sent(5)
    assert [m.content for m in sent] == [f"burst {i}" for i in range(5)]
    assert fake.count_429 == 0  # discord.py read X-RateLimit-Remaining: 0 and slept on its own


async def test_global_429_is_waited_out_and_retried(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        fake.fail_next("429_global", retry_after=0.2)
        await client.get_partial_messageable(GENERAL_CHANNEL_ID).send("global")
        await fake.wait_for_sent(1)
    assert fake.count_429_by_bucket == {"global": 1}
    assert fake.count_repeated_429 == 0


# -- server errors ---------------------------------------------------------------


async def test_503_is_not_retried_by_discord_py(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        fake.fail_next("503")
        with pytest.raises(discord.DiscordServerError) as err:
            await client.get_partial_messageable(GENERAL_CHANNEL_ID).send("lost")
        assert err.value.status == 503
    assert fake.sent == []


async def test_500_is_retried_and_the_nonce_prevents_a_duplicate(fake: FakeDiscord) -> None:
    """500/502/504/524 are retried (sleep 1 + 2*try s); Discord had stored the first try already."""
    async with running(fake) as client:
        fake.fail_next("500_committed")
        message = await client.get_partial_messageable(GENERAL_CHANNEL_ID).send("once only")
        posts = [c for c in fake.requests if c.route == "POST /channels/{channel_id}/messages"]
    assert [c.status for c in posts] == [500, 200]
    assert len(fake.sent) == 1 and fake.sent[0].id == message.id


async def test_dropped_http_connection_raises_a_client_error(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        fake.fail_next("disconnect")
        with pytest.raises(aiohttp.ClientError):
            await client.get_partial_messageable(GENERAL_CHANNEL_ID).send("into the void")
        await client.get_partial_messageable(GENERAL_CHANNEL_ID).send("next one works")
        await fake.wait_for_sent(1)


# -- gateway faults --------------------------------------------------------------


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-frame", "tcp-cut"])
async def test_resumable_drop_resumes_and_replays_the_gap(fake: FakeDiscord, abrupt: bool) -> None:
    async with running(fake) as client:
        await fake.drop_gateway(resumable=True, abrupt=abrupt)
        during = await fake.inject_message(GENERAL_CHANNEL_ID, "sent while you were away")
        await fake.wait_resumed(1)
        message = await client.next_message()
        assert message.id == during
        after = await fake.inject_message(GENERAL_CHANNEL_ID, "welcome back")
        assert (await client.next_message()).id == after
    assert fake.identifies == 1 and fake.resumes == 1
    assert fake.replayed >= 1
    assert fake.gateway_connects["/gateway-resume"] == 1  # the client used resume_gateway_url


async def test_reconnect_opcode_makes_the_client_resume(fake: FakeDiscord) -> None:
    async with running(fake) as client:
        await fake.request_reconnect()
        await fake.wait_resumed(1)
        await fake.inject_message(GENERAL_CHANNEL_ID, "still there?")
        assert (await client.next_message()).content == "still there?"
    assert fake.identifies == 1


async def test_non_resumable_drop_makes_the_client_identify_again(fake: FakeDiscord) -> None:
    async with running(fake, client_cls=NoIdentifyPauseClient) as client:
        await fake.drop_gateway(resumable=False)
        await fake.inject_message(GENERAL_CHANNEL_ID, "during the outage")
        await fake.wait_ready(2)
        assert (await client.next_message()).content == "during the outage"
        assert client.get_channel(GENERAL_CHANNEL_ID) is not None
    assert fake.identifies == 2
    assert fake.invalid_sessions == 1
    assert fake.resumes == 0


async def test_members_intent_gets_members_by_chunk_request(fake: FakeDiscord) -> None:
    intents = content_intents()
    intents.members = True
    async with running(fake, intents=intents) as client:
        guild = client.get_guild(GUILD_ID)
        assert guild is not None and guild.chunked
        assert {m.id for m in guild.members} == {fake.bot_user.id, DEFAULT_AUTHOR_ID}


async def test_privileged_intent_not_enabled_is_refused() -> None:
    async with serve(privileged_intents=()) as fake:
        client = RecordingClient(intents=content_intents(), guild_ready_timeout=0.1)
        await client.login(fake.token)
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.connect(), TIMEOUT)
        await client.close()
