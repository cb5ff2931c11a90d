"""The admin command ``/replay``: replay a timeline inside a running bot.

A replay started from a chat runs beside the live bot, never inside it: it
gets a fork of the bot (:meth:`personae.app.runtime.Bot.fork`) with its own
virtual clock, scheduler and persona state, and shares only the outbox, the
dispatchers and the subscribers. So a replay at full speed cannot move the
live personas' state, and its posts are paced and retried like any other.

One replay at a time per bot::

    /replay [TIMELINE] [from=DATE] [to=DATE] [speed=N|max] [here]
    /replay status
    /replay stop

``here`` sends the posts only to the chat that asked (a preview); without it
they go where the bot's broadcasts go (subscribers and channels). ``stop``
cancels the replay and the posts it queued that are not yet sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..engine.messages import Incoming, Outgoing
from ..language.errors import did_you_mean
from ..timing.clock import VirtualClock
from ..timing.timeline import Timeline, TimelineEvent, parse_time
from .replay import new_run_id, parse_end, replay

if TYPE_CHECKING:
    from .runtime import Bot

log = logging.getLogger("personae.app.replay")

USAGE = "Usage: /replay [TIMELINE] [from=DATE] [to=DATE] [speed=N|max] [here] · /replay status · /replay stop"


@dataclass(frozen=True, slots=True)
class Replayable:
    """A timeline the admins may replay, with its defaults from bot.toml."""

    timeline: Timeline
    #: Mission seconds per real second; ``None`` is as fast as possible.
    speed: float | None = 3600.0
    schedules: bool = True


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A parsed ``/replay`` command."""

    action: str  # "start", "status" or "stop"
    timeline: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    #: ``None`` when not given; ``"max"`` or a positive number of mission seconds per second.
    speed: float | str | None = None
    here: bool = False


