"""Cron entries of the personas, on the bot's scheduler.

Each entry is scheduled one firing at a time: when it fires, the next time is
computed from the entry as it is *then* (a reload may have changed or removed
it), so a reloaded persona never fires an entry it no longer has.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from ..engine.engine import Engine
from ..engine.messages import Event, Outgoing
from ..timing.clock import Clock
from ..timing.cron import fire_times
from ..timing.scheduler import Handle, Scheduler


class CronSchedules:
    """Puts every persona's ``schedule:`` entries on a scheduler, and takes them off.

    :param deliver: where the reactions go (the bot's outlet).
    :param run: the replay run the firings belong to (``None``: live); part of each event's key.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        scheduler: Scheduler,
        deliver: Callable[[list[Outgoing]], Awaitable[None]],
        *,
        run: str | None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.scheduler = scheduler
        self.deliver = deliver
        self.run = run
        self._on = False
        self._cron: dict[tuple[str, int], Handle] = {}
        #: Whose cron entries run, and whom their emits reach (a replayed timeline's cast; ``None``: all).
        self._cast: frozenset[str] | None = None

    def start(self, after: datetime | None = None, *, cast: frozenset[str] | None = None) -> None:
        """Put every persona's cron entries on the scheduler (again: the previous ones are taken off).

        With ``cast`` (a replayed timeline's), only those personas' entries run, and what they
        emit reaches only that cast: a persona outside the timeline never posts in its replay.
        """
        self.stop()
        self._on = True
        self._cast = cast
        for persona in self.engine.personas.values():
            if cast is not None and persona.id not in cast:
                continue
            for i in range(len(persona.schedule)):
                self._next(persona.id, i, after or self.clock.now())

    def stop(self) -> None:
        """Take every cron entry off the scheduler (a replayed mission is over: its clock must not run on)."""
        self._on = False
        for handle in self._cron.values():
            handle.cancel()
        self._cron.clear()

    def _next(self, persona_id: str, index: int, after: datetime) -> None:
        persona = self.engine.personas.get(persona_id)
        if not self._on or persona is None or index >= len(persona.schedule):
            self._cron.pop((persona_id, index), None)
            return
        entry = persona.schedule[index]
        when = next(fire_times(entry.cron, after, entry.timezone), None)
        if when is None:
            return

        async def fire() -> None:
            p = self.engine.personas.get(persona_id)
            if p is not None and index < len(p.schedule):
                s = p.schedule[index]
                key = f"{self.run or 'live'}|cron:{persona_id}:{index}:{when.isoformat()}"
                event = Event(s.event, when, {}, "schedule", persona_id, 0, key, self._cast)
                await self.deliver(await self.engine.react(p, s.action, event))
            self._next(persona_id, index, when)

        self._cron[(persona_id, index)] = self.scheduler.call_at(when, fire, recurring=True)
