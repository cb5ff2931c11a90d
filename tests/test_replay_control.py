"""Parsing ``/replay`` arguments: every bad input is a one-line reason, never a traceback."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personae.app.replay_control import ReplayRequest, parse_request


def test_defaults_and_options():
    assert parse_request("") == ReplayRequest("start")
    assert parse_request("rosetta from=2014-11-12 to=2014-11-13T12:00Z speed=max here") == ReplayRequest(
        "start",
        "rosetta",
        datetime(2014, 11, 12, tzinfo=UTC),
        datetime(2014, 11, 13, 12, tzinfo=UTC),
        "max",
        True,
    )
    assert parse_request("speed=86400").speed == 86400.0
    assert parse_request("STATUS") == ReplayRequest("status")
    assert parse_request("stop") == ReplayRequest("stop")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("rosetta philae", "unexpected 'philae' (one timeline at a time)"),
        ("sped=3", "unknown option 'sped' (did you mean 'speed'?)"),
        ("from=yesterday", "from: 'yesterday' is not an ISO 8601 date or time (e.g. 2014-11-12)"),
        ("speed=0", "speed must be a positive number (or 'max')"),
        ("speed=nan", "speed must be a positive number (or 'max')"),
        ("speed=fast", "speed: 'fast' is not a number or 'max'"),
        ("from=2014-11-13 to=2014-11-12", "from is after to"),
        ("stop now", "/replay stop takes no arguments"),
        ('"unclosed', "cannot read the arguments: No closing quotation"),
    ],
)
def test_bad_arguments_say_why(args, message):
    with pytest.raises(ValueError) as err:
        parse_request(args)
    assert str(err.value) == message


@given(st.text(max_size=80))
def test_any_text_parses_or_gives_a_reason(text):
    try:
        request = parse_request(text)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert request.action in ("start", "status", "stop")


async def test_two_replays_asked_at_once_start_one(persona_dir, tmp_path):
    import asyncio

    from personae import Chat, Incoming, User
    from personae.adapters.base import AdapterConfig
    from personae.adapters.null import NullAdapter
    from personae.app.replay_control import Replayable, ReplayControl
    from personae.app.runtime import Bot
    from personae.language.loader import load_personas
    from personae.storage.store import Store
    from personae.timing.timeline import load_timeline

    (tmp_path / "t.yaml").write_text(
        'timeline: mini\nevents:\n  - {at: "2014-11-12T15:34:04Z", event: touchdown, data: {site: A}}\n'
    )
    async with Store(tmp_path / "r.db") as store:
        adapter = NullAdapter(AdapterConfig("null", "lander"))
        bot = Bot(load_personas([persona_dir]), [adapter], store=store)
        await bot.start(schedules=False)
        bot.replays = ReplayControl(bot, [Replayable(load_timeline(tmp_path / "t.yaml"), speed=None)])
        ask = Incoming("lander", "null", Chat("c"), User("1", "Admin", is_admin=True), "/replay", adapter="null")
        try:
            answers = await asyncio.gather(*(bot.replays.command("", ask, "null") for _ in range(2)))
            await bot.drain()
            while bot.replays.running:
                await asyncio.sleep(0.01)
        finally:
            await bot.stop()
        runs = await store.outbox_counts()
    assert sum(a.startswith("Replaying mini") for a in answers) == 1
    assert sum(a.startswith("A replay is already running") for a in answers) == 1
    assert sqlite3.connect(tmp_path / "r.db").execute("SELECT count(*) FROM replays").fetchone() == (1,)
    assert runs.get("sent", 0) >= 1  # the one replay posted


def test_to_a_bare_date_is_that_whole_day():
    request = parse_request("to=2014-11-15")
    assert request.end == datetime(2014, 11, 15, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_request("from=2014-11-15 to=2014-11-15").start == datetime(2014, 11, 15, tzinfo=UTC)
