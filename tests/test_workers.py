"""Several ``personae run`` workers on one PostgreSQL database.

The end-to-end test starts three real worker processes on a real PostgreSQL
(the session's server, see ``pgserver.py``) and the fake Telegram server, lets
a live timeline broadcast to 2,000 chats, and kill -9s the worker that is
sending in the middle. The others are in-process checks of the pieces: leases
(order per chat, expiry), the lane lock and its failover, and live timeline
keys that are the same in every worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pgserver import PgServer

from fakes.telegram_api import FakeTelegram, unused_tcp_port
from personae.storage.postgres import PostgresStore
from personae.storage.postgres_workers import lock_key

TOKEN = "424242:WORKERS-not-a-real-token"


def rows(adapter: str, chats: list[str], tag: str) -> list[dict[str, str]]:
    return [
        {"key": f"{tag}|{adapter}|{c}", "persona": "p", "adapter": adapter, "chat": c, "text": f"{tag} to {c}"}
        for c in chats
    ]


@contextlib.asynccontextmanager
async def stores(url: str, n: int) -> AsyncIterator[list[PostgresStore]]:
    """``n`` stores on one database: ``n`` workers, as far as the database can tell."""
    opened = [await PostgresStore(url).open() for _ in range(n)]
    try:
        yield opened
    finally:
        for s in opened:
            await s.close()


# --------------------------------------------------------------------------- leases


async def test_a_chat_whose_earlier_row_another_worker_holds_waits_for_it(postgres_server: PgServer):
    async with stores(postgres_server.new_database(), 2) as (a, b):
        await a.outbox_add(rows("tg", ["1", "2"], "first"))
        await a.outbox_add(rows("tg", ["1", "2", "3"], "second"))
        ca, cb = a.coordination, b.coordination
        assert ca is not None and cb is not None
        got = await ca.outbox_lease(["tg"], 1, 60)  # a holds chat 1's first row
        assert [(i.chat, i.text) for i in got] == [("1", "first to 1")]
        # b may not send chat 1's second row before a's first; everything else is b's, oldest first.
        taken = await cb.outbox_lease(["tg"], 100, 60)
        assert [(i.chat, i.text) for i in taken] == [("2", "first to 2"), ("2", "second to 2"), ("3", "second to 3")]
        assert await cb.outbox_lease(["tg"], 100, 60) == []  # nothing is leased twice
        # Chat 1's second row goes to the worker that holds its first: it sends them in order.
        assert [i.text for i in await ca.outbox_lease(["tg"], 100, 60)] == ["second to 1"]
        assert await ca.outbox_lease(["tg"], 100, 60) == []


async def test_a_dead_workers_leases_expire_and_another_takes_its_rows_in_order(postgres_server: PgServer):
    async with stores(postgres_server.new_database(), 2) as (a, b):
        await a.outbox_add(rows("tg", ["1"], "first") + rows("tg", ["1"], "second") + rows("tg", ["2"], "x"))
        ca, cb = a.coordination, b.coordination
        assert ca is not None and cb is not None
        assert len(await ca.outbox_lease(["tg"], 1, 0.5)) == 1  # a "dies" holding chat 1's first row
        assert [i.chat for i in await cb.outbox_lease(["tg"], 100, 60)] == ["2"]
        await asyncio.sleep(1.0)  # past a's lease, by the database's clock
        assert [i.text for i in await cb.outbox_lease(["tg"], 100, 60)] == ["first to 1", "second to 1"]


async def test_renewed_leases_hold_and_released_ones_are_free_at_once(postgres_server: PgServer):
    async with stores(postgres_server.new_database(), 2) as (a, b):
        await a.outbox_add(rows("tg", ["1", "2"], "m") + rows("dc", ["3"], "m"))
        ca, cb = a.coordination, b.coordination
        assert ca is not None and cb is not None
        assert len(await ca.outbox_lease(["tg", "dc"], 100, 0.5)) == 3
        assert await ca.outbox_renew(["tg"], 60) == 2
        await asyncio.sleep(1.0)
        assert [i.adapter for i in await cb.outbox_lease(["tg", "dc"], 100, 60)] == ["dc"]  # only dc's expired
        assert await cb.outbox_release(["dc"]) == 1 and await ca.outbox_release(["tg"]) == 2
        assert sorted(i.chat for i in await ca.outbox_lease(["tg", "dc"], 100, 60)) == ["1", "2", "3"]


async def test_one_worker_holds_a_lane_and_another_takes_it_when_its_session_ends(postgres_server: PgServer):
    async with stores(postgres_server.new_database(), 2) as (a, b):
        ca, cb = a.coordination, b.coordination
        assert ca is not None and cb is not None
        async with ca.exclusive("dispatch:tg", retry=0.1) as lost_a:
            waiting = asyncio.create_task(_hold(cb, "dispatch:tg"))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # a holds it
            async with cb.exclusive("dispatch:dc", retry=0.1):  # another lane is free
                pass
            # a's session ends (a crash, a lost connection): a learns it lost the lane, b takes it over.
            await a._conn.pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = $1 AND objid = $2",
                *_lock_ids("dispatch:tg"),
            )
            async with asyncio.timeout(30):
                await lost_a.wait()
                holder = await waiting
            assert holder == cb.owner


async def _hold(coordination: object, name: str) -> str:
    async with coordination.exclusive(name, retry=0.1):  # type: ignore[attr-defined]
        return coordination.owner  # type: ignore[attr-defined, no-any-return]


def _lock_ids(name: str) -> tuple[int, int]:
    """``pg_locks``' (classid, objid) of a bigint advisory lock."""
    key = lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF
    return key >> 32, key & 0xFFFF_FFFF


