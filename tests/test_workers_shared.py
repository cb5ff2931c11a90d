"""Workers on one PostgreSQL database: a replayed timeline plays once, and subscriptions are shared.

Real ``personae run`` processes on the session's PostgreSQL and the fake
Telegram server. A replayed timeline (``mode = "replay"``) is played by the
worker that holds its run's lock, once for all of them; when that worker is
kill -9ed another takes the run over from its stored position. A chat
subscribed (or unsubscribed) in the database while the workers run gets (or
no longer gets) the next broadcast that every worker fires.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pgserver import PgServer
from test_workers import Worker, _until, kill_lock_holder, stores

from fakes.telegram_api import FakeTelegram, unused_tcp_port

TOKEN = "424242:SHARED-not-a-real-token"
CHATS = ["7001", "7002", "7003"]

PERSONA = """\
persona: probe
name: Probe
state:
  count: 0
events:
  bulletin:
    say: "Bulletin {{ event.n }} (count {{ state.count }})"
    set: {count: "{{ state.count + 1 }}"}
"""


def _config(tmp: Path, url: str, port: int, timeline: str, workers: int) -> list[str]:
    """Personas and one bot.toml per worker (each with a webhook port of its own)."""
    (tmp / "personas").mkdir(exist_ok=True)
    (tmp / "personas" / "probe.yaml").write_text(PERSONA, encoding="utf-8")
    configs = []
    for n in range(workers):
        configs.append(f"bot-{n}.toml")
        (tmp / configs[-1]).write_text(
            f'[bot]\npersonas = ["personas/*.yaml"]\ndatabase = "{url}"\nreload = false\nlease = 3\n\n'
            '[[adapters]]\nname = "tg"\ntype = "telegram"\npersona = "probe"\ntoken_env = "TG_TOKEN"\n'
            f'base_url = "http://127.0.0.1:{port}/bot"\nbase_file_url = "http://127.0.0.1:{port}/file/bot"\n'
            f'mode = "webhook"\nwebhook_url = "https://bot.example/tg"\nport = {unused_tcp_port()}\n'
            "global_rate = 400\nper_chat_rate = 5\n\n" + timeline,
            encoding="utf-8",
        )
    return configs


def _timeline(tmp: Path, events: int, first: datetime, step: float) -> None:
    lines = "\n".join(
        f'  - {{at: "{(first + timedelta(seconds=step * n)).isoformat()}", event: bulletin, data: {{n: {n + 1}}}}}'
        for n in range(events)
    )
    (tmp / "mission.yaml").write_text(f"timeline: mission\ncast: [probe]\nevents:\n{lines}\n", encoding="utf-8")


async def _launch(tmp: Path, config: str, *extra: str) -> Worker:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "personae", "run", "--config", config, *extra),
        cwd=tmp,
        env={**os.environ, "TG_TOKEN": TOKEN},
        stderr=asyncio.subprocess.PIPE,
    )
    return Worker(proc)


async def _stop(workers: list[Worker]) -> None:
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


def _logs(workers: list[Worker]) -> str:
    return "\n".join(x for w in workers for x in w.lines)[-4000:]


REPLAY = '[[timelines]]\nfile = "mission.yaml"\nmode = "replay"\nspeed = 1\n'


@pytest.mark.timeout(240)
async def test_three_workers_play_a_replayed_timeline_once(postgres_server: PgServer, tmp_path: Path):
    url = postgres_server.new_database()
    events = 8
    _timeline(tmp_path, events, datetime(2014, 11, 12, 15, 0, tzinfo=UTC), 1.0)
    async with FakeTelegram(TOKEN, global_rate=400, per_chat_rate=5) as fake, stores(url, 1) as (db,):
        await db.subscribe_many("tg", CHATS, "probe")
        configs = _config(tmp_path, url, fake.port, REPLAY, 3)
        workers = [await _launch(tmp_path, c, "--until-done") for c in configs]
        try:

            async def all_exited() -> bool:
                return all(w.proc.returncode is not None for w in workers)

            await _until("every worker to finish the run", all_exited, timeout=180)
        finally:
            await _stop(workers)
        logs = _logs(workers)
        assert [w.proc.returncode for w in workers] == [0, 0, 0], logs
        assert not [x for x in logs.splitlines() if "Traceback" in x or "warning" in x.lower()], logs
        received = collections.Counter((str(m.chat_id), m.text) for m in fake.sent)
        # One run, played by one worker: each event once per chat, its state counted once.
        expected = {(c, f"Bulletin {n} (count {n})") for c in CHATS for n in range(1, events + 1)}
        assert set(received) == expected, logs
        assert set(received.values()) == {1}, logs
        assert [r["status"] for r in await db._conn.pool.fetch("SELECT status FROM replays")] == ["done"]
        assert [e["event"] for e in await db.query_log(direction="event")] == ["bulletin"] * events
        # The two that did not play it say so.
        assert sum("was played by a worker of this database" in x for x in logs.splitlines()) == 2, logs


@pytest.mark.timeout(240)
async def test_the_replay_is_taken_over_when_its_player_is_killed(postgres_server: PgServer, tmp_path: Path):
    url = postgres_server.new_database()
    events = 14
    _timeline(tmp_path, events, datetime(2014, 11, 12, 15, 0, tzinfo=UTC), 1.0)
    async with FakeTelegram(TOKEN, global_rate=400, per_chat_rate=5) as fake, stores(url, 1) as (db,):
        await db.subscribe_many("tg", CHATS, "probe")
        configs = _config(tmp_path, url, fake.port, REPLAY, 2)
        workers = [await _launch(tmp_path, c, "--until-done") for c in configs]
        try:

            async def a_third_sent() -> bool:
                dead = [w for w in workers if w.proc.returncode is not None]
                assert not dead, "\n".join(dead[0].lines)
                return len(fake.sent) >= len(CHATS) * events // 3

            await _until("a third of the replay", a_third_sent, timeout=120)
            [run] = [r["run"] for r in await db._conn.pool.fetch("SELECT run FROM replays")]
            killed, held = await kill_lock_holder(db, workers, f"replay:{run}")
            other = next(w for w in workers if w is not killed)

            async def other_done() -> bool:
                return other.proc.returncode is not None

            await _until("the other worker to finish the run", other_done, timeout=180)
        finally:
            await _stop(workers)
        logs = _logs(workers)
        assert other.proc.returncode == 0, logs
        assert any("taking the run over" in x for x in other.lines), logs
        received = [(str(m.chat_id), m.text) for m in fake.sent]
        counts = collections.Counter(received)
        # The state is rebuilt by the taker: the n-th bulletin still says n.
        expected = {(c, f"Bulletin {n} (count {n})") for c in CHATS for n in range(1, events + 1)}
        assert set(counts) == expected, logs  # nothing lost, nothing else
        repeats = {m for m, n in counts.items() if n > 1}
        assert repeats <= held and set(counts.values()) <= {1, 2}, (repeats, held, logs)
        by_chat: dict[str, list[str]] = collections.defaultdict(list)
        for chat, text in received:
            if not by_chat[chat] or by_chat[chat][-1] != text:
                by_chat[chat].append(text)
        order = [f"Bulletin {n} (count {n})" for n in range(1, events + 1)]
        assert all(seq == order for seq in by_chat.values()), by_chat
        assert [r["status"] for r in await db._conn.pool.fetch("SELECT status FROM replays")] == ["done"]
        assert [e["event"] for e in await db.query_log(direction="event")] == ["bulletin"] * events


@pytest.mark.timeout(240)
async def test_a_subscription_made_while_workers_run_gets_the_next_broadcast_and_unsubscribing_stops_it(
    postgres_server: PgServer, tmp_path: Path
):
    url = postgres_server.new_database()
    margin, gap = 15.0, 8.0  # workers up before the first event; the second well after the unsubscribe
    first = datetime.now(UTC) + timedelta(seconds=margin)
    _timeline(tmp_path, 2, first, gap)
    live = '[[timelines]]\nfile = "mission.yaml"\nmode = "live"\n'
    async with FakeTelegram(TOKEN, global_rate=400, per_chat_rate=5) as fake, stores(url, 1) as (db,):
        await db.subscribe_many("tg", CHATS[:1], "probe")
        workers = [await _launch(tmp_path, c) for c in _config(tmp_path, url, fake.port, live, 2)]
        try:

            async def all_ready() -> bool:
                dead = [w for w in workers if w.proc.returncode is not None]
                assert not dead, "\n".join(dead[0].lines)
                return all(w.ready_at for w in workers)

            await _until("two running workers", all_ready)
            assert datetime.now(UTC) < first - timedelta(seconds=1), "workers too slow to start: raise margin"
            # Subscribed after every worker read its subscribers at start.
            await db.subscribe("tg", CHATS[1], "probe")

            async def first_to_both() -> bool:
                return {str(m.chat_id) for m in fake.sent} >= set(CHATS[:2])

            await _until("the first bulletin to both chats", first_to_both, timeout=margin + 60)
            await db.unsubscribe("tg", CHATS[1])
            assert datetime.now(UTC) < first + timedelta(seconds=gap - 1), "too slow: raise gap"

            async def second_sent() -> bool:
                return any(m.text.startswith("Bulletin 2") for m in fake.sent)

            await _until("the second bulletin", second_sent, timeout=gap + 60)
            await asyncio.sleep(2.0)  # a late copy to the unsubscribed chat would show up here
        finally:
            await _stop(workers)
        logs = _logs(workers)
        received = collections.Counter((str(m.chat_id), m.text.split(" (")[0]) for m in fake.sent)
        assert received == {
            (CHATS[0], "Bulletin 1"): 1,
            (CHATS[1], "Bulletin 1"): 1,
            (CHATS[0], "Bulletin 2"): 1,
        }, logs
        assert [w.proc.returncode for w in workers] == [0, 0], logs