def parse_request(args: str) -> ReplayRequest:
    """Parse the arguments of ``/replay``; raises :class:`ValueError` with a one-line reason."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise ValueError(f"cannot read the arguments: {exc}") from None
    if words and words[0].lower() in ("status", "stop"):
        if len(words) > 1:
            raise ValueError(f"/replay {words[0].lower()} takes no arguments")
        return ReplayRequest(words[0].lower())
    timeline: str | None = None
    start = end = None
    speed: float | str | None = None
    here = False
    for word in words:
        key, sep, value = word.partition("=")
        key = key.lower()
        if not sep:
            if key == "here":
                here = True
            elif timeline is None:
                timeline = word
            else:
                raise ValueError(f"unexpected '{word}' (one timeline at a time)")
            continue
        if key in ("from", "to"):
            try:
                # A bare date as "to" is that whole day, as with `personae replay --to`.
                when = parse_end(value) if key == "to" else parse_time(value, default_tz=UTC)
            except ValueError:
                raise ValueError(f"{key}: '{value}' is not an ISO 8601 date or time (e.g. 2014-11-12)") from None
            start, end = (when, end) if key == "from" else (start, when)
        elif key == "speed":
            speed = _speed(value)
        else:
            raise ValueError(f"unknown option '{key}'{did_you_mean(key, ['from', 'to', 'speed'])}")
    if start is not None and end is not None and start > end:
        raise ValueError("from is after to")
    return ReplayRequest("start", timeline, start, end, speed, here)


def _speed(value: str) -> float | str:
    if value.lower() == "max":
        return "max"
    try:
        speed = float(value)
    except ValueError:
        raise ValueError(f"speed: '{value}' is not a number or 'max'") from None
    if not speed > 0 or speed == float("inf"):
        raise ValueError("speed must be a positive number (or 'max')")
    return speed


@dataclass
class _Running:
    run: str
    timeline: Timeline
    total: int
    target: str
    origin: Incoming
    adapter: str
    task: asyncio.Task[None] | None = None
    fork: Bot | None = None
    done: int = 0
    mission: datetime | None = None


class ReplayControl:
    """Starts, reports on and stops the one admin replay of ``bot``.

    :param bot: the running bot; replays run in forks of it.
    :param timelines: what may be replayed (the timelines of bot.toml).
    """

    def __init__(self, bot: Bot, timelines: Sequence[Replayable]) -> None:
        self.bot = bot
        self.timelines = {r.timeline.id: r for r in timelines}
        self._current: _Running | None = None

    @property
    def running(self) -> bool:
        """Whether a replay is under way."""
        return self._current is not None

    async def command(self, args: str, incoming: Incoming, adapter: str) -> str:
        """Carry out ``/replay args`` for an admin and return the answer for their chat."""
        try:
            request = parse_request(args)
        except ValueError as exc:
            return f"{exc}. {USAGE}"
        if request.action == "status":
            return self.status()
        if request.action == "stop":
            return await self.stop()
        return await self.start(request, incoming, adapter)

    def status(self) -> str:
        """One line on the replay under way, if any."""
        cur = self._current
        if cur is None:
            return "No replay is running."
        at = f", mission time {_stamp(cur.mission)}" if cur.mission else ""
        return f"Replaying {cur.timeline.id} (run {cur.run}) to {cur.target}: {cur.done}/{cur.total} events{at}."

    async def start(self, request: ReplayRequest, incoming: Incoming, adapter: str) -> str:
        """Start a replay in a fork of the bot; refuses while another one runs."""
        if self._current is not None:
            return f"A replay is already running (run {self._current.run}); /replay stop ends it."
        if not self.timelines:
            return "No timeline is configured for replays (add one under [[timelines]] in bot.toml)."
        if request.timeline is None:
            if len(self.timelines) > 1:
                return f"Which timeline? {', '.join(sorted(self.timelines))}. {USAGE}"
            source = next(iter(self.timelines.values()))
        elif request.timeline in self.timelines:
            source = self.timelines[request.timeline]
        else:
            hint = did_you_mean(request.timeline, self.timelines)
            return f"No timeline '{request.timeline}'{hint}. Known: {', '.join(sorted(self.timelines))}."
        timeline = source.timeline
        window = timeline.window(request.start, request.end)
        if not window:
            return f"Timeline {timeline.id} has no event between those dates."
        speed = source.speed if request.speed is None else None if request.speed == "max" else float(request.speed)
        run = new_run_id()
        target = "this chat" if request.here else "subscribers and channels"
        cur = _Running(run, timeline, len(window), target, incoming, adapter)
        clock_start = min(timeline.start, request.start) if request.start else timeline.start
        clock = VirtualClock(clock_start, speed, fast_until=request.start)
        fork = self.bot.fork(clock=clock, run=run, target=(adapter, incoming.chat.id) if request.here else None)
        fork.outlet.linger = 0.02 if speed is None else 0.0
        cur.fork = fork
        # Claimed before the first await: a second /replay arriving meanwhile is refused.
        self._current = cur
        store = self.bot.store
        if store is not None:
            try:
                await store.replay_start(
                    run,
                    timeline.id,
                    {
                        "timeline": timeline.file,
                        "speed": "max" if speed is None else speed,
                        "from": request.start.isoformat() if request.start else None,
                        "to": request.end.isoformat() if request.end else None,
                        "seed": self.bot.options.seed,
                        "started_by": f"{adapter}:{incoming.user.id}",
                        "target": f"{adapter}:{incoming.chat.id}" if request.here else "broadcast",
                    },
                )
            except BaseException:
                self._current = None
                raise
        if self._current is not cur:
            return f"Replay {run} was stopped before it began."

        def advanced(ev: TimelineEvent) -> None:
            cur.mission = ev.at
            if request.start is None or ev.at >= request.start:  # the silent prelude is not progress
                cur.done += 1

        cur.task = asyncio.create_task(self._run(cur, request, source, advanced), name=f"replay-{run}")
        log.info("admin %s started replay %s of %s", incoming.user.id, run, timeline.id)
        pace = "full speed" if speed is None else f"{speed:g}× speed"
        return (
            f"Replaying {timeline.id}: {len(window)} events from {_stamp(window[0].at)} to {_stamp(window[-1].at)} "
            f"at {pace}, to {target} (run {run}). /replay status · /replay stop"
        )

    async def _run(
        self,
        cur: _Running,
        request: ReplayRequest,
        source: Replayable,
        advanced: Callable[[TimelineEvent], None],
    ) -> None:
        assert cur.fork is not None
        try:
            # The answer to /replay is queued on the live bot before this task first runs;
            # writing it now gives it an outbox id ahead of every post of the replay.
            await self.bot.flush()
            await replay(
                cur.fork,
                cur.timeline,
                run=cur.run,
                start=request.start,
                end=request.end,
                schedules=source.schedules,
                on_event=advanced,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken template mid-replay must not kill the bot
            log.error("replay %s failed: %s", cur.run, self.bot.redactor(f"{type(exc).__name__}: {exc}"))
            self._current = None
            await self._tell(cur, f"Replay {cur.run} failed after {cur.done}/{cur.total} events: {exc}")
            return
        self._current = None
        await self._tell(cur, f"Replay {cur.run} of {cur.timeline.id} finished: {cur.done} events.")

    async def _tell(self, cur: _Running, text: str) -> None:
        """Report to the admin's chat (through the live bot, so it is paced and retried)."""
        o = cur.origin
        await self.bot.deliver(
            [
                Outgoing(
                    o.persona,
                    o.platform,
                    o.chat.id,
                    text,
                    None,
                    "builtin:replay",
                    key=f"replay-end:{cur.run}",
                    at=self.bot.clock.now(),
                    adapter=cur.adapter,
                )
            ]
        )

    async def stop(self) -> str:
        """Cancel the replay under way and the posts it queued that are not sent yet."""
        cur = self._current
        if cur is None:
            return "No replay is running."
        cancelled = await self._cancel(cur, reason="cancelled by /replay stop")
        return f"Stopped replay {cur.run} after {cur.done}/{cur.total} events; {cancelled} queued post(s) cancelled."

    async def _end(self, cur: _Running) -> None:
        """Release the slot and stop the replay's task (what it queued is the caller's choice)."""
        self._current = None
        if cur.task is not None and not cur.task.done():
            cur.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cur.task

    async def _cancel(self, cur: _Running, *, reason: str) -> int:
        await self._end(cur)
        if cur.fork is not None:
            await cur.fork.discard()
        store = self.bot.store
        if store is None:
            return 0
        count = await store.outbox_cancel(cur.run, reason)
        for d in self.bot.dispatchers.values():
            d.cancel_run(cur.run)
        await store.replay_progress(cur.run, _iso(cur.mission), "stopped")
        log.info("replay %s stopped after %d/%d events; %d post(s) cancelled", cur.run, cur.done, cur.total, count)
        return count

    async def shutdown(self) -> None:
        """The bot is stopping: end the replay; what it queued stays in the outbox and is delivered later."""
        cur = self._current
        if cur is None:
            return
        await self._end(cur)
        if cur.fork is not None:
            with contextlib.suppress(Exception):
                await cur.fork.flush()  # queued rows are written, so nothing the replay said is lost
            await cur.fork.discard()
        if self.bot.store is not None:
            with contextlib.suppress(Exception):
                await self.bot.store.replay_progress(cur.run, _iso(cur.mission), "interrupted")


def _stamp(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "-"


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at else ""