# --------------------------------------------------------------------------- three real workers

CHATS = 2000
EVENTS = 2
#: Seconds from launching the workers to the first timeline event: all three must be running by then.
MARGIN = 20.0

PERSONA = """\
persona: probe
name: Probe
events:
  bulletin:
    say: "Bulletin {{ event.n }} from the comet"
"""


def _bot(tmp: Path, url: str, port: int, first: datetime) -> list[str]:
    """Personas, the timeline, and one bot.toml per worker (each listens for the webhook on a port of its own)."""
    (tmp / "personas").mkdir()
    (tmp / "personas" / "probe.yaml").write_text(PERSONA, encoding="utf-8")
    events = "\n".join(
        f'  - {{at: "{(first + timedelta(seconds=2 * n)).isoformat()}", event: bulletin, data: {{n: {n + 1}}}}}'
        for n in range(EVENTS)
    )
    (tmp / "mission.yaml").write_text(f"timeline: mission\ncast: [probe]\nevents:\n{events}\n", encoding="utf-8")
    configs = []
    for n in range(3):
        configs.append(f"bot-{n}.toml")
        (tmp / configs[-1]).write_text(
            f'[bot]\npersonas = ["personas/*.yaml"]\ndatabase = "{url}"\nreload = false\nlease = 3\n\n'
            '[[adapters]]\nname = "tg"\ntype = "telegram"\npersona = "probe"\ntoken_env = "TG_TOKEN"\n'
            f'base_url = "http://127.0.0.1:{port}/bot"\nbase_file_url = "http://127.0.0.1:{port}/file/bot"\n'
            f'mode = "webhook"\nwebhook_url = "https://bot.example/tg"\nport = {unused_tcp_port()}\n'
            "global_rate = 400\nper_chat_rate = 1\nconcurrency = 16\n\n"
            '[[timelines]]\nfile = "mission.yaml"\nmode = "live"\n',
            encoding="utf-8",
        )
    return configs


class Worker:
    """A ``personae run`` process; its stderr is collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.ready_at: datetime | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if "personae running" in line:
                self.ready_at = datetime.now(UTC)
            self.lines.append(line)


async def _until(what: str, check: object, timeout: float = 60.0) -> None:
    """Hang guard: wait until ``check()`` is true."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # type: ignore[operator]
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


