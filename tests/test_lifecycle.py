"""``personae run`` as a subprocess against the fake platforms: SIGTERM delivers what is queued, start retries.

Each test runs the real command line in a child process and the fake server in
the test's event loop, so the fake can be slowed, started late or made to refuse
the token while the bot runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakes.discord_api import FakeChannel, FakeDiscord, FakeGuild
from fakes.telegram_api import FakeTelegram, unused_tcp_port

TG_TOKEN = "987654:TEST-secret-token-do-not-leak"
DC_TOKEN = "TEST.DISCORD.secret-token-do-not-leak"
GUILD = 9_000_000_000_000_000_001
GENERAL = 9_000_000_000_000_000_010
BOT_ID = 9_200_000_000_000_000_001
LAUNCHER = Path(__file__).parent / "fakes" / "run_with_fake_discord.py"

# An answer long enough to be split in several pieces on either platform.
STORY = """\
persona: lander
name: Lander
replies:
  - when: {command: story}
    say: "{% for i in range(REPEAT) %}Day {{ i }} on the comet was long {% endfor %}"
  - when: {command: status}
    say: "Phase cruise."
"""


class Personae:
    """A ``personae run`` child process; its stderr is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._changed.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, part: str, timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            while True:
                found = next((line for line in self.lines if part in line), None)
                if found is not None:
                    return found
                if self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(f"personae exited before printing {part!r}:\n{self.stderr}")
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.5)

    async def wait(self, timeout: float = 30) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code


@contextlib.asynccontextmanager
async def personae_run(cwd: Path, env: dict[str, str], *, launcher: Path | None = None) -> AsyncIterator[Personae]:
    args = [str(launcher)] if launcher else ["-m", "personae"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, "run", cwd=cwd, env={**os.environ, **env}, stderr=asyncio.subprocess.PIPE
    )
    child = Personae(proc)
    try:
        yield child
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(child._reader, 5)


