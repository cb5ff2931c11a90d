"""The SQLite log writer: every queued row reaches the file, in order, whatever the mix and the values.

Whatever the writer's encoding (see ``personae.storage.sqlite.writer``), these
tests check what must not change: the count, the order, the values, and that
a value SQLite cannot store as it is loses no row.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personae.storage.store import LogRow, Store

#: Enough rows to span several batches.
CHUNK = 128

# One queued item: an exchange without a reply (0), with one (1), a single row (2), an event reaction (3).
kinds = st.lists(st.integers(0, 3), min_size=1, max_size=3 * CHUNK + 5)


def queue(store: Store, kinds: list[int]) -> list[tuple[Any, ...]]:
    """Queue one item per kind; the rows the file must then hold, in order."""
    want: list[tuple[Any, ...]] = []
    for i, kind in enumerate(kinds):
        if kind in (0, 1):
            reply = (f"out{i}", f"r{i}", i, 0.5) if kind else None
            store.log_exchange("p", "console", f"c{i}", f"u{i}", "Ann", f"in{i}", "ok", 1.0e9 + i, "run", reply)
            want.append(("in", f"in{i}", None, "Ann", "ok", "run"))
            if kind:
                want.append(("out", f"out{i}", f"r{i}", None, "ok", "run"))
        elif kind == 2:
            store.log(LogRow("in", "p", text=f"row{i}", user_name="Bo", status="muted"))
            want.append(("in", f"row{i}", None, "Bo", "muted", None))
        else:
            store.log_reaction("event", "p", None, {"n": i, "w": "é"}, None, None, "event", "tick", "run", 1.0e9)
            want.append(("event", f'{{"n":{i},"w":"é"}}', None, None, "event", "run"))
    return want


def written(db: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return list(con.execute("SELECT direction, text, rule, user_name, status, run FROM interactions ORDER BY id"))
    finally:
        con.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=kinds)
async def test_any_mix_of_rows_and_exchanges_is_written_whole_and_in_order(tmp_path_factory, kinds):
    db = tmp_path_factory.mktemp("mix") / "log.db"
    async with Store(db) as store:
        want = queue(store, kinds)
    assert written(db) == want


async def test_rows_across_several_flushes_and_chunks_are_all_written(tmp_path):
    db = tmp_path / "log.db"
    want: list[tuple[Any, ...]] = []
    async with Store(db, batch_size=CHUNK + 7) as store:
        for round_ in range(5):
            want += queue(store, [1, 0, 2, 3] * (CHUNK // 2 + round_))
            await store.flush()
    assert written(db) == want


async def test_times_and_numbers_keep_their_values(tmp_path):
    db = tmp_path / "log.db"
    async with Store(db) as store:
        store.log_exchange("p", "tg", "c", "u", "Ann", "hi", "ok", 1_700_000_000.25, None, ("yo", "r", 7, 1.5))
    con = sqlite3.connect(db)
    rows = list(con.execute("SELECT direction, mission_time, seed, latency_ms, typeof(seed) FROM interactions"))
    assert rows == [
        ("in", "2023-11-14T22:13:20.250+00:00", None, None, "null"),
        ("out", "2023-11-14T22:13:20.250+00:00", 7, 1.5, "integer"),
    ]
    ts = [r[0] for r in con.execute("SELECT ts FROM interactions")]
    assert ts[0] == ts[1] and ts[0].endswith("+00:00")


async def test_a_value_sqlite_cannot_bind_does_not_lose_the_batch(tmp_path):
    # A lone surrogate, an integer beyond 64 bits and an object: the batch is cleaned and written, every row of it.
    db = tmp_path / "log.db"
    async with Store(db) as store:
        store.log_exchange("p", "console", "c", "u", "Ann", "fine", "ok", 0.0, None, ("fine too", "r", 1, 0.1))
        store.log_exchange("p", "console", "c", "u", "A\udc80nn", "bad \ud800", "ok", 0.0, None, ("x", "r", 2**70, 0.1))
        store.log(LogRow("in", "p", text="after", status=Path("odd"), seed=-(2**64)))  # type: ignore[arg-type]
        rows = await store.query_log()
    assert [(r["direction"], r["text"], r["user_name"], r["seed"], r["status"]) for r in rows] == [
        ("in", "fine", "Ann", None, "ok"),
        ("out", "fine too", None, 1, "ok"),
        ("in", "bad \ufffd", "A\ufffdnn", None, "ok"),
        ("out", "x", None, float(2**70), "ok"),  # the seed column's affinity makes it a number
        ("in", "after", None, float(-(2**64)), "odd"),
    ]


async def test_log_by_persona_reads_its_index_in_log_order(tmp_path):
    # `personae log --persona p --limit n` on a long log: the index gives the rows newest
    # first, without sorting every row of the persona.
    db = tmp_path / "log.db"
    async with Store(db) as store:
        for i in range(50):
            store.log(LogRow("in", "p" if i % 2 else "q", text=f"m{i}"))
        rows = await store.query_log(persona="p", limit=3)
    assert [r["text"] for r in rows] == ["m45", "m47", "m49"]
    con = sqlite3.connect(db)
    plan = " ".join(
        r[3]
        for r in con.execute(
            "EXPLAIN QUERY PLAN SELECT id, text FROM interactions WHERE persona = ? ORDER BY id DESC LIMIT 3", ("p",)
        )
    )
    assert "USING INDEX interactions_persona" in plan and "TEMP B-TREE" not in plan
