"""The HTTP intake's queue (``Storage.intake``), the same contract on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pgserver import PgServer

from personae.storage.interface import EventIntake, Storage
from personae.storage.records import IntakeRequest
from personae.storage.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Storage]:
    if request.param == "sqlite":
        return lambda: Store(tmp_path / "intake.db")
    server: PgServer = request.getfixturevalue("postgres_server")
    from personae.storage.postgres import PostgresStore

    url = server.new_database()
    return lambda: PostgresStore(url)


@pytest.fixture
async def queue(reopen: Callable[[], Storage]) -> AsyncIterator[EventIntake]:
    store = await reopen().open()
    try:
        assert store.intake is not None
        yield store.intake
    finally:
        await store.close()


def req(n: int, key: str | None = None, sig: str | None = None) -> IntakeRequest:
    return IntakeRequest(f"id{n}", "touchdown", None, f'{{"n": {n}}}', f"fp{n}", key, sig)


async def test_stored_events_wait_in_order_until_played_and_survive_a_restart(reopen: Callable[[], Storage]):
    async with reopen() as store:
        assert store.intake is not None
        answers = await store.intake.intake_add([req(1), req(2, key="k"), req(3, sig="s")])
        assert [(a.id, a.new) for a in answers] == [("id1", True), ("id2", True), ("id3", True)]
        await store.intake.writable()
    async with reopen() as store:
        assert store.intake is not None
        pending = await store.intake.intake_pending()
        assert [(e.id, e.data) for e in pending] == [("id1", {"n": 1}), ("id2", {"n": 2}), ("id3", {"n": 3})]
        await store.intake.intake_played(["id1", "id3"])
        assert [e.id for e in await store.intake.intake_pending()] == ["id2"]
        assert [e.id for e in await store.intake.intake_pending(limit=0)] == []


async def test_a_repeated_key_or_signature_gets_the_first_answer_and_stores_nothing(queue: EventIntake):
    [first] = await queue.intake_add([req(1, key="k", sig="s1")])
    # Later, and within one batch: the same key, or the same signature, names the same request.
    answers = await queue.intake_add([req(2, key="k"), req(3, sig="s1"), req(4, key="new"), req(5, key="new")])
    assert [(a.id, a.fingerprint, a.new) for a in answers] == [
        ("id1", "fp1", False),
        ("id1", "fp1", False),
        ("id4", "fp4", True),
        ("id4", "fp4", False),
    ]
    assert first.new and [e.id for e in await queue.intake_pending()] == ["id1", "id4"]
    assert await queue.intake_add([]) == []