def write_config(tmp_path: Path, adapter: str, repeat: int = 1) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "lander.yaml").write_text(STORY.replace("REPEAT", str(repeat)), encoding="utf-8")
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{personas}/*.yaml"]\ndatabase = "bot.db"\n\n[[adapters]]\n{adapter}', encoding="utf-8"
    )


def telegram_adapter(port: int, **options: object) -> str:
    extra = "".join(f"{k} = {v!r}\n" for k, v in options.items())
    return (
        'type = "telegram"\npersona = "lander"\ntoken_env = "LANDER_TG_TOKEN"\n'
        f'base_url = "http://127.0.0.1:{port}/bot"\nbase_file_url = "http://127.0.0.1:{port}/file/bot"\n'
        f"poll_timeout = 1\n{extra}"
    )


def outbox(tmp_path: Path) -> list[tuple[str, str | None]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "bot.db")) as db:
        return list(db.execute("SELECT status, last_error FROM outbox ORDER BY id"))


def story(repeat: int) -> str:
    return "".join(f"Day {i} on the comet was long " for i in range(repeat))


def squash(text: str) -> str:
    return "".join(text.split())


# --------------------------------------------------------------------------- SIGTERM mid-delivery


async def test_sigterm_mid_answer_delivers_every_telegram_piece_first(tmp_path):
    repeat = 900  # about 26,000 characters: 7 pieces of at most 4096
    async with FakeTelegram(TG_TOKEN) as fake:
        # 4 messages a second to one chat: the answer takes ~1.5 s, so SIGTERM lands mid-delivery.
        write_config(tmp_path, telegram_adapter(fake.port, per_chat_rate=4), repeat)
        async with personae_run(tmp_path, {"LANDER_TG_TOKEN": TG_TOKEN}) as child:
            await child.wait_for_line("personae running")
            fake.inject_message(42, "/story")
            await fake.wait_for_sent(1, timeout=30)
            child.proc.send_signal(signal.SIGTERM)
            assert await child.wait() == 0, child.stderr
    pieces = [m.text for m in fake.sent if m.chat_id == 42]
    assert len(pieces) >= 3 and squash("".join(pieces)) == squash(story(repeat)), child.stderr
    assert {status for status, _ in outbox(tmp_path)} == {"sent"}, outbox(tmp_path)
    assert "Traceback" not in child.stderr and TG_TOKEN not in child.stderr


async def test_sigterm_mid_answer_delivers_every_discord_piece_first(tmp_path):
    repeat = 450  # about 13,000 characters: 7 pieces of at most 2000
    guild = FakeGuild(GUILD, "Mission Control", channels=(FakeChannel(GENERAL, "general"),))
    async with FakeDiscord(DC_TOKEN, bot_user_id=BOT_ID, guilds=[guild], route_limit=(100, 1.0)) as fake:
        adapter = (
            'type = "discord"\npersona = "lander"\ntoken_env = "LANDER_DC_TOKEN"\n'
            f"channels = [{GENERAL}]\nguild_ready_timeout = 0.1\nper_chat_rate = 4\n"
        )
        write_config(tmp_path, adapter, repeat)
        env = {
            "LANDER_DC_TOKEN": DC_TOKEN,
            "FAKE_DISCORD_REST": fake.rest_base,
            "FAKE_DISCORD_GATEWAY": fake.gateway_url,
        }
        async with personae_run(tmp_path, env, launcher=LAUNCHER) as child:
            await child.wait_for_line("personae running")
            await fake.inject_message(GENERAL, "!story")
            await fake.wait_for_sent(1, timeout=30)
            child.proc.send_signal(signal.SIGTERM)
            assert await child.wait() == 0, child.stderr
    pieces = [m.content or "" for m in fake.sent if m.channel_id == GENERAL]
    assert len(pieces) >= 3 and squash("".join(pieces)) == squash(story(repeat)), child.stderr
    assert {status for status, _ in outbox(tmp_path)} == {"sent"}, outbox(tmp_path)
    assert "Traceback" not in child.stderr and DC_TOKEN not in child.stderr


# --------------------------------------------------------------------------- start: retry, or a clear refusal


async def test_telegram_down_or_failing_at_start_is_retried_until_it_works(tmp_path):
    port = unused_tcp_port()  # nothing listens there yet
    write_config(tmp_path, telegram_adapter(port))
    async with personae_run(tmp_path, {"LANDER_TG_TOKEN": TG_TOKEN}) as child:
        await child.wait_for_line("retrying in")
        # Up at last, but its first answer is a server error: one more retry.
        async with FakeTelegram(TG_TOKEN, port=port, fault_methods=("getMe",)) as fake:
            fake.fail_next("5xx")
            await child.wait_for_line("personae running")
            fake.inject_message(42, "/status")
            [answer] = await fake.wait_for_sent(1, timeout=30)
            child.proc.send_signal(signal.SIGTERM)
            assert await child.wait() == 0, child.stderr
    assert answer.text == "Phase cruise."
    retries = [line for line in child.lines if "retrying in" in line]
    # One line per attempt: the adapter, what failed, and the growing wait.
    assert [line.rsplit(", ", 1)[1] for line in retries] == ["retrying in 1 s", "retrying in 2 s"], child.stderr
    assert all("telegram-lander: cannot reach Telegram (" in line for line in retries), retries
    assert "Traceback" not in child.stderr and TG_TOKEN not in child.stderr


async def test_a_refused_token_at_start_is_one_line_and_exit_1(tmp_path):
    async with FakeTelegram("111:ANOTHER-token") as fake:  # so ours gets 401
        write_config(tmp_path, telegram_adapter(fake.port))
        async with personae_run(tmp_path, {"LANDER_TG_TOKEN": TG_TOKEN}) as child:
            assert await child.wait() == 1, child.stderr
    assert child.lines == [
        "error: adapter 'telegram-lander' failed to start: Telegram refused the token (InvalidToken)"
    ], child.stderr


async def test_sigterm_while_retrying_the_start_stops_cleanly(tmp_path):
    write_config(tmp_path, telegram_adapter(unused_tcp_port()))
    async with personae_run(tmp_path, {"LANDER_TG_TOKEN": TG_TOKEN}) as child:
        await child.wait_for_line("retrying in")
        child.proc.send_signal(signal.SIGTERM)
        assert await child.wait() == 0, child.stderr
    assert "Traceback" not in child.stderr and child.lines[-1] == "stopped.", child.stderr


async def test_discord_down_at_start_is_retried_with_a_fresh_client(tmp_path, caplog):
    """In process: discord.py's endpoints are class attributes, pointed by hand at a port nobody serves yet."""
    import discord.gateway
    import discord.http
    import yarl

    from personae.adapters.base import AdapterConfig
    from personae.adapters.discord import DiscordAdapter
    from personae.app.runtime import Bot, BotOptions
    from personae.language.loader import load_personas
    from personae.storage.store import Store

    write_config(tmp_path, "")
    port = unused_tcp_port()
    guild = FakeGuild(GUILD, "Mission Control", channels=(FakeChannel(GENERAL, "general"),))
    route, ws = discord.http.Route, discord.gateway.DiscordWebSocket
    old = route.BASE, ws.DEFAULT_GATEWAY
    route.BASE = f"http://127.0.0.1:{port}/api/v10"
    ws.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/gateway")
    store = await Store(tmp_path / "dc.db").open()
    try:
        options = {"token_env": "T", "guild_ready_timeout": 0.1, "ready_timeout": 10}
        adapter = DiscordAdapter.create(AdapterConfig("dc", "lander", (str(GENERAL),), (), options), {"T": DC_TOKEN})
        personas = load_personas([tmp_path / "personas"])
        bot = Bot(personas, [adapter], store=store, options=BotOptions(start_backoff=0.2))
        starting = asyncio.create_task(bot.start(schedules=False))
        try:
            async with asyncio.timeout(20):
                while "retrying in" not in caplog.text:
                    await asyncio.sleep(0.05)
            assert not starting.done()
            async with FakeDiscord(DC_TOKEN, bot_user_id=BOT_ID, guilds=[guild], port=port) as fake:
                await asyncio.wait_for(starting, 20)
                await fake.inject_message(GENERAL, "!status")
                [answer] = await fake.wait_for_sent(1, timeout=20)
                await bot.stop()
        finally:
            if not starting.done():
                starting.cancel()
                await bot.stop()
    finally:
        route.BASE, ws.DEFAULT_GATEWAY = old
        await store.close()
    assert answer.content == "Phase cruise."
    assert "dc: cannot reach Discord (" in caplog.text and DC_TOKEN not in caplog.text


async def test_a_refused_discord_token_is_a_final_one_line_error(tmp_path):
    from personae.adapters.base import AdapterConfig
    from personae.adapters.discord import DiscordAdapter
    from personae.app.runtime import AdapterStartError, Bot
    from personae.language.loader import load_personas

    write_config(tmp_path, "")
    async with FakeDiscord("another.token", bot_user_id=BOT_ID) as fake:
        with fake.patch_discord():
            options = {"token_env": "T", "ready_timeout": 10}
            adapter = DiscordAdapter.create(AdapterConfig("dc", "lander", (), (), options), {"T": DC_TOKEN})
            bot = Bot(load_personas([tmp_path / "personas"]), [adapter], store=None)
            try:
                with pytest.raises(AdapterStartError) as refused:
                    await asyncio.wait_for(bot.start(schedules=False), 20)
            finally:
                await bot.stop()
    assert str(refused.value) == "adapter 'dc' failed to start: Discord refused the token (login failure)"
