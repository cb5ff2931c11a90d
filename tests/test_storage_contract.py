"""The storage contract: every concern exercised through the interface, for each backend.

The tests only call what :class:`personae.storage.interface.Storage` declares.
Each backend is a factory that gives a fresh, unopened store on the same
database each time it is called (the tests reopen it to check what survives
a restart). SQLite runs on a temporary file; PostgreSQL on a real server the
tests start themselves (``initdb`` and ``pg_ctl`` in a temporary folder, a
fresh database per test), skipped only where PostgreSQL is not installed.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgserver import PgServer

from personae.storage.interface import Storage
from personae.storage.records import LogRow, OutboxRow
from personae.storage.store import Store

Factory = Callable[[], Storage]
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "sqlite":
        path = tmp_path / "contract.db"
        return lambda: Store(path)
    server: PgServer = request.getfixturevalue("postgres_server")
    from personae.storage.postgres import PostgresStore

    url = server.new_database()
    return lambda: PostgresStore(url)


@pytest.fixture
async def storage(backend: Factory) -> AsyncIterator[Storage]:
    store = await backend().open()
    try:
        yield store
    finally:
        await store.close()


def item(key: str, chat: str = "c1", *, adapter: str = "a", run: str | None = None, text: str = "") -> OutboxRow:
    return (key, run, "p", adapter, chat, text or f"text {key}", None, None, None, None)


T0 = datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)

# -- log


async def test_log_rows_come_back_in_order_with_their_fields(storage: Storage):
    storage.log(LogRow("event", "p", text='{"site": "Agilkia"}', event="touchdown", run="r", mission_time=T0))
    storage.log_exchange("p", "console", "c1", "u1", "Ann", "hi", "ok", T0.timestamp(), "r", ("hello", "f:3", 7, 1.5))
    storage.log_exchange("p", "console", "c1", "u1", "Ann", "/x@Other", "ignored", T0.timestamp(), None)
    storage.log_reaction("out", "p", "console", "Landed.", "f:9", 2, "ok", "touchdown", "r", T0.timestamp())
    rows = await storage.query_log()
    assert [(r["direction"], r["text"], r["status"]) for r in rows] == [
        ("event", '{"site": "Agilkia"}', None),
        ("in", "hi", "ok"),
        ("out", "hello", "ok"),
        ("in", "/x@Other", "ignored"),
        ("out", "Landed.", "ok"),
    ]
    inc, out = rows[1], rows[2]
    assert (inc["persona"], inc["platform"], inc["chat"], inc["user"], inc["user_name"]) == (
        "p", "console", "c1", "u1", "Ann",
    )  # fmt: skip
    assert (out["rule"], out["seed"], out["latency_ms"], out["user_name"]) == ("f:3", 7, 1.5, None)
    assert all(r["mission_time"].startswith("2014-11-12T15:34:04") for r in rows)
    assert all(r["ts"].endswith("+00:00") for r in rows)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


async def test_an_event_reaction_stores_its_data_as_json(storage: Storage):
    storage.log_reaction("event", "p", None, {"site": "Abydos", "n": 2}, None, None, "event", "touchdown", None, 0.0)
    (row,) = await storage.query_log()
    assert (row["event"], row["text"]) == ("touchdown", '{"site":"Abydos","n":2}')


async def test_keyed_log_rows_are_written_once_even_across_flushes_and_restarts(backend: Factory):
    async with backend() as storage:
        storage.log(LogRow("event", "p", text="first", key="event|r|t#0"))
        await storage.flush()
        storage.log(LogRow("event", "p", text="again", key="event|r|t#0"))
        storage.log_reaction("out", "p", "console", "said", "r", 1, "ok", "a", "r", 0.0, "out|r|t#0|p")
        storage.log_reaction("out", "p", "console", "said", "r", 1, "ok", "a", "r", 0.0, "out|r|t#0|p")
        storage.log(LogRow("in", "p", text="hi"))
        storage.log(LogRow("in", "p", text="hi"))  # rows without a key are never merged
    async with backend() as storage:  # a resumed run logs its past again
        storage.log(LogRow("event", "p", text="third", key="event|r|t#0"))
        storage.log(LogRow("event", "p", text="new", key="event|r|t#1"))
        rows = await storage.query_log()
    assert [(r["direction"], r["text"]) for r in rows] == [
        ("event", "first"),
        ("out", "said"),
        ("in", "hi"),
        ("in", "hi"),
        ("event", "new"),
    ]


async def test_query_log_filters_and_keeps_the_last_rows(storage: Storage):
    for i in range(5):
        storage.log_exchange("p", "console", "c", "u", "U", f"m{i}", "ok", 0.0, None, (f"r{i}", "f:1", None, 0.1))
    storage.log(LogRow("in", "q", text="other persona"))
    assert [r["text"] for r in await storage.query_log(direction="in", limit=2)] == ["m4", "other persona"]
    assert [r["text"] for r in await storage.query_log(persona="p", direction="out", limit=2)] == ["r3", "r4"]
    assert await storage.query_log(persona="nobody") == []
    assert len(await storage.query_log(since="2000-01-01")) == 11
    assert await storage.query_log(since="2999-01-01") == []


async def test_close_writes_every_queued_row(backend: Factory):
    async with backend() as storage:
        for i in range(3001):  # more than one batch
            storage.log(LogRow("in", "p", text=f"m{i}"))
    async with backend() as storage:
        rows = await storage.query_log()
    assert [r["text"] for r in rows] == [f"m{i}" for i in range(3001)]


async def test_close_twice_is_harmless(backend: Factory):
    storage = await backend().open()
    storage.log(LogRow("in", "p", text="x"))
    await storage.close()
    await storage.close()
    async with backend() as again:
        assert [r["text"] for r in await again.query_log()] == ["x"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(st.characters(exclude_characters="\x00") | st.sampled_from("\ud800\udfff")), max_size=8))
async def test_any_text_comes_back_as_it_was_logged(storage: Storage, texts: list[str]):
    # NUL never gets here (user text is cleaned where it enters). A lone surrogate
    # (undecodable bytes from a terminal) cannot be stored: it becomes U+FFFD.
    before = len(await storage.query_log())
    for t in texts:
        storage.log(LogRow("in", "p", text=t))
    rows = (await storage.query_log())[before:]
    assert [r["text"] for r in rows] == [
        "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in t) for t in texts
    ]


# -- state


async def test_state_round_trips_and_the_last_change_wins(backend: Factory):
    async with backend() as storage:
        storage.save_state("p", "persona", "", {"phase": "cruise", "n": 1})
        storage.save_state("p", "persona", "", {"phase": "surface", "n": 2, "site": "Abydos"})
        storage.save_state("p", "chat", "c1", {"questions": 3, "nested": {"a": [1, 2]}})
        storage.save_state("q", "chat", "c1", {"questions": 1})
        assert (await storage.load_states())[("p", "persona", "")]["phase"] == "surface"  # queued ones too
    async with backend() as storage:
        storage.save_state("q", "chat", "c1", {"questions": 2})
        assert await storage.load_states() == {
            ("p", "persona", ""): {"phase": "surface", "n": 2, "site": "Abydos"},
            ("p", "chat", "c1"): {"questions": 3, "nested": {"a": [1, 2]}},
            ("q", "chat", "c1"): {"questions": 2},
        }


async def test_no_state_is_an_empty_mapping(storage: Storage):
    assert await storage.load_states() == {}


_GUARDED = """\
persona: p
name: P
limits: {messages: 2, per: 1h, notice: "Easy."}
replies:
  - when: {keywords: hi}
    say: [a, b, c]
    no_repeat: 2
    cooldown: 1h
    cooldown_say: later
