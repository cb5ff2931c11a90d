"""The HTTP intake of ``personae run``: POST /events, /healthz, /readyz, /metrics, and ``personae emit --to``.

Most tests run a real :class:`Bot` with a real SQLite file and a real socket in
the test's event loop; the crash and metrics tests run ``personae run`` as a
subprocess against the fake Telegram server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.telegram_api import FakeTelegram, unused_tcp_port
from personae.adapters.base import AdapterConfig, IncomingHandler
from personae.adapters.null import NullAdapter
from personae.app.intake import SIGNATURE_HEADER, TIMESTAMP_HEADER, Intake, IntakeSettings, sign
from personae.app.runtime import Bot
from personae.language.loader import load_personas
from personae.storage.store import Store

SECRET = "s3cret-intake-token-do-not-leak"
TG_TOKEN = "987654:TEST-secret-token-do-not-leak"

LANDER = """\
persona: lander
name: Lander
events:
  touchdown:
    say: "Touchdown at {{ event.site }}!"
  drain:
    say: "Battery low."
replies:
  - when: {command: status}
    say: "Phase cruise."
  - when: {command: ping}
    say: "Pong."
"""

ORBITER = """\
persona: orbiter
name: Orbiter
events:
  relay:
    say: "Relaying."
"""


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SlowStart(NullAdapter):
    """A sink whose start waits until the test lets it go (an adapter still connecting)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go = asyncio.Event()

    async def start(self, on_message: IncomingHandler) -> None:
        await self.go.wait()


@dataclass
class Running:
    bot: Bot
    store: Store
    intake: Intake
    url: str
    http: aiohttp.ClientSession
    clock: Clock
    db: Path

    async def post(self, body: Any, *, headers: dict[str, str] | None = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}", **(headers or {})}
        async with self.http.post(f"{self.url}/events", data=data, headers=sent) as r:
            return r.status, await r.json(), r.headers

    async def signed(self, body: Any, *, at: float | None = None, key: str | None = None) -> Any:
        data = json.dumps(body).encode()
        stamp = int(self.clock.now if at is None else at)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(SECRET, stamp, data),
        }
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.http.post(f"{self.url}/events", data=data, headers=headers) as r:
            return r.status, await r.json(), r.headers

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(f"{self.url}{path}") as r:
            return r.status, await r.text()


def personas_in(tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "personas"
    folder.mkdir(exist_ok=True)
    (folder / "lander.yaml").write_text(LANDER, encoding="utf-8")
    (folder / "orbiter.yaml").write_text(ORBITER, encoding="utf-8")
    return dict(load_personas([str(folder)]))


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    rate: float = 0,
    max_body: int = 64 * 1024,
    adapters: list[NullAdapter] | None = None,
    start: bool = True,
) -> AsyncIterator[Running]:
    personas = personas_in(tmp_path)
    adapters = adapters or [
        NullAdapter(AdapterConfig("null-lander", "lander")),
        NullAdapter(AdapterConfig("null-orbiter", "orbiter")),
    ]
    db = tmp_path / "bot.db"
    store = await Store(db).open()
    bot = Bot(personas, adapters, store=store)
    clock = Clock()
    intake = Intake(bot, IntakeSettings(SECRET, port=0, max_body=max_body, rate=rate), clock=clock)
    host, port = await intake.start()
    starting = asyncio.create_task(bot.start(schedules=False))
    try:
        if start:
            await asyncio.wait_for(starting, 10)
            intake.play()
        async with aiohttp.ClientSession() as http:
            yield Running(bot, store, intake, f"http://{host}:{port}", http, clock, db)
    finally:
        await intake.stop()
        if not starting.done():
            for a in adapters:
                if isinstance(a, SlowStart):
                    a.go.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(starting, 10)
        await bot.stop(drain_timeout=5)
        await store.close()


