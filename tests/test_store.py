"""The SQLite log and state: real files, rows and their fields, restarts, bad files."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_engine import T0

from personae import Chat, Event, Incoming, User
from personae.engine.engine import Engine
from personae.language.loader import load_personas
from personae.storage.store import SCHEMA_VERSION, LogRow, Store, StoreError


def msg(text: str, chat: str = "c1") -> Incoming:
    return Incoming("lander", "console", Chat(chat), User("u1", "Ann"), text, message_id="m1")


async def test_log_rows_have_every_field(persona_dir, tmp_path):
    db = tmp_path / "log.db"
    async with Store(db) as store:
        engine = Engine(load_personas([persona_dir]), store=store, seed=3)
        await engine.handle(msg("How far is Mars?"))
        await engine.dispatch(Event("touchdown", T0, {"site": "Agilkia"}, persona="lander"))
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM interactions ORDER BY id")]
    assert [r["direction"] for r in rows] == ["in", "out", "event", "out", "event", "out"]
    inc, out = rows[0], rows[1]
    assert (inc["persona"], inc["platform"], inc["chat"], inc["user"], inc["user_name"], inc["text"]) == (
        "lander",
        "console",
        "c1",
        "u1",
        "Ann",
        "How far is Mars?",
    )
    assert out["text"] == "Mars is far."
    lines = (persona_dir / "lander.yaml").read_text().splitlines()
    rule_line = next(i for i, line in enumerate(lines, 1) if "how far is" in line)
    assert out["rule"] == f"{persona_dir / 'lander.yaml'}:{rule_line}"
    assert out["seed"] is not None and out["latency_ms"] >= 0
    assert out["ts"].endswith("+00:00")
    assert rows[2]["event"] == "touchdown" and json.loads(rows[2]["text"]) == {"site": "Agilkia"}
    assert rows[3]["mission_time"].startswith("20")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_many_rows_are_all_flushed_on_close(persona_dir, tmp_path):
    db = tmp_path / "log.db"
    async with Store(db, batch_size=100) as store:
        engine = Engine(load_personas([persona_dir]), store=store)
        for i in range(1234):
            await engine.handle(msg(f"message {i}"))
    count = sqlite3.connect(db).execute("SELECT count(*) FROM interactions").fetchone()[0]
    assert count == 2 * 1234


async def test_state_survives_a_restart(persona_dir, tmp_path):
    db = tmp_path / "state.db"
    async with Store(db) as store:
        engine = Engine(load_personas([persona_dir]), store=store)
        await engine.dispatch(Event("touchdown", T0, {"site": "Abydos"}))
        await engine.handle(msg("comete", chat="x"))
        await engine.handle(msg("comete", chat="x"))
    async with Store(db) as store:
        engine = Engine(load_personas([persona_dir]), store=store)
        await engine.restore()
        assert engine.state("lander")["phase"] == "surface"
        assert [o.text for o in await engine.handle(msg("where are you"))] == ["On the comet, at Abydos."]
        assert [o.text for o in await engine.handle(msg("comete", chat="x"))] == ["Comets! Question 3."]
        assert [o.text for o in await engine.handle(msg("comete", chat="y"))] == ["Comets! Question 1."]


async def test_not_a_sqlite_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database, just some text\n" * 100)
    with pytest.raises(StoreError, match=r"bad\.db: not a SQLite database"):
        await Store(bad).open()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, for root too (root ignores file modes, not the immutable flag)."""
    if os.geteuid() != 0:
        path.chmod(stat.S_IRUSR)
        yield
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file read-only for root here (chattr +i refused)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_read_only_database_file(tmp_path):
    db = tmp_path / "ro.db"
    async with Store(db):
        pass
    with read_only(db), pytest.raises(StoreError, match="read-only"):
        await Store(db).open()


