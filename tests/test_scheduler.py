"""Clock and scheduler: ordering, delays, cron across DST and month ends."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from personae import Event
from personae.engine.engine import Engine
from personae.language.loader import parse_persona
from personae.timing.clock import VirtualClock
from personae.timing.cron import CronError, fire_times, validate_cron
from personae.timing.scheduler import Scheduler

T0 = datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)


async def test_same_instant_items_run_in_scheduling_order():
    clock = VirtualClock(T0)
    sched = Scheduler(clock)
    seen: list[str] = []

    def note(tag: str):
        async def cb() -> None:
            seen.append(f"{tag}@{clock.now():%H:%M}")

        return cb

    sched.call_at(T0 + timedelta(minutes=5), note("b"))
    sched.call_at(T0 + timedelta(minutes=1), note("a"))
    sched.call_at(T0 + timedelta(minutes=5), note("c"))
    sched.call_at(T0 + timedelta(minutes=5), note("d")).cancel()
    await sched.run(until_idle=True)
    assert seen == ["a@15:35", "b@15:39", "c@15:39"]


async def test_reserved_places_order_as_if_scheduled_at_reservation():
    clock = VirtualClock(T0)
    sched = Scheduler(clock)
    seen: list[str] = []

    def note(tag: str):
        async def cb() -> None:
            seen.append(tag)

        return cb

    first = sched.reserve(2)
    at = T0 + timedelta(minutes=5)
    sched.call_at(at, note("later"))  # scheduled first, but after the reservation

    async def head() -> None:
        seen.append("head")
        sched.call_at(at, note("second"), place=first + 1)  # fed lazily, as a timeline is

    sched.call_at(at, head, place=first)
    await sched.run(until_idle=True)
    assert seen == ["head", "second", "later"]


async def test_items_scheduled_while_running_and_until():
    clock = VirtualClock(T0)
    sched = Scheduler(clock)
    seen: list[int] = []

    async def chain() -> None:
        seen.append(len(seen))
        sched.call_at(clock.now() + timedelta(hours=1), chain)

    sched.call_at(T0, chain)
    await sched.run(until=T0 + timedelta(hours=3, minutes=30))
    assert seen == [0, 1, 2, 3]


async def test_recurring_items_do_not_keep_a_finite_run_alive():
    clock = VirtualClock(T0)
    sched = Scheduler(clock)
    ticks: list[datetime] = []

    async def tick() -> None:
        ticks.append(clock.now())
        sched.call_at(clock.now() + timedelta(days=1), tick, recurring=True)

    async def last() -> None:
        ticks.append(clock.now())

    sched.call_at(T0, tick, recurring=True)
    sched.call_at(T0 + timedelta(days=2, hours=1), last)
    await sched.run(until_idle=True)
    assert ticks == [T0, T0 + timedelta(days=1), T0 + timedelta(days=2), T0 + timedelta(days=2, hours=1)]


async def test_real_speed_clock_advances_mission_time():
    clock = VirtualClock(T0, speed=36000)  # ten mission hours per real second
    sched = Scheduler(clock)
    seen: list[datetime] = []

    async def cb() -> None:
        seen.append(clock.now())

    sched.call_at(T0 + timedelta(minutes=6), cb)  # 0.01 s of real time
    await sched.run(until_idle=True)
    assert seen and seen[0] >= T0 + timedelta(minutes=6)


async def test_fast_forward_then_real_speed():
    clock = VirtualClock(T0, speed=3600, fast_until=T0 + timedelta(days=365))
    await clock.sleep_until(T0 + timedelta(days=300))  # instantaneous
    assert clock.now() == T0 + timedelta(days=300)
    await clock.sleep_until(T0 + timedelta(days=365, seconds=1))  # one mission second past the jump
    assert clock.now() >= T0 + timedelta(days=365, seconds=1)


async def test_delayed_emit_answers_later_in_mission_time():
    philae = parse_persona(
        "persona: philae\nname: Philae\nevents:\n  touchdown:\n    say: Landed!\n"
        "    emit: {event: philae_landed, delay: 2m}\n"
    )
    rosetta = parse_persona(
        "persona: rosetta\nname: Rosetta\nevents:\n  philae_landed:\n"
        "    say: 'I see him at {{ now.strftime(\"%H:%M\") }}!'\n"
    )
    clock = VirtualClock(T0)
    sched = Scheduler(clock)
    later: list[tuple[str, str, datetime | None]] = []

    async def sink(out):
        later.extend((o.persona, o.text, o.at) for o in out)

    engine = Engine({"philae": philae, "rosetta": rosetta}, clock=clock, scheduler=sched, sink=sink)
    now = await engine.dispatch(Event("touchdown", T0, key="k"))
    assert [o.text for o in now] == ["Landed!"]
    assert later == []
    await sched.run(until_idle=True)
    assert later == [("rosetta", "I see him at 15:36!", T0 + timedelta(minutes=2))]


async def test_delay_on_a_reaction():
    p = parse_persona("persona: p\nname: P\nevents:\n  e:\n    say: later\n    delay: 1h\n")
    clock = VirtualClock(T0)
    sched = Scheduler(clock)
    got = []

    async def sink(out):
        got.extend((o.text, o.at) for o in out)

    engine = Engine({"p": p}, clock=clock, scheduler=sched, sink=sink)
    assert await engine.dispatch(Event("e", T0)) == []
    await sched.run(until_idle=True)
    assert got == [("later", T0 + timedelta(hours=1))]


def _take(expr: str, after: datetime, n: int, tz: str = "UTC") -> list[str]:
    return [t.isoformat() for t in itertools.islice(fire_times(expr, after, tz), n)]


def test_cron_follows_daylight_saving_in_local_zone():
    # Paris left summer time on 2014-10-26: 09:00 local is 07:00 UTC before, 08:00 UTC after.
    assert _take("0 9 * * *", datetime(2014, 10, 24, tzinfo=UTC), 4, "Europe/Paris") == [
        "2014-10-24T07:00:00+00:00",
        "2014-10-25T07:00:00+00:00",
        "2014-10-26T08:00:00+00:00",
        "2014-10-27T08:00:00+00:00",
    ]


def test_cron_month_ends():
    assert _take("0 12 31 * *", datetime(2015, 1, 1, tzinfo=UTC), 3) == [
        "2015-01-31T12:00:00+00:00",
        "2015-03-31T12:00:00+00:00",
        "2015-05-31T12:00:00+00:00",
    ]
    assert _take("0 0 L * *", datetime(2016, 1, 31, 1, tzinfo=UTC), 2) == [
        "2016-02-29T00:00:00+00:00",
        "2016-03-31T00:00:00+00:00",
    ]


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "", "0 9 * * mon-xyz"])
def test_bad_cron_expressions(expr):
    with pytest.raises(CronError):
        validate_cron(expr)


def test_cron_fire_times_end_with_the_calendar():
    # datetime ends in year 9999: the series stops there instead of raising.
    assert list(fire_times("0 0 1 1 *", datetime(9997, 6, 1, tzinfo=UTC))) == [
        datetime(9998, 1, 1, tzinfo=UTC),
        datetime(9999, 1, 1, tzinfo=UTC),
    ]