def table(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return list(con.execute(sql))


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- accepted


async def test_an_event_is_answered_with_its_id_stored_and_played_once(tmp_path):
    async with running(tmp_path) as r:
        status, answer, _ = await r.post({"event": "touchdown", "data": {"site": "Agilkia"}})
        assert status == 202 and set(answer) == {"id"}
        # The 202 came after the commit: the row is in the file, read by another connection.
        assert table(r.db, "SELECT id, event, data FROM intake") == [(answer["id"], "touchdown", '{"site": "Agilkia"}')]
        lander = r.bot.adapters[0]
        await until(lambda: lander.count == 1)
        await until(lambda: table(r.db, "SELECT status FROM intake") == [("played",)])
        assert [d.text for d in lander.delivered] == ["Touchdown at Agilkia!"]
        assert r.bot.adapters[1].count == 0  # only the lander reacts to touchdown
        # Signed instead of bearer, and aimed at one persona.
        status, answer, _ = await r.signed({"event": "relay", "persona": "orbiter"})
        assert status == 202
        await until(lambda: r.bot.adapters[1].count == 1)


# --------------------------------------------------------------------------- refused


async def test_every_refusal_is_json_naming_what_is_wrong(tmp_path):
    async with running(tmp_path, max_body=2048) as r:
        ok = {"event": "touchdown", "data": {"site": "Agilkia"}}

        async def refused(expect: int, *, field: str | None = None, says: str = "", **kwargs: Any) -> None:
            body = kwargs.pop("body", ok)
            status, answer, _ = await r.post(body, **kwargs)
            assert status == expect, answer
            assert answer.get("field") == field, answer
            assert says in answer["error"], answer

        # 401: no credentials, a wrong token, another scheme, a wrong signature, a bad timestamp.
        await refused(401, says="no credentials", headers={"Authorization": ""} | {})
        anonymous = {"Content-Type": "application/json"}
        async with r.http.post(f"{r.url}/events", data=json.dumps(ok), headers=anonymous) as resp:
            assert resp.status == 401 and "no credentials" in (await resp.json())["error"]
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        await refused(401, says="wrong bearer token", headers={"Authorization": f"Bearer {SECRET}x"})
        await refused(401, says="wrong bearer token", headers={"Authorization": f"Basic {SECRET}"})
        stamp = str(int(r.clock.now))
        forged = {"Authorization": "", TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "0" * 64}
        async with r.http.post(f"{r.url}/events", data=json.dumps(ok), headers=anonymous | forged) as resp:
            assert resp.status == 401 and "wrong X-Personae-Signature" in (await resp.json())["error"]
        other_body = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(SECRET, int(stamp), b'{"event": "drain"}')}
        async with r.http.post(f"{r.url}/events", data=json.dumps(ok), headers=anonymous | other_body) as resp:
            assert resp.status == 401  # a signature is of one body only
        no_stamp = {SIGNATURE_HEADER: sign(SECRET, int(stamp), json.dumps(ok).encode())}
        async with r.http.post(f"{r.url}/events", data=json.dumps(ok), headers=anonymous | no_stamp) as resp:
            assert resp.status == 401 and TIMESTAMP_HEADER in (await resp.json())["error"]
        # 413: declared too long, or streamed too long without a length.
        await refused(413, says="larger than 2048 bytes", body={"event": "touchdown", "data": {"x": "y" * 3000}})

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"event": "touchdown", "data": {"x": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}}'

        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
        async with r.http.post(f"{r.url}/events", data=chunks(), headers=headers) as resp:
            assert resp.status == 413, await resp.text()
        # 415: not JSON.
        await refused(415, says="application/json", headers={"Content-Type": "text/plain"})
        await refused(415, says="application/json", headers={"Content-Type": "application/x-www-form-urlencoded"})
        # 400: the body, then each field.
        await refused(400, says="not valid JSON", raw=b'{"event": ')
        await refused(400, says="not valid JSON", raw=b'{"event": "touchdown", "data": {"x": NaN}}')
        await refused(400, says="not UTF-8", raw=b'{"event": "touchdown\xff"}')
        await refused(400, says="must be a JSON object", body=["touchdown"])
        await refused(400, field="evnt", says="unknown field 'evnt' (did you mean 'event'?)", body={"evnt": "x"})
        await refused(400, field="event", says="missing field 'event'", body={"data": {}})
        await refused(400, field="event", says="non-empty string", body={"event": 3})
        await refused(400, field="event", says="non-empty string", body={"event": "  "})
        await refused(
            400, field="event", says="no persona reacts to event 'touchdwon' (did you mean 'touchdown'?)",
            body={"event": "touchdwon"},
        )  # fmt: skip
        await refused(400, field="persona", says="unknown persona 'landr' (did you mean 'lander'?)",
                      body={"event": "touchdown", "persona": "landr"})  # fmt: skip
        await refused(400, field="persona", says="must be a string", body={"event": "touchdown", "persona": 1})
        await refused(400, field="event", says="persona 'orbiter' does not react to event 'touchdown'",
                      body={"event": "touchdown", "persona": "orbiter"})  # fmt: skip
        await refused(400, field="data", says="must be a JSON object", body={"event": "touchdown", "data": [1]})
        await refused(400, field="Idempotency-Key", says="Idempotency-Key", headers={"Idempotency-Key": "k" * 300})
        # Other paths and methods: JSON too.
        async with r.http.get(f"{r.url}/nowhere") as resp:
            assert resp.status == 404 and "error" in await resp.json()
        async with r.http.get(f"{r.url}/events") as resp:
            assert resp.status == 405 and "error" in await resp.json()
        # Nothing refused was stored, and nothing was played.
        assert table(r.db, "SELECT count(*) FROM intake") == [(0,)]
        assert r.bot.adapters[0].count == 0