def test_chat_on_a_read_only_database_is_one_line_and_exits(tmp_path, persona_dir):
    db = tmp_path / "ro.db"
    sqlite3.connect(db).close()
    command = [sys.executable, "-m", "personae", "chat", "lander", "--personas", str(persona_dir), "--db", str(db)]
    subprocess.run(command, input="hi\n", text=True, capture_output=True, timeout=60, check=True)  # a real log
    with read_only(db):
        r = subprocess.run(command, input="hi\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == f"error: {db}: database is read-only\n"


async def test_read_only_database_opened_through_readonly_uri(tmp_path):
    # Works as root too: the connection itself is read-only.
    db = tmp_path / "ro.db"
    async with Store(db):
        pass
    store = await Store(db, readonly=True).open()
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store.db.execute("INSERT INTO interactions (ts, direction) VALUES ('x', 'in')")
    finally:
        await store.close()


async def test_missing_folder(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        await Store(tmp_path / "nope" / "x.db").open()


async def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "new.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer than this personae"):
        await Store(db).open()


async def test_query_log_filters(persona_dir, tmp_path):
    db = tmp_path / "q.db"
    async with Store(db) as store:
        engine = Engine(load_personas([persona_dir]), store=store)
        for i in range(5):
            await engine.handle(msg(f"m{i}"))
        rows = await store.query_log(direction="in", limit=2)
        assert [r["text"] for r in rows] == ["m3", "m4"]
        assert await store.query_log(persona="nobody") == []
        assert len(await store.query_log(since="2000-01-01")) == 10


async def test_a_version_1_database_is_migrated_keeping_its_rows(tmp_path):
    from personae.storage.store import _MIGRATIONS, SCHEMA_VERSION

    db = tmp_path / "v1.db"
    con = sqlite3.connect(db)
    con.executescript(_MIGRATIONS[1] + "\nPRAGMA user_version = 1;")
    con.execute(
        "INSERT INTO interactions (ts, direction, persona, text) VALUES ('2014-11-12T15:34:04+00:00', 'in', 'p', 'hi')"
    )
    con.commit()
    con.close()
    async with Store(db) as store:
        rows = await store.query_log(since="2014-11-12")
    assert [(r["direction"], r["text"]) for r in rows] == [("in", "hi")]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    # v2 dropped the ts index; v6 replaced (persona, ts) by persona alone (cheaper, and in id order).
    assert "interactions_ts" not in indexes and "interactions_persona_ts" not in indexes
    assert "interactions_persona" in indexes
    # v3: log rows a resumed replay writes again have a key; runs record their timeline's hash.
    assert "interactions_key" in indexes
    assert "timeline_hash" in {r[1] for r in con.execute("PRAGMA table_info(replays)")}
    # v4: events posted over HTTP, stored before their 202.
    assert "intake_pending" in indexes
    con.close()


async def test_rows_keep_their_order_when_single_rows_and_exchanges_mix(persona_dir, tmp_path):
    db = tmp_path / "log.db"
    async with Store(db) as store:
        engine = Engine(load_personas([persona_dir]), store=store)
        await engine.dispatch(Event("drain", T0, persona="lander"))
        await engine.handle(msg("/status"))
        other = Incoming("lander", "console", Chat("c1"), User("u1", "Ann"), "/status@OtherBot", bot_username="Me")
        await engine.handle(other)  # not for us: an "in" row alone
        await engine.dispatch(Event("drain", T0, persona="lander"))
        await engine.handle(msg("how far is Mars?"))
    rows = sqlite3.connect(db).execute("SELECT direction, text, status FROM interactions ORDER BY id")
    assert list(rows) == [
        ("event", "{}", "event"),
        ("out", "Battery at 90%.", "ok"),
        ("in", "/status", "ok"),
        ("out", "Phase cruise, battery 90%.", "ok"),
        ("in", "/status@OtherBot", "ignored: addressed to another bot"),
        ("event", "{}", "event"),
        ("out", "Battery at 80%.", "ok"),
        ("in", "how far is Mars?", "ok"),
        ("out", "Mars is far.", "ok"),
    ]


async def test_outcomes_for_one_message_in_one_batch_fold_in_order(tmp_path):
    async with Store(tmp_path / "o.db") as store:
        rows = [
            {"key": f"k{i}", "persona": "p", "adapter": "a", "chat": "c", "text": f"t{i}", "mission_time": None}
            for i in range(3)
        ]
        await store.outbox_add(rows)
        await store.outbox_add(rows[:1])  # the same key again: ignored
        first, second, third = (i.id for i in await store.outbox_pending())
        await store.outbox_mark_many(
            [
                (first, "pending", "HTTP 502", None),
                (second, "failed", "HTTP 400", None),
                (first, "sent", None, "m-1"),
                (third, "pending", "timeout", None),
            ]
        )
        con = sqlite3.connect(store.path)
        got = con.execute("SELECT key, status, attempts, last_error, receipt, sent_at NOT NULL FROM outbox ORDER BY id")
        assert list(got) == [
            ("k0", "sent", 2, None, "m-1", 1),
            ("k1", "failed", 1, "HTTP 400", None, 0),
            ("k2", "pending", 1, "timeout", None, 0),
        ]
        assert [i.key for i in await store.outbox_pending()] == ["k2"]


async def test_flush_returns_only_once_rows_are_on_disk_even_if_another_flush_runs(tmp_path):
    import asyncio

    from personae.storage.store import LogRow

    async with Store(tmp_path / "f.db") as store:
        for i in range(500):
            store.log(LogRow("in", "p", text=f"m{i}"))
        first = asyncio.create_task(store.flush())  # takes the rows, then waits on SQLite
        await asyncio.sleep(0)
        await store.flush()  # finds nothing queued: must still wait for the first
        count = sqlite3.connect(store.path).execute("SELECT count(*) FROM interactions").fetchone()[0]
        await first
    assert count == 500


async def test_a_keyed_log_row_is_written_once(tmp_path):
    # A resumed replay logs its past again: rows already on disk are ignored, the lost ones written.
    db = tmp_path / "k.db"
    async with Store(db) as store:
        store.log(LogRow("event", "p", text="first", key="event|run|t#0:a"))
        await store.flush()
        store.log(LogRow("event", "p", text="again", key="event|run|t#0:a"))
        store.log_reaction("out", "p", "console", "said", "r", 1, "ok", "a", "run", 0.0, "out|run|t#0:a|p|console")
        store.log_reaction("out", "p", "console", "said", "r", 1, "ok", "a", "run", 0.0, "out|run|t#0:a|p|console")
        store.log(LogRow("in", "p", text="hi"))
        store.log(LogRow("in", "p", text="hi"))  # rows without a key are never merged
        rows = await store.query_log()
    assert [(r["direction"], r["text"]) for r in rows] == [
        ("event", "first"),
        ("out", "said"),
        ("in", "hi"),
        ("in", "hi"),
    ]