@pytest.mark.timeout(600)
async def test_three_workers_share_a_broadcast_and_survive_a_kill(postgres_server: PgServer, tmp_path: Path):
    url = postgres_server.new_database()
    chats = [str(500_000 + i) for i in range(CHATS)]
    total = CHATS * EVENTS
    async with FakeTelegram(TOKEN, global_rate=400, per_chat_rate=1) as fake, stores(url, 1) as (db,):
        await db.subscribe_many("tg", chats, "probe")
        first = datetime.now(UTC) + timedelta(seconds=MARGIN)
        configs = _bot(tmp_path, url, fake.port, first)
        env = {**os.environ, "TG_TOKEN": TOKEN}
        workers = [
            Worker(
                await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "personae", "run", "--config", config),
                    cwd=tmp_path,
                    env=env,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
            for config in configs
        ]
        try:

            async def all_ready() -> bool:
                dead = [w for w in workers if w.proc.returncode is not None]
                assert not dead, "\n".join(dead[0].lines)
                return all(w.ready_at for w in workers)

            await _until("three running workers", all_ready)
            late = [w.ready_at for w in workers if w.ready_at and w.ready_at >= first]
            assert not late, f"a worker started after the first event (machine too busy? raise MARGIN): {late}"

            async def a_third_sent() -> bool:
                return len(fake.sent) >= total // 3

            await _until("a third of the broadcast", a_third_sent, timeout=MARGIN + 120)
            # Kill the worker that is sending: the holder of the lane's lock.
            killed, held = await kill_lock_holder(db, workers, "dispatch:tg")

            async def all_sent() -> bool:
                counts = await db.outbox_counts()
                return counts.get("sent", 0) == total and len(fake.sent) >= total

            try:
                await _until("every message sent", all_sent, timeout=300)  # a hang guard: a busy machine is slow
            except AssertionError:
                counts = await db.outbox_counts()
                lines = "\n".join(x for w in workers for x in w.lines)
                raise AssertionError(f"not all sent: {counts}, fake saw {len(fake.sent)}\n{lines[-3000:]}") from None
        finally:
            for w in workers:
                if w.proc.returncode is None:
                    w.proc.send_signal(signal.SIGTERM)
            for w in workers:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.proc.wait(), 30)
                if w.proc.returncode is None:
                    w.proc.kill()
                    await w.proc.wait()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.reader, 5)

        received = [(str(m.chat_id), m.text) for m in fake.sent]
        counts = collections.Counter(received)
        expected = {(c, f"Bulletin {n} from the comet") for c in chats for n in range(1, EVENTS + 1)}
        assert set(counts) == expected  # every message delivered, nothing else
        repeats = {m: n for m, n in counts.items() if n > 1}
        # The only repeats are messages in flight on the killed worker: leased to it, unmarked when it died,
        # at most one per send slot, and each sent twice at most.
        logs = "\n".join(x for w in workers for x in w.lines)
        assert set(repeats) <= held, (len(repeats), len(held), len(set(repeats) & held), logs[-3000:])
        assert len(repeats) <= 16 and set(repeats.values()) <= {2}, (repeats, logs[-3000:])
        print(f"\n{len(repeats)} message(s) repeated: in flight on the killed worker ({len(held)} leased to it)")
        by_chat: dict[str, list[str]] = collections.defaultdict(list)
        for chat, text in received:
            if not by_chat[chat] or by_chat[chat][-1] != text:  # a repeat comes right after itself
                by_chat[chat].append(text)
        order = [f"Bulletin {n} from the comet" for n in range(1, EVENTS + 1)]
        assert all(seq == order for seq in by_chat.values())  # every chat's order kept
        assert fake.count_429 == 0
        # The timeline fired in three workers, once: one outbox row per chat and event, one log row per event.
        assert sum((await db.outbox_counts()).values()) == total
        events = await db.query_log(direction="event")
        assert [e["event"] for e in events] == ["bulletin"] * EVENTS
        assert len(await db.query_log(direction="out")) == EVENTS
        for w in workers:
            if w is not killed:
                assert w.proc.returncode == 0, "\n".join(w.lines)
                assert not [x for x in w.lines if "Traceback" in x or "ERROR" in x], "\n".join(w.lines)


# --------------------------------------------------------------------------- live timelines and cron, once

CRONNY = """\
persona: probe
name: Probe
events:
  bulletin:
    say: "Bulletin {{ event.n }}"
    emit: {event: echoed}
  echoed:
    say: "Echo"
schedule:
  - cron: "* * * * *"
    event: tick
    say: "Tick at {{ event.at }}"
"""


async def test_live_timelines_and_cron_fire_once_however_many_workers_fire_them(postgres_server: PgServer):
    # Every worker plays the live timelines and cron entries; their keys are the same in every
    # worker, so the outbox and the log keep one copy of each firing (no lock to lose, no event lost
    # with a dead worker).
    from personae.adapters.base import AdapterConfig
    from personae.adapters.null import NullAdapter
    from personae.app.replay import live
    from personae.app.runtime import Bot
    from personae.language.loader import parse_persona
    from personae.language.source import parse_yaml
    from personae.timing.clock import VirtualClock
    from personae.timing.timeline import timeline_from_source

    start = datetime(2030, 1, 1, 11, 59, 30, tzinfo=UTC)
    timeline = timeline_from_source(
        parse_yaml(
            "timeline: mission\ncast: [probe]\nevents:\n"
            f'  - {{at: "{start + timedelta(seconds=10)}", event: bulletin, data: {{n: 1}}}}\n'
            f'  - {{at: "{start + timedelta(seconds=70)}", event: bulletin, data: {{n: 2}}}}\n',
            "mission.yaml",
        )
    )
    end = start + timedelta(seconds=80)
    async with stores(postgres_server.new_database(), 3) as workers:
        await workers[0].subscribe_many("null", ["1", "2", "3"], "probe")
        for store in workers:  # one after the other: the same firings, whatever each worker's timing
            clock = VirtualClock(start, None)
            bot = Bot(
                {"probe": parse_persona(CRONNY)},
                [NullAdapter(AdapterConfig("null", "probe"))],
                store=store,
                clock=clock,
            )
            await bot.outlet.load_subscribers()
            await live(bot, timeline)
            bot.start_schedules()
            await bot.scheduler.run(until=end)
            bot.stop_schedules()
            await bot.flush()
            await store.flush()
        db = workers[0]
        texts = collections.Counter(r["text"] for r in await db.query_log(direction="out"))
        assert texts == {"Bulletin 1": 1, "Bulletin 2": 1, "Echo": 2, "Tick at 2030-01-01 12:00:00+00:00": 1}
        assert [e["event"] for e in await db.query_log(direction="event")] == ["bulletin", "echoed"] * 2
        chats = collections.Counter(r[0] for r in await db._conn.pool.fetch("SELECT chat FROM outbox"))
        assert {"1", "2", "3"} <= set(chats) and set(chats.values()) == {5}  # five messages to each chat, once