async def test_a_client_past_its_rate_gets_429_with_retry_after_and_others_do_not(tmp_path):
    async with running(tmp_path, rate=3) as r:
        answers = [await r.post({"event": "drain"}) for _ in range(4)]
        assert [a[0] for a in answers] == [202, 202, 202, 429]
        _, answer, headers = answers[3]
        assert int(headers["Retry-After"]) >= 1 and "3 a minute" in answer["error"]
        r.clock.now += 20  # a third of a minute later: one more request's worth
        assert (await r.post({"event": "drain"}))[0] == 202
        assert (await r.post({"event": "drain"}))[0] == 429
        # Health checks and metrics are not rate limited.
        assert (await r.get("/healthz"))[0] == 200
        assert table(r.db, "SELECT count(*) FROM intake") == [(4,)]


# --------------------------------------------------------------------------- at most once


async def test_an_idempotent_retry_gets_the_same_id_and_no_second_event_even_after_a_restart(tmp_path):
    body = {"event": "touchdown", "data": {"site": "Abydos"}}
    async with running(tmp_path) as r:
        first = await r.post(body, headers={"Idempotency-Key": "k-1"})
        # Retried at once, and several at the same time (one batch): one event.
        again = await asyncio.gather(*(r.post(body, headers={"Idempotency-Key": "k-1"}) for _ in range(5)))
        assert first[0] == 202 and {(s, a["id"]) for s, a, _ in again} == {(202, first[1]["id"])}
        # Same key, another request: refused, not silently answered with the first one's id.
        other = await r.post({"event": "drain"}, headers={"Idempotency-Key": "k-1"})
        assert other[0] == 422 and other[1]["field"] == "Idempotency-Key"
        # Concurrent new keys each get their own event.
        fresh = await asyncio.gather(*(r.post(body, headers={"Idempotency-Key": f"n-{i}"}) for i in range(4)))
        assert len({a["id"] for _, a, _ in fresh}) == 4
        await until(lambda: r.bot.adapters[0].count == 5)
    async with running(tmp_path) as r:
        later = await r.post(body, headers={"Idempotency-Key": "k-1"})
        assert later[0] == 202 and later[1]["id"] == first[1]["id"]
        await asyncio.sleep(0.2)
    assert table(tmp_path / "bot.db", "SELECT count(*) FROM intake") == [(5,)]
    assert table(tmp_path / "bot.db", "SELECT count(*) FROM outbox WHERE text = 'Touchdown at Abydos!'") == [(5,)]


async def test_a_signature_replayed_after_five_minutes_is_refused_and_within_them_changes_nothing(tmp_path):
    async with running(tmp_path) as r:
        body = {"event": "touchdown", "data": {"site": "Agilkia"}}
        signed_at = r.clock.now
        status, answer, _ = await r.signed(body, at=signed_at)
        assert status == 202
        # The very same request (same timestamp, same signature), a minute later: the first one's answer.
        r.clock.now += 60
        again = await r.signed(body, at=signed_at)
        assert again[0] == 202 and again[1]["id"] == answer["id"]
        # Five minutes and a second after signing: refused as a replay.
        r.clock.now = signed_at + 301
        late = await r.signed(body, at=signed_at)
        assert late[0] == 401 and "replay" in late[1]["error"]
        # Signed five minutes and more in the future (a clock out of step): refused too.
        ahead = await r.signed(body, at=r.clock.now + 301)
        assert ahead[0] == 401 and "future" in ahead[1]["error"]
        # Exactly at the edge it still counts as fresh.
        edge = await r.signed({"event": "drain"}, at=r.clock.now - 300)
        assert edge[0] == 202
        await until(lambda: r.bot.adapters[0].count == 2)
    assert table(tmp_path / "bot.db", "SELECT event FROM intake ORDER BY seq") == [("touchdown",), ("drain",)]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(skew=st.floats(min_value=-10_000, max_value=10_000, allow_nan=False))
