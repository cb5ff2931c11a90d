"""Drive a timeline through a :class:`~personae.app.runtime.Bot`: replayed on a virtual clock, or live.

A replay is deterministic: the same timeline, personas and seed give the
same messages (random picks included: they do not depend on the run id), and
within a run the same idempotency keys. That is what makes ``--resume`` exact:
the resumed run re-executes the past at full speed, and the outbox ignores
every key it already holds, so what was queued before the crash is delivered
once, and what was lost in the crash window is queued again. The log follows
the same discipline: the past is logged again, and the store ignores every
row whose key it already holds, so a row lost in the crash is written and
none is written twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..timing.timeline import Timeline, TimelineEvent, bare_date, parse_time
from .runtime import Bot
from .screen import Progress

__all__ = ["Progress", "ReplayResult", "live", "new_run_id", "replay", "shared_run_id"]

log = logging.getLogger("personae.app.replay")


@dataclass
class ReplayResult:
    """What a replay did."""

    run: str
    events: int
    resumed_from: datetime | None


def new_run_id() -> str:
    """A short unique run id."""
    return uuid.uuid4().hex[:10]


def shared_run_id(digest: str, seed: int, start: datetime | None, end: datetime | None) -> str:
    """The run id of a replay that the workers of one shared database play together.

    The same in every worker (and after a restart): it names what the run
    plays, the timeline's :func:`content_hash`, the seed and the window. So the
    workers agree on one run, its outbox keys and its stored position.
    """
    what = json.dumps([digest, seed, start.isoformat() if start else None, end.isoformat() if end else None])
    return "shared-" + hashlib.sha256(what.encode()).hexdigest()[:12]


def content_hash(timeline: Timeline) -> str:
    """SHA-256 of what a replay of ``timeline`` plays: its id and events (not its layout or comments)."""
    events = [[e.at.isoformat(), e.name, e.persona, e.data] for e in timeline.events]
    text = json.dumps([timeline.id, events], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def parse_end(text: str) -> datetime:
    """The end of a window: a time as :func:`parse_time` reads it, a bare date its whole day.

    ``--to 2014-11-15`` means "up to and including the 15th", not its first instant.
    Raises :class:`ValueError` like :func:`parse_time`.
    """
    when = parse_time(text, default_tz=UTC)
    if bare_date(text) is not None:
        return when + timedelta(days=1) - timedelta(microseconds=1)
    return when


def nothing_to_play(timeline: Timeline, start: datetime | None, end: datetime | None, since: str, until: str) -> str:
    """Why the window ``start``..``end`` of ``timeline`` is empty, or ``""`` if it has events.

    ``since`` and ``until`` name the bounds as the user wrote them (``--from 2015-01-01``).
    """
    if timeline.window(start, end):
        return ""
    if start is not None and start > timeline.end:
        return f"nothing to play: {since} is after the last event of {timeline.id} ({_stamp(timeline.end)})"
    if end is not None and end < timeline.start:
        return f"nothing to play: {until} is before the first event of {timeline.id} ({_stamp(timeline.start)})"
    return f"nothing to play: {timeline.id} has no event between {since} and {until}"


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


async def replay(
    bot: Bot,
    timeline: Timeline,
    *,
    run: str,
    start: datetime | None = None,
    end: datetime | None = None,
    resume_at: datetime | None = None,
    schedules: bool = True,
    progress: Progress | None = None,
    on_event: Callable[[TimelineEvent], None] | None = None,
    relog: bool = True,
) -> ReplayResult:
    """Schedule every timeline event on the bot's (virtual) clock and run until done.

    Events before ``start`` run silently so state is right when the replay
    begins; nothing after ``end`` runs. With ``resume_at`` the past up to it is
    re-executed at full speed, deduplicated by the outbox and the log; with
    ``relog=False`` (a run begun before log rows had keys) the past is not logged again.
    """
    events = [e for e in timeline.events if end is None or e.at <= end]
    if start is not None:
        bot.outlet.silent_until = start
        bot.engine.log_from = start
    # A resumed run logs its past again: the rows the kill lost are written, the others ignored
    # (their keys are in the log already). Skipping the past lost the rows of the crash window.
    if resume_at is not None and not relog:
        bot.engine.log_from = max(resume_at, bot.engine.log_from or resume_at)
    if schedules and events:
        bot.start_schedules(after=events[0].at, cast=timeline.members)

    first = bot.scheduler.reserve(len(events))

    def feed(i: int) -> None:
        # Each event schedules the next as it fires: one timeline item in the heap at a time.
        if i < len(events):
            fire = _fire(bot, timeline, events[i], run, progress, on_event, lambda: feed(i + 1))
            bot.scheduler.call_at(events[i].at, fire, place=first + i)

    feed(0)
    await bot.scheduler.run(until=end, until_idle=True)
    await bot.drain()
    if bot.store is not None:
        # The log is on disk before the run says "done": a kill in between is resumed, not lost.
        await bot.store.flush()
        await bot.store.replay_progress(run, (events[-1].at if events else datetime.min).isoformat(), "done")
    return ReplayResult(run, len(events), resume_at)


def _fire(
    bot: Bot,
    timeline: Timeline,
    ev: TimelineEvent,
    run: str,
    progress: Progress | None,
    on_event: Callable[[TimelineEvent], None] | None,
    then: Callable[[], None],
) -> Callable[[], Any]:
    async def fire() -> None:
        then()
        await bot.deliver(await bot.engine.dispatch(ev.to_event(timeline.id, run)))
        if progress is not None and not (bot.outlet.silent_until and ev.at < bot.outlet.silent_until):
            progress.advance(ev.at)  # the bar counts the window, not the silent prelude
        if on_event is not None:
            on_event(ev)

    return fire


async def live(bot: Bot, timeline: Timeline, *, missed: str = "skip") -> None:
    """Fire the timeline's events at their real dates on the bot's (system) clock.

    The position (last event handled) is kept in the store. Events that fell
    due while the bot was down are reported and, per ``missed``, skipped or
    posted late — never silently lost. On the very first start, events in the
    past are history, not missed.
    """
    run = f"live:{timeline.id}"
    store = bot.store
    now = bot.clock.now()
    past = [e for e in timeline.events if e.at <= now]
    position = -1
    record = await store.replay_get(run) if store is not None else None
    if record is None:
        position = past[-1].index if past else -1
        if store is not None:
            try:
                await store.replay_start(run, timeline.id, {"mode": "live"})
            except Exception:
                # Another worker of the same database recorded it first: the same first start.
                if await store.replay_get(run) is None:
                    raise
            await store.replay_progress(run, str(position))
        if past:
            log.info("timeline %s: %d event(s) before this first start are history", timeline.id, len(past))
    else:
        position = int(record["position"] or -1)
        for e in past:
            if e.index <= position:
                continue
            when = e.at.strftime("%Y-%m-%d %H:%M UTC")
            if missed == "late":
                log.warning(
                    "timeline %s: event '%s' due %s was missed while down; posting it late", timeline.id, e.name, when
                )
                await bot.deliver(await bot.engine.dispatch(e.to_event(timeline.id, run)))
            else:
                log.warning("timeline %s: event '%s' due %s was missed while down; skipped", timeline.id, e.name, when)
                if store is not None:
                    from ..storage.records import LogRow

                    store.log(
                        LogRow(
                            "event",
                            e.persona,
                            text=None,
                            status="missed: skipped",
                            event=e.name,
                            run=run,
                            mission_time=e.at,
                        )
                    )
            position = e.index
        if store is not None:
            await store.replay_progress(run, str(position))

    for e in timeline.events:
        if e.at > now:
            bot.scheduler.call_at(e.at, _live_fire(bot, timeline, e, run))


def _live_fire(bot: Bot, timeline: Timeline, ev: TimelineEvent, run: str) -> Callable[[], Any]:
    async def fire() -> None:
        await bot.deliver(await bot.engine.dispatch(ev.to_event(timeline.id, run)))
        await bot.flush()
        if bot.store is not None:
            await bot.store.replay_progress(run, str(ev.index))

    return fire