"""


async def test_cooldowns_limits_and_latest_picks_come_back_after_a_restart(backend: Factory):
    # The engine keeps them with persona state, each under a scope of its own: both backends must keep them.
    from datetime import timedelta

    from personae import Chat, Incoming, User
    from personae.engine.engine import Engine
    from personae.language.loader import parse_persona
    from personae.timing.clock import VirtualClock

    persona = parse_persona(_GUARDED, "p.yaml")
    start = datetime(2014, 11, 12, tzinfo=UTC)
    clock = VirtualClock(start)

    async def say(text: str) -> list[str]:
        async with backend() as storage:
            engine = Engine({"p": persona}, store=storage, clock=clock)
            await engine.restore()
            return [o.text for o in await engine.handle(Incoming("p", "console", Chat("c"), User("u", "U"), text))]

    first = await say("hi")
    assert await say("hi") == ["later"]  # resting, across a restart
    assert await say("hi") == ["Easy."]  # the third message of the hour
    assert await say("hi") == []  # told once already
    clock.jump(start + timedelta(hours=1))
    second = await say("hi")
    clock.jump(start + timedelta(hours=2))
    third = await say("hi")
    assert sorted([*first, *second, *third]) == ["a", "b", "c"]  # no_repeat 2 remembered both picks
    async with backend() as storage:
        scopes = {scope for _, scope, _ in await storage.load_states()}
    assert scopes == {"cooldown", "limit", "recent"}


# -- outbox


async def test_outbox_add_keeps_the_first_of_each_key(storage: Storage):
    await storage.outbox_add([item("k0"), {"key": "k1", "persona": "p", "adapter": "a", "chat": "c2", "text": "t1"}])
    await storage.outbox_add([item("k0", text="changed"), item("k2")])
    await storage.outbox_add([])
    pending = await storage.outbox_pending()
    assert [(i.key, i.chat, i.text, i.status, i.attempts) for i in pending] == [
        ("k0", "c1", "text k0", "pending", 0),
        ("k1", "c2", "t1", "pending", 0),
        ("k2", "c1", "text k2", "pending", 0),
    ]
    assert [i.id for i in pending] == sorted(i.id for i in pending)


async def test_outbox_rows_keep_their_media_and_a_row_without_the_field_has_none(storage: Storage):
    from personae.engine.messages import Media, media_from_json, media_json

    media = (Media("/m/67p.png", "image/png", "A drawn comet — «67P»"), Media("/m/song.wav", "audio/x-wav"))
    await storage.outbox_add(
        [
            (*item("k0"), media_json(media)),
            item("k1"),
            {"key": "k2", "persona": "p", "adapter": "a", "chat": "c", "text": "", "media": media_json(media[:1])},
        ]
    )
    pending = await storage.outbox_pending()
    assert [media_from_json(i.media) for i in pending] == [media, (), media[:1]]
    assert pending[2].text == ""  # media alone: no text


async def test_outbox_add_refuses_a_message_missing_a_required_field(storage: Storage):
    with pytest.raises(ValueError, match="without text"):
        await storage.outbox_add([{"key": "k", "persona": "p", "adapter": "a", "chat": "c"}])
    assert await storage.outbox_pending() == []


async def test_outbox_pending_filters_by_adapter_position_and_limit(storage: Storage):
    await storage.outbox_add([item(f"k{i}", adapter="tg" if i % 2 else "dc") for i in range(10)])
    tg = await storage.outbox_pending(adapters=["tg"])
    assert [i.key for i in tg] == ["k1", "k3", "k5", "k7", "k9"]
    assert [i.key for i in await storage.outbox_pending(adapters=["tg"], after_id=tg[1].id, limit=2)] == ["k5", "k7"]
    assert await storage.outbox_pending(adapters=[]) == []
    assert len(await storage.outbox_pending(limit=4)) == 4


async def test_outbox_outcomes_receipts_and_counts(storage: Storage):
    await storage.outbox_add([item(f"k{i}", run="r1" if i < 3 else "r2") for i in range(5)])
    k0, k1, k2, k3, _ = await storage.outbox_pending()
    assert await storage.outbox_receipt("k0") is None
    await storage.outbox_mark(k0.id, "pending", error="HTTP 502")
    await storage.outbox_mark(k0.id, "sent", receipt="m-1")
    await storage.outbox_mark(k1.id, "failed", error="HTTP 400")
    await storage.outbox_mark_many(
        [(k2.id, "pending", "timeout", None), (k3.id, "pending", "HTTP 502", None), (k3.id, "sent", None, "m-4")]
    )
    assert await storage.outbox_receipt("k0") == "m-1"
    assert await storage.outbox_receipt("k3") == "m-4"
    assert await storage.outbox_receipt("k1") is None  # failed: no receipt
    assert await storage.outbox_receipt("nope") is None
    pending = await storage.outbox_pending()
    assert [(i.key, i.attempts) for i in pending] == [("k2", 1), ("k4", 0)]
    assert await storage.outbox_counts() == {"sent": 2, "failed": 1, "pending": 2}
    assert await storage.outbox_counts("r1") == {"sent": 1, "failed": 1, "pending": 1}
    assert await storage.outbox_counts("none") == {}


async def test_outcomes_for_one_message_fold_in_order(storage: Storage):
    await storage.outbox_add([item("k0"), item("k1")])
    first, second = await storage.outbox_pending()
    await storage.outbox_mark_many(
        [
            (first.id, "pending", "HTTP 502", None),
            (second.id, "pending", "timeout", None),
            (first.id, "sent", None, "m-1"),
            (second.id, "failed", "HTTP 400", None),
        ]
    )
    assert await storage.outbox_pending() == []
    assert await storage.outbox_receipt("k0") == "m-1"
    assert await storage.outbox_counts() == {"sent": 1, "failed": 1}


async def test_outbox_cancel_fails_only_the_pending_messages_of_its_run(storage: Storage):
    await storage.outbox_add([item("a0", run="a"), item("a1", run="a"), item("b0", run="b"), item("x")])
    a0 = (await storage.outbox_pending())[0]
    await storage.outbox_mark(a0.id, "sent", receipt="m")
    assert await storage.outbox_cancel("a", "run stopped") == 1
    assert await storage.outbox_cancel("a", "again") == 0
    assert [i.key for i in await storage.outbox_pending()] == ["b0", "x"]
    assert await storage.outbox_counts("a") == {"sent": 1, "failed": 1}


async def test_outbox_survives_a_restart(backend: Factory):
    async with backend() as storage:
        await storage.outbox_add([item("k0"), item("k1")])
        k0 = (await storage.outbox_pending())[0]
        await storage.outbox_mark(k0.id, "sent", receipt="m-0")
    async with backend() as storage:
        assert [i.key for i in await storage.outbox_pending()] == ["k1"]
        assert await storage.outbox_receipt("k0") == "m-0"


async def test_move_chat_moves_the_subscription_and_the_given_messages(storage: Storage):
    await storage.subscribe("tg", "-100", "p")
    await storage.subscribe("tg", "other", "p")
    await storage.outbox_add([item("k0", "-100", adapter="tg"), item("k1", "-100", adapter="tg"), item("k2", "other")])
    k0, _, _ = await storage.outbox_pending()
    await storage.move_chat("tg", "-100", "-100200", [k0.id])
    assert await storage.subscribers("tg") == ["-100200", "other"]
    assert [(i.key, i.chat) for i in await storage.outbox_pending()] == [
        ("k0", "-100200"),
        ("k1", "-100"),  # not named: left where it was
        ("k2", "other"),
    ]


async def test_move_chat_onto_a_chat_already_subscribed_keeps_one_subscription(storage: Storage):
    await storage.subscribe("tg", "old", "p")
    await storage.subscribe("tg", "new", "p")
    await storage.move_chat("tg", "old", "new")
    assert await storage.subscribers("tg") == ["new"]


# -- subscriptions


async def test_subscriptions(storage: Storage):
    assert await storage.subscribe("tg", "c1", "p") is True
    assert await storage.subscribe("tg", "c1", "p") is False
    assert await storage.subscribe("dc", "c1", "p") is True  # another adapter, another subscription
    await storage.subscribe_many("tg", ["c2", "c1", "c3"], "p")
    assert await storage.subscribers("tg") == ["c1", "c2", "c3"]
    assert await storage.unsubscribe("tg", "c2") is True
    assert await storage.unsubscribe("tg", "c2") is False
    assert await storage.subscribers("tg") == ["c1", "c3"]
    assert await storage.subscribers("dc") == ["c1"]
    assert await storage.subscribers("none") == []


async def test_subscribers_are_oldest_first_across_a_restart(backend: Factory):
    async with backend() as storage:
        for chat in ("z", "a", "m"):
            await storage.subscribe("tg", chat, "p")
    async with backend() as storage:
        await storage.subscribe("tg", "b", "p")
        assert await storage.subscribers("tg") == ["z", "a", "m", "b"]


# -- runs


async def test_runs_record_their_progress(backend: Factory):
    async with backend() as storage:
        assert await storage.replay_get("r1") is None
        await storage.replay_start("r1", "rosetta", {"speed": "max", "from": T0}, timeline_hash="abc")
        await storage.replay_start("r2", "other", {})
        await storage.replay_progress("r1", "2014-11-12T15:34:04+00:00")
    async with backend() as storage:
        r1 = await storage.replay_get("r1")
        assert r1 is not None
        assert {k: r1[k] for k in ("run", "timeline", "position", "status", "timeline_hash")} == {
            "run": "r1",
            "timeline": "rosetta",
            "position": "2014-11-12T15:34:04+00:00",
            "status": "running",
            "timeline_hash": "abc",
        }
        assert r1["options"] == {"speed": "max", "from": str(T0)}
        assert r1["started"][:4].isdigit()
        await storage.replay_progress("r1", "end", "done")
        done = await storage.replay_get("r1")
        r2 = await storage.replay_get("r2")
    assert done is not None and (done["position"], done["status"]) == ("end", "done")
    assert r2 is not None and (r2["position"], r2["status"], r2["timeline_hash"]) == (None, "running", None)


# -- PostgreSQL only


async def test_postgresql_unreachable_is_one_line_without_the_password(tmp_path: Path):
    from personae.storage.postgres import PostgresStore
    from personae.storage.records import StoreError

    url = f"postgresql://bot:s3cret@/personae?host={tmp_path}/nowhere"
    with pytest.raises(StoreError) as caught:
        await PostgresStore(url).open()
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message and "bot:***@" in message


async def test_postgresql_workers_starting_together_migrate_once(postgres_server: PgServer):
    import asyncio

    from personae.storage.postgres import SCHEMA_VERSION, PostgresStore

    url = postgres_server.new_database()
    stores = [PostgresStore(url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].subscribe("tg", "c", "p")
        assert await stores[3].subscribers("tg") == ["c"]
        versions = await stores[1]._conn.pool.fetch("SELECT version FROM personae_schema ORDER BY version")
        assert [v[0] for v in versions] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


def test_a_postgresql_url_as_db_selects_postgresql_end_to_end(postgres_server: PgServer, persona_dir: Path):
    # --db takes a URL as well as a file: state and log land on the server and a later process reads them.
    import json
    import sys

    url = postgres_server.new_database()

    def personae(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "personae", *args]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)

    chat = ["chat", "lander", "--personas", str(persona_dir), "--db", url]
    first = personae(*chat, stdin="comete\ncomete\n")
    assert first.returncode == 0, first.stderr
    again = personae(*chat, stdin="comete\n")  # the chat state was kept on the server
    assert again.returncode == 0 and "Question 3." in again.stdout, again.stderr
    r = personae("log", "--db", url, "--format", "json", "--direction", "out")
    assert r.returncode == 0, r.stderr
    assert [row["text"] for row in json.loads(r.stdout)] == [
        "Comets! Question 1.",
        "Comets! Question 2.",
        "Comets! Question 3.",
    ]
    assert not Path("postgresql:").exists()  # not taken for a file name


def test_an_unreachable_postgresql_url_is_one_line(tmp_path: Path):
    import sys

    url = f"postgresql://bot:s3cret@/personae?host={tmp_path}"
    r = subprocess.run(
        [sys.executable, "-m", "personae", "log", "--db", url], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: postgresql://bot:***@")
    assert "s3cret" not in r.stderr and "Traceback" not in r.stderr