def test_any_signature_outside_the_window_is_refused_and_inside_accepted(tmp_path_factory, skew):
    async def check() -> None:
        folder = tmp_path_factory.mktemp("skew")
        async with running(folder) as r:
            status, answer, _ = await r.signed({"event": "drain"}, at=int(r.clock.now) + int(skew))
            inside = abs(int(skew)) <= 300
            assert (status == 202) == inside, (skew, status, answer)
            assert status in (202, 401)

    asyncio.run(check())


# --------------------------------------------------------------------------- health


async def test_readyz_waits_for_the_adapters_and_a_writable_database(tmp_path):
    slow = SlowStart(AdapterConfig("slow-lander", "lander"))
    async with running(tmp_path, adapters=[slow], start=False) as r:
        assert (await r.get("/healthz"))[0] == 200
        status, text = await r.get("/readyz")
        assert status == 503 and "slow-lander" in text
        # Accepted while the adapter connects: stored now, played once the bot runs.
        assert (await r.post({"event": "touchdown", "data": {"site": "Agilkia"}}))[0] == 202
        slow.go.set()
        await until(lambda: r.bot.ready)
        r.intake.play()
        assert (await r.get("/readyz"))[0] == 200
        await until(lambda: slow.count == 1)
        await r.bot.stop()
        assert (await r.get("/readyz"))[0] == 503  # adapters stopped
        await r.store.close()
        status, text = await r.get("/readyz")
        assert status == 503 and "database not writable" in text
        assert (await r.get("/healthz"))[0] == 200  # alive all the same


# --------------------------------------------------------------------------- emit --to


FORKRUN = Path(__file__).parent / "forkrun.py"


async def forked(cwd: Path, *cases: tuple[list[str], dict[str, str | None]]) -> list[tuple[int, str, str]]:
    """Run ``personae`` command lines (argv, environment changes) in forked children of one interpreter."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(FORKRUN),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    todo = [{"argv": argv, "cwd": str(cwd), "env": env, "timeout": 60} for argv, env in cases]
    out, _ = await asyncio.wait_for(proc.communicate(json.dumps(todo).encode()), 120)
    return [(r["status"], r["stdout"], r["stderr"]) for r in json.loads(out)]


async def test_emit_to_posts_a_signed_event_and_prints_its_id_or_one_clear_line(tmp_path):
    async with running(tmp_path) as r:
        r.clock.now = __import__("time").time()  # emit signs with the real time
        secret: dict[str, str | None] = {"PERSONAE_HTTP_SECRET": SECRET}
        results = await forked(
            tmp_path,
            (["emit", "touchdown", "site=Abydos", "--to", r.url], secret),
            (["emit", "touchdwon", "--to", r.url], secret),
            (["emit", "touchdown", "--to", r.url], {"PERSONAE_HTTP_SECRET": "wrong"}),
            (["emit", "touchdown", "--to", r.url], {"PERSONAE_HTTP_SECRET": None}),
            (["emit", "relay", "--to", f"{r.url}/events", "--secret-env", "MY_SECRET"], {"MY_SECRET": SECRET}),
            (["emit", "touchdown", "--to", f"http://127.0.0.1:{unused_tcp_port()}"], secret),
            (["emit", "touchdown", "--to", "ftp://x"], secret),
            (["emit", "touchdown", "--to", r.url, "--dry-run"], secret),
            # The same event twice in a row: two events (sub-second timestamps), not a replay of one.
            (["emit", "drain", "--to", r.url], secret),
            (["emit", "drain", "--to", r.url], secret),
        )
        ok, unknown, wrong, unset, other_env, unreachable, scheme, dry, drain1, drain2 = results
        assert ok[0] == 0 and ok[2] == "", ok
        stored = table(r.db, "SELECT id, event, data FROM intake ORDER BY seq")
        assert [(i, e) for i, e, _ in stored] == [
            (ok[1].strip(), "touchdown"),
            (other_env[1].strip(), "relay"),
            (drain1[1].strip(), "drain"),
            (drain2[1].strip(), "drain"),
        ]
        assert drain1[1] != drain2[1]
        assert json.loads(stored[0][2]) == {"site": "Abydos"}
        await until(lambda: r.bot.adapters[0].count == 3 and r.bot.adapters[1].count == 1)
    assert unknown[0] == 1 and "400: no persona reacts to event 'touchdwon' (did you mean 'touchdown'?)" in unknown[2]
    assert wrong[0] == 1 and "401: wrong X-Personae-Signature" in wrong[2]
    assert unset[0] == 1 and "PERSONAE_HTTP_SECRET is not set" in unset[2]
    assert unreachable[0] == 1 and "cannot reach" in unreachable[2]
    assert scheme[0] == 1 and "not an http:// or https:// URL" in scheme[2]
    assert dry[0] == 1 and "--dry-run and --to" in dry[2]
    for _, _, err in results:
        assert "Traceback" not in err and SECRET not in err and len(err.strip().splitlines()) <= 1, err


# --------------------------------------------------------------------------- personae run: crash, metrics


class Child:
    """A ``personae run`` subprocess whose stderr is collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def line(self, part: str, timeout: float = 30) -> str:
        async with asyncio.timeout(timeout):
            while True:
                found = next((x for x in self.lines if part in x), None)
                if found is not None:
                    return found
                if self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(f"personae exited before {part!r}:\n" + "\n".join(self.lines))
                await asyncio.sleep(0.05)

    async def url(self) -> str:
        return (await self.line("http: listening on")).split()[3]