# --------------------------------------------------------------------------- the HTTP intake on PostgreSQL

SECRET = "workers-intake-secret-0123456789"


async def _line(worker: Worker, part: str, timeout: float = 60) -> str:
    async def seen() -> bool:
        assert worker.proc.returncode is None or not worker.reader.done(), "\n".join(worker.lines)
        return any(part in x for x in worker.lines)

    await _until(repr(part), seen, timeout)
    return next(x for x in worker.lines if part in x)


async def _post(url: str, body: object, key: str) -> tuple[int, object]:
    import aiohttp

    headers = {"Authorization": f"Bearer {SECRET}", "Idempotency-Key": key}
    async with aiohttp.ClientSession() as http, http.post(f"{url}/events", json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_an_event_posted_to_a_worker_killed_after_the_202_is_played_once_by_another(
    postgres_server: PgServer, tmp_path: Path
):
    url = postgres_server.new_database()
    port = unused_tcp_port()  # Telegram is down at first: the first worker cannot play what it stores
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "probe.yaml").write_text(PERSONA, encoding="utf-8")
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["personas/*.yaml"]\ndatabase = "{url}"\nreload = false\n\n'
        '[[adapters]]\nname = "tg"\ntype = "telegram"\npersona = "probe"\ntoken_env = "TG_TOKEN"\n'
        f'base_url = "http://127.0.0.1:{port}/bot"\nbase_file_url = "http://127.0.0.1:{port}/file/bot"\n'
        "poll_timeout = 1\nchannels = [-1001]\n\n[http]\nport = 0\nrate = 0\n",
        encoding="utf-8",
    )
    env = {**os.environ, "TG_TOKEN": TOKEN, "PERSONAE_HTTP_SECRET": SECRET}

    async def start() -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "personae", "run", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        return Worker(proc)

    body = {"event": "bulletin", "data": {"n": 7}}
    first = await start()
    try:
        where = (await _line(first, "http: listening on")).split()[3]
        status, answer = await _post(where, body, "once")
        assert status == 202
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
    finally:
        if first.proc.returncode is None:
            first.proc.kill()
            await first.proc.wait()
    async with FakeTelegram(TOKEN, port=port) as fake, stores(url, 1) as (db,):
        second = await start()
        try:
            [sent] = await fake.wait_for_sent(1, timeout=60)
            assert sent.text == "Bulletin 7 from the comet" and sent.chat_id == -1001
            where = (await _line(second, "http: listening on")).split()[3]
            # Posted again, to another worker, by a client that never saw the 202: the same id, nothing new.
            assert await _post(where, body, "once") == (202, answer)

            async def played() -> bool:
                return [tuple(r) for r in await db._conn.pool.fetch("SELECT status FROM intake")] == [("played",)]

            await _until("the event played", played)
            second.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.proc.wait(), 30) == 0
        finally:
            if second.proc.returncode is None:
                second.proc.kill()
                await second.proc.wait()
        assert [m.text for m in fake.sent] == ["Bulletin 7 from the comet"]
        assert sum((await db.outbox_counts()).values()) == 1
        assert [e["event"] for e in await db.query_log(direction="event")] == ["bulletin"]
        assert not [x for x in second.lines if "Traceback" in x or SECRET in x], "\n".join(second.lines)


async def kill_lock_holder(db: PostgresStore, workers: list[Worker], lock: str) -> tuple[Worker, set[tuple[str, str]]]:
    """kill -9 the worker holding the advisory lock ``lock``: that worker, and the (chat, text) rows it had leased."""
    owner = await db._conn.pool.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2",
        *_lock_ids(lock),
    )
    pid = int(owner.split(":")[2])
    killed = next(w for w in workers if w.proc.pid == pid)
    os.kill(pid, signal.SIGKILL)
    await killed.proc.wait()
    rows = await db._conn.pool.fetch(
        "SELECT chat, text FROM outbox WHERE status = 'pending' AND lease_owner = $1", owner
    )
    return killed, {(r["chat"], r["text"]) for r in rows}
