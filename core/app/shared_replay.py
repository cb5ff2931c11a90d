"""A replayed timeline (``mode = "replay"``) played once by the workers of one shared database.

Every worker of a PostgreSQL database derives the same run id
(:func:`~personae.app.replay.shared_run_id`), and only the worker that holds
the run's lock (:meth:`~personae.storage.interface.Coordination.exclusive`)
plays it. The holder records the mission time of each outbox write as the
run's position. When it dies its lock ends with its session, and a waiting
worker takes the run over: it replays the run's past at full speed up to the
stored position (rebuilding the personas' state), then goes on at the run's
speed. The outbox keys of a replay are the same in every worker (run, event,
adapter, chat, piece), so what the past queues again is ignored, and what the
dead holder had not yet written is queued now: nothing is lost, and a message
can be repeated only if it was in flight on the dead worker. A run already
finished is not played again: the workers only answer chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..language.errors import ConfigError
from ..storage.interface import Coordination
from ..timing.clock import VirtualClock
from ..timing.timeline import Timeline
from .replay import ReplayResult, replay
from .runtime import Bot
from .screen import Progress

log = logging.getLogger("personae.app.replay")


class ReplayHoldLost(ConfigError):
    """The connection that held the run's lock broke: another worker may be playing it now."""


@dataclass(frozen=True, slots=True)
class SharedRun:
    """One replayed timeline of ``personae run`` on a shared database, as every worker sees it."""

    run: str
    timeline: Timeline
    #: The run's record (``replay_start``): timeline file, speed, window, seed.
    options: Mapping[str, Any]
    digest: str
    start: datetime | None
    end: datetime | None
    schedules: bool
    #: Seconds between attempts at taking the run over.
    poll: float = 0.5


async def play_shared(
    bot: Bot, coordination: Coordination, shared: SharedRun, *, progress: Progress | None = None
) -> ReplayResult | None:
    """Wait for the run's lock, then play the run from where it got to; ``None`` if it was already done.

    While it waits, the bot's scheduler runs (delayed chat answers fire). Raises
    :class:`ReplayHoldLost` if the lock is lost while playing: this process must
    not go on queueing the run's messages beside the worker that took it over.
    """
    store = bot.store
    assert store is not None, "a shared run needs the shared database"
    waiting = asyncio.create_task(bot.scheduler.run(), name="scheduler-while-waiting")
    try:
        async with coordination.exclusive(f"replay:{shared.run}", retry=shared.poll) as lost:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            record = await store.replay_get(shared.run)
            if record is not None and record["status"] == "done":
                return None
            resume_at = None
            if record is None:
                await store.replay_start(shared.run, shared.timeline.id, shared.options, timeline_hash=shared.digest)
            elif record["position"]:
                resume_at = datetime.fromisoformat(record["position"])
                log.warning("replay %s: taking the run over from %s", shared.run, resume_at.isoformat())
            _restart_clock(bot, shared, resume_at)

            async def written(at: datetime | None) -> None:
                if at is not None:
                    await store.replay_progress(shared.run, at.isoformat())

            bot.outlet.on_written = written
            playing = asyncio.create_task(
                replay(
                    bot,
                    shared.timeline,
                    run=shared.run,
                    start=shared.start,
                    end=shared.end,
                    resume_at=resume_at,
                    schedules=shared.schedules,
                    progress=progress,
                )
            )
            watch = asyncio.create_task(lost.wait())
            try:
                await asyncio.wait({playing, watch}, return_when=asyncio.FIRST_COMPLETED)
                dropped = not playing.done()
            finally:
                bot.outlet.on_written = None
                watch.cancel()
                if not playing.done():
                    playing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await playing
            if dropped:
                raise ReplayHoldLost(
                    f"replay {shared.run}: lost the database connection that held the run;"
                    " stopping this worker (another worker resumes the run)"
                )
            return playing.result()
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting


def _restart_clock(bot: Bot, shared: SharedRun, resume_at: datetime | None) -> None:
    """Set the bot's mission clock as a fresh run's (resumed: at full speed up to ``resume_at``)."""
    clock = bot.clock
    if not isinstance(clock, VirtualClock):
        return
    first = shared.timeline.events[0].at
    start = shared.start
    clock.jump(min(first, start) if start else first)
    clock.fast_until = max(filter(None, [start, resume_at]), default=None)