@contextlib.asynccontextmanager
async def personae_run(cwd: Path) -> AsyncIterator[Child]:
    env = {**os.environ, "LANDER_TG_TOKEN": TG_TOKEN, "PERSONAE_HTTP_SECRET": SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "personae", "run", cwd=cwd, env=env, stderr=asyncio.subprocess.PIPE
    )
    child = Child(proc)
    try:
        yield child
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(child._reader, 5)


TIMELINE = """\
timeline: descent
cast: [lander]
events:
  - {at: "2014-11-12T15:34:04Z", event: touchdown, data: {site: Agilkia}}
  - {at: "2014-11-12T17:00:00Z", event: drain}
"""


def telegram_bot(tmp_path: Path, port: int, *, timeline: bool = False) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "lander.yaml").write_text(LANDER, encoding="utf-8")
    replay = ""
    if timeline:
        (tmp_path / "descent.yaml").write_text(TIMELINE, encoding="utf-8")
        replay = '[[timelines]]\nfile = "descent.yaml"\nspeed = "max"\n\n'
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{folder}/*.yaml"]\ndatabase = "bot.db"\nreload = false\n\n'
        '[[adapters]]\ntype = "telegram"\npersona = "lander"\ntoken_env = "LANDER_TG_TOKEN"\n'
        f'base_url = "http://127.0.0.1:{port}/bot"\nbase_file_url = "http://127.0.0.1:{port}/file/bot"\n'
        "poll_timeout = 1\nchannels = [-1001]\nper_chat_rate = 50\n\n"
        f"{replay}[http]\nport = 0\nrate = 0\n",
        encoding="utf-8",
    )


async def post(url: str, body: Any, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {SECRET}"} | ({"Idempotency-Key": key} if key else {})
    async with aiohttp.ClientSession() as http, http.post(f"{url}/events", json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_kill_9_right_after_the_202_then_restart_plays_the_event_exactly_once(tmp_path):
    port = unused_tcp_port()  # Telegram is down at first: the bot cannot start its adapter
    telegram_bot(tmp_path, port)
    db = tmp_path / "bot.db"
    async with personae_run(tmp_path) as child:
        url = await child.url()
        status, answer = await post(url, {"event": "touchdown", "data": {"site": "Agilkia"}}, key="once")
        assert status == 202
        child.proc.send_signal(signal.SIGKILL)
        await child.proc.wait()
    assert table(db, "SELECT id, status FROM intake") == [(answer["id"], "pending")]
    async with FakeTelegram(TG_TOKEN, port=port) as fake, personae_run(tmp_path) as child:
        url = await child.url()
        [sent] = await fake.wait_for_sent(1, timeout=30)
        assert sent.text == "Touchdown at Agilkia!" and sent.chat_id == -1001
        await until(lambda: table(db, "SELECT status FROM intake") == [("played",)])
        # Posted again by a client that never saw the 202: the same id, nothing new.
        assert await post(url, {"event": "touchdown", "data": {"site": "Agilkia"}}, key="once") == (202, answer)
        child.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.proc.wait(), 30) == 0
    assert [m.text for m in fake.sent] == ["Touchdown at Agilkia!"]
    assert table(db, "SELECT count(*) FROM outbox") == [(1,)]
    assert table(db, "SELECT count(*) FROM interactions WHERE direction = 'event' AND event = 'touchdown'") == [(1,)]
    assert "Traceback" not in "\n".join(child.lines) and SECRET not in "\n".join(child.lines)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of Prometheus text (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_metrics_match_what_the_fake_telegram_saw(tmp_path):
    async with FakeTelegram(TG_TOKEN) as fake:
        telegram_bot(tmp_path, fake.port, timeline=True)  # two events replayed at full speed
        async with personae_run(tmp_path) as child:
            url = await child.url()
            await child.line("personae running")
            await child.line("timeline finished")
            async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as r:
                assert r.status == 200
            fake.fail_next("429", 2)  # the first two sends are refused once each, then retried
            for chat in (11, 12, 13):
                fake.inject_message(chat, "/status")
            fake.inject_message(11, "/ping")
            assert (await post(url, {"event": "touchdown", "data": {"site": "Agilkia"}}))[0] == 202
            await fake.wait_for_sent(7, timeout=30)
            async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
            child.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(child.proc.wait(), 30)
    sent = len(fake.sent)
    assert sent == 7  # 4 replies, 1 posted event, 2 replayed events
    assert metric(text, "personae_messages_out_total", persona="lander", platform="telegram") == sent
    assert metric(text, "personae_messages_in_total", persona="lander", platform="telegram") == 4
    assert metric(text, "personae_rate_limited_total") == fake.count_429 == 2
    assert metric(text, "personae_retries_total") == 2
    rules = {s: metric(text, "personae_replies_total", persona="lander", rule=s) for s in _rules(text)}
    assert sorted(rules.values()) == [1.0, 3.0]  # /status three times, /ping once
    assert metric(text, "personae_reply_latency_seconds_count") == 4
    assert metric(text, "personae_http_events_total") == 1
    assert metric(text, "personae_outbox_messages", status="pending") == 0
    assert metric(text, "personae_outbox_messages", status="failed") == 0
    assert metric(text, "personae_http_responses_total", code="202") == 1
    assert metric(text, "personae_replay_events_done") == metric(text, "personae_replay_events_total") == 2
    assert metric(text, "personae_replay_mission_time_seconds") == 1415811600.0  # 2014-11-12T17:00:00Z


def _rules(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.labels["rule"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "personae_replies_total"
    }


async def test_run_refuses_an_unset_secret_or_a_port_taken_by_the_telegram_webhook(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "lander.yaml").write_text(LANDER, encoding="utf-8")
    null = '[[adapters]]\ntype = "null"\npersona = "lander"\n'
    webhook = (
        '[[adapters]]\ntype = "telegram"\npersona = "lander"\ntoken_env = "T"\nmode = "webhook"\n'
        'webhook_url = "https://x.example/tg"\nport = 8443\n'
    )
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    for name, adapter, port in (("null.toml", null, 8443), ("webhook.toml", webhook, 8443), ("busy.toml", null, busy)):
        (tmp_path / name).write_text(
            f'[bot]\npersonas = ["{folder}/*.yaml"]\ndatabase = "bot.db"\n\n{adapter}\n[http]\nport = {port}\n',
            encoding="utf-8",
        )
    with taken:
        unset, conflict, in_use = await forked(
            tmp_path,
            (["run", "--config", "null.toml"], {"PERSONAE_HTTP_SECRET": None}),
            (["run", "--config", "webhook.toml"], {"PERSONAE_HTTP_SECRET": SECRET, "T": TG_TOKEN}),
            (["run", "--config", "busy.toml"], {"PERSONAE_HTTP_SECRET": SECRET}),
        )
    assert (
        in_use[0] == 1
        and f"busy.toml:10: http.port: cannot listen on 127.0.0.1:{busy}: address already in use" in in_use[2]
    )
    assert (
        unset[0] == 1
        and "null.toml:9: http.secret_env: environment variable PERSONAE_HTTP_SECRET is not set" in unset[2]
    )
    assert (
        conflict[0] == 1 and "http.port: port 8443 is the Telegram webhook's (adapter telegram-lander)" in conflict[2]
    )
    for _, _, err in (unset, conflict, in_use):
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
