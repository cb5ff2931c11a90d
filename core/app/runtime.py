"""The running bot: adapters in, engine, outbox, dispatchers out.

:class:`Bot` wires the parts together. Every message the engine produces is
expanded per adapter and chat (broadcasts go to subscribers and configured
channels), split to the platform's length, and written to the outbox with an
idempotency key *before* anything is sent; the dispatchers deliver it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from personae.adapters.base import Adapter, PlatformUnreachable, Receipt

from ..delivery.dispatcher import Dispatcher
from ..delivery.secrets import Redactor, install_log_redaction
from ..delivery.sharing import SharedLane, Sharing
from ..engine.engine import Engine, EngineError
from ..engine.messages import Incoming, Outgoing
from ..engine.persona import Persona
from ..language.errors import ConfigError, PersonaeError
from ..language.templates import TemplateRenderError
from ..storage.interface import Outbox, Storage
from ..storage.records import LogRow, OutboxItem
from ..timing.clock import Clock, SystemClock
from ..timing.scheduler import Scheduler
from .builtins import Builtins, speaker_for
from .metrics import Metrics
from .outlet import Outlet, Transcript
from .schedules import CronSchedules

log = logging.getLogger("personae.app.runtime")


class AdminReplays(Protocol):
    """What the bot needs of the admin ``/replay`` command (:class:`~personae.app.replay_control.ReplayControl`).

    A protocol rather than the class, so the running bot does not import the
    replays that drive it: the command layer builds one and hands it in.
    """

    async def command(self, args: str, incoming: Incoming, adapter: str) -> str: ...

    async def shutdown(self) -> None: ...


class AdapterStartError(ConfigError):
    """An adapter could not start (platform unreachable, token refused): one line for the operator."""


@dataclass
class Commands:
    """Names of the built-in commands (empty string = off)."""

    subscribe: str = "subscribe"
    unsubscribe: str = "unsubscribe"
    emit: str = "emit"
    reload: str = "reload"
    replay: str = "replay"


@dataclass
class BotOptions:
    """How the bot runs."""

    seed: int = 0
    max_depth: int = 8
    commands: Commands = field(default_factory=Commands)
    persist_state: bool = True
    run: str | None = None
    #: Prefix of the keys of replies to chats (``None``: the run id, else a new one per bot).
    session: str | None = None
    #: Seconds before the first retry of an adapter whose platform could not be reached at
    #: start; doubled after each failed attempt, up to ``start_backoff_max``.
    start_backoff: float = 1.0
    start_backoff_max: float = 60.0
    #: Several processes on one database (PostgreSQL): leases and takeover (see :mod:`personae.delivery.sharing`).
    sharing: Sharing = field(default_factory=Sharing)


class Bot:
    """One engine, many adapters, one store.

    :param personas: the compiled personas.
    :param adapters: started by :meth:`start`, each serving one persona.
    :param store: ``None`` for a dry run (messages go straight to ``transcript``).
    :param clock: the mission or system clock.
    :param transcript: called with every message as it is queued (dry runs, tests).
    :param reload: returns fresh personas for ``/reload`` and file watching.
    """

    def __init__(
        self,
        personas: Mapping[str, Persona],
        adapters: Sequence[Adapter],
        *,
        store: Storage | None,
        clock: Clock | None = None,
        options: BotOptions | None = None,
        transcript: Transcript | None = None,
        redactor: Redactor | None = None,
        reload: Callable[[], Mapping[str, Persona]] | None = None,
    ) -> None:
        self.options = options or BotOptions()
        self.clock: Clock = clock or SystemClock()
        self.store = store
        self.adapters = list(adapters)
        self.transcript = transcript
        self.redactor = redactor or Redactor()
        for a in self.adapters:
            self.redactor.add(*a.secrets())
            a.on_secrets = functools.partial(self.redactor.track, a.name)  # Bluesky's session tokens
            if a.persona in personas:
                a.locale = personas[a.persona].locale  # Mastodon tags each post with its language
        self._reload = reload
        self.session = self.options.session or self.options.run or uuid.uuid4().hex[:12]
        self.scheduler = Scheduler(self.clock, on_error=self._scheduler_error)
        self.dispatchers: dict[str, Dispatcher] = {}
        #: The outgoing side: outbox writes and who receives broadcasts.
        self.outlet = Outlet(
            store, self.adapters, self.dispatchers, session=self.session, run=self.options.run, transcript=transcript
        )
        if store is not None and store.coordination is not None:
            # Other workers of the shared database take /subscribe and /unsubscribe too.
            self.outlet.refresh = 1.0
        self.deliver = self.outlet.deliver
        self.flush = self.outlet.flush
        self.subscribe = self.outlet.subscribe
        self.unsubscribe = self.outlet.unsubscribe
        platforms = {a.platform: a.limits.dialect for a in self.adapters} or {"console": "plain"}
        voices: dict[str, list[str]] = {}
        for a in self.adapters:
            voices.setdefault(a.persona, [])
            if a.platform not in voices[a.persona]:
                voices[a.persona].append(a.platform)
        self.engine = Engine(
            personas,
            store=store,
            clock=self.clock,
            scheduler=self.scheduler,
            sink=self.outlet.deliver,
            platforms=platforms,
            voices=voices,
            seed=self.options.seed,
            max_depth=self.options.max_depth,
            run=self.options.run,
        )
        if not self.options.persist_state:
            self.engine.persist_state = False
        if self.options.run is None:
            # Live timelines (run "live:<id>") and cron entries fire in every worker of a shared
            # database, with the same keys: their outbox rows and log rows are written once. So
            # does an event posted over HTTP ("http:<id>") that two workers play.
            self.engine.shared_keys = ("live:", "live|cron:", "http:")
        #: This bot's Prometheus metrics (``GET /metrics`` of the HTTP intake).
        self.metrics = Metrics()
        self.metrics.watch_delivery(lambda: {lane: d.stats for lane, d in self.dispatchers.items()})
        self._platform_of = {a.name: a.platform for a in self.adapters}
        self._tasks: list[asyncio.Task[Any]] = []
        self._started: list[Adapter] = []
        #: The personas' cron entries (:meth:`CronSchedules.start` / ``stop``).
        self.schedules = CronSchedules(
            self.engine, self.clock, self.scheduler, self.outlet.deliver, run=self.options.run
        )
        self._builtins = Builtins(self, self._log_in)
        #: Serves the admin command ``/replay`` (see :mod:`personae.app.replay_control`).
        self.replays: AdminReplays | None = None

    def fork(self, *, clock: Clock, run: str, target: tuple[str, str] | None = None) -> Bot:
        """A bot for a replay inside this one: its own clock, scheduler and engine state, this bot's outbox.

        The fork starts no adapter and no dispatcher: what it queues is
        delivered by this bot's dispatchers, to this bot's subscribers. Its
        personas' state starts fresh and is never persisted, so a replay
        cannot disturb the live conversation.
        """
        child = Bot(
            self.engine.personas,
            self.adapters,
            store=self.store,
            clock=clock,
            options=BotOptions(
                seed=self.options.seed,
                max_depth=self.options.max_depth,
                commands=self.options.commands,
                persist_state=False,
                run=run,
            ),
            redactor=self.redactor,
        )
        child.dispatchers = child.outlet.dispatchers = self.dispatchers
        child.outlet.subscribers = self.outlet.subscribers
        child.outlet.target = target
        return child

    async def discard(self) -> None:
        """Drop what a (cancelled) fork has queued but not yet written."""
        await self.outlet.discard()

    # -- lifecycle

    async def start(self, *, schedules: bool = True) -> None:
        """Start adapters, each lane's dispatcher once its adapters are up, then cron schedules.

        Adapters start side by side. One whose platform cannot be reached
        (:class:`PlatformUnreachable`) is retried with backoff, a warning line per
        attempt; this returns once every adapter runs. Any other start failure
        stops the rest and raises :class:`AdapterStartError`.
        """
        install_log_redaction(self.redactor)
        lanes: dict[str, list[Adapter]] = {}
        for a in self.adapters:
            lanes.setdefault(a.lane or a.name, []).append(a)
        await self.outlet.load_subscribers()
        try:
            async with asyncio.TaskGroup() as group:
                for lane, members in lanes.items():
                    group.create_task(self._start_lane(lane, members))
        except BaseExceptionGroup as failed:
            # The first real failure; the others were cancelled because of it.
            errors = [e for e in failed.exceptions if not isinstance(e, asyncio.CancelledError)]
            raise (errors or list(failed.exceptions))[0] from None
        if schedules:
            self.start_schedules()

    async def _start_lane(self, lane: str, members: list[Adapter]) -> None:
        """Start a lane's adapters, then its dispatcher: nothing is sent through an adapter not yet up."""
        await asyncio.gather(*(self._start_adapter(a) for a in members))
        if self.store is None:
            return

        def dispatcher(outbox: Outbox) -> Dispatcher:
            return Dispatcher(
                outbox,
                members,
                redact=self.redactor,
                on_sent=self._sent,
                on_failed=self._failed,
                on_chat_gone=self._chat_gone,
                on_chat_moved=self._chat_moved,
                seed=self.options.seed,
            )

        coordination = self.store.coordination
        if coordination is None:  # this process owns the database: it sends everything itself
            d = self.dispatchers[lane] = dispatcher(self.store)
            self._tasks.append(asyncio.create_task(d.run(), name=f"dispatch-{lane}"))
            return

        def publish(d: Dispatcher | None) -> None:
            if d is None:
                self.dispatchers.pop(lane, None)
            else:
                self.dispatchers[lane] = d

        shared = SharedLane(self.store, coordination, lane, members, dispatcher, publish, self.options.sharing)
        self._tasks.append(asyncio.create_task(shared.run(), name=f"lane-{lane}"))

    @property
    def ready(self) -> bool:
        """Every adapter started, and every dispatcher running (``GET /readyz``)."""
        running = all(not t.done() for t in self._tasks) and (self.store is None or bool(self._tasks))
        return bool(self.adapters) and len(self._started) == len(self.adapters) and running

    @property
    def not_started(self) -> list[str]:
        """Names of the adapters not (or no longer) running."""
        return [a.name for a in self.adapters if a not in self._started]

    async def _start_adapter(self, a: Adapter) -> None:
        wait = self.options.start_backoff
        while True:
            try:
                await a.start(self.on_message)
            except PlatformUnreachable as exc:
                await _quietly_stop(a)
                log.warning("%s", self.redactor(f"{a.name}: {exc}, retrying in {wait:g} s"))
                await asyncio.sleep(wait)
                wait = min(self.options.start_backoff_max, wait * 2)
                continue
            except Exception as exc:
                await _quietly_stop(a)
                raise AdapterStartError(self.redactor(f"adapter '{a.name}' failed to start: {exc}")) from None
            except BaseException:  # cancelled (stopped while starting): leave nothing half open
                await asyncio.shield(_quietly_stop(a))
                raise
            self._started.append(a)
            return

    def start_schedules(self, after: datetime | None = None, *, cast: frozenset[str] | None = None) -> None:
        """Put the personas' cron entries on the scheduler (see :meth:`CronSchedules.start`)."""
        self.schedules.start(after, cast=cast)

    def stop_schedules(self) -> None:
        """Take every cron entry off the scheduler."""
        self.schedules.stop()

    async def drain(self) -> None:
        """Wait until every queued message has been delivered (or failed for good)."""
        await self.flush()
        for d in self.dispatchers.values():
            d.notify()
        await asyncio.gather(*(d.drained() for d in self.dispatchers.values()))

    async def stop(self, *, drain_timeout: float = 10.0) -> None:
        """Stop taking messages, deliver what is queued (within ``drain_timeout``), then stop adapters.

        The order matters: an adapter must still be connected while the outbox
        drains. What the timeout leaves unsent stays pending in the outbox and is
        sent after the next start.
        """
        if self.replays is not None:
            await self.replays.shutdown()
        for a in reversed(self._started):
            with contextlib.suppress(Exception):
                await a.stop_receiving()
        if self._tasks:  # dispatchers running (not after a failed start, nor a second stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), drain_timeout)
        for t in self._tasks:
            t.cancel()  # a dispatcher lets its sends in flight finish
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for a in reversed(self._started):
            await _quietly_stop(a)
        self._started.clear()
        await self.outlet.stop_flusher()
        if self.store is not None:
            await self.flush()
            await self.store.flush()

    # -- messages in

    async def on_message(self, incoming: Incoming) -> None:
        """Handle one user message from an adapter: built-in commands, then the persona."""
        arrived = time.perf_counter()
        incoming = incoming.cleaned()
        self.metrics.count_in.inc(incoming.persona, incoming.platform)
        if incoming.kind == "removed" and incoming.adapter is not None:
            # Removed from a group, or blocked: no more broadcasts there (writing again re-enables replies).
            gone = await self.unsubscribe(incoming.adapter, incoming.chat.id)
            self._log_in(incoming, "unsubscribed: bot removed" if gone else "ignored: removed")
            return
        if incoming.adapter is not None:
            for dispatcher in self.dispatchers.values():
                dispatcher.welcome_back(incoming.adapter, incoming.chat.id)
        if incoming.kind != "text":
            self._log_in(incoming, f"ignored: {incoming.kind}")
            return
        try:
            if self._builtins.handles(incoming):
                # The user's rate limit counts built-in commands too: a flood of /subscribe spends the budget.
                refused = self.engine.admit(incoming)
                if refused is not None:
                    await self.deliver([_with_adapter(o, incoming) for o in refused])
                    self._count_replies(refused, arrived)
                    return
            handled = await self._builtins.answer(incoming)
            if handled is not None:
                await self.deliver(handled)
                self._count_replies(handled, arrived)
                return
            out = await self.engine.handle(incoming)
        except (EngineError, TemplateRenderError) as exc:
            log.error("%s", self.redactor(str(exc)))
            return
        await self.deliver([_with_adapter(o, incoming) for o in out])
        self._count_replies(out, arrived)

    def _count_replies(self, out: Sequence[Outgoing], arrived: float) -> None:
        if not out:
            return
        self.metrics.reply_latency.observe(time.perf_counter() - arrived)
        for o in out:
            self.metrics.count_replies.inc(o.persona, o.rule)

    def reload(self) -> tuple[bool, str]:
        """Reload personas; on any error keep the running version. Returns (ok, message)."""
        if self._reload is None:
            return False, "Reloading is not configured."
        try:
            personas = self._reload()
        except PersonaeError as exc:
            log.error("reload failed, keeping the running personas:\n%s", exc)
            return False, f"Reload failed ({len(exc.diagnostics)} problem(s)); still running the previous version."
        self.engine.reload(personas)
        return True, f"Reloaded {len(personas)} persona(s)."

    def adapter_for(self, incoming: Incoming) -> Adapter | None:
        """The adapter ``incoming`` came through."""
        return speaker_for(self.adapters, incoming)

    def _log_in(self, incoming: Incoming, status: str) -> None:
        if self.store is not None:
            self.store.log(
                LogRow(
                    "in",
                    incoming.persona,
                    incoming.platform,
                    incoming.chat.id,
                    incoming.user.id,
                    incoming.user.name,
                    incoming.text,
                    None,
                    None,
                    None,
                    status,
                    None,
                    self.options.run,
                    self.clock.now(),
                )
            )

    # -- what the dispatchers report

    async def _sent(self, item: OutboxItem, receipt: Receipt) -> None:
        self.metrics.count_out.inc(item.persona, self._platform_of.get(item.adapter, item.adapter))

    async def _failed(self, item: OutboxItem, error: str) -> None:
        log.error("message %s to %s on %s failed for good: %s", item.id, item.chat, item.adapter, error)

    async def _chat_moved(self, name: str, old: str, new: str) -> None:
        self.outlet.chat_moved(name, old, new)
        log.info("%s: chat %s is now %s; its messages and subscription follow it", name, old, new)

    async def _chat_gone(self, name: str, chat: str, error: str) -> None:
        adapter = next(a for a in self.adapters if a.name == name)
        # The dispatcher calls this once per chat and run, then skips the chat.
        log.warning("%s: chat %s is gone (%s); skipping it", adapter.name, chat, error)
        if self.store is not None and await self.unsubscribe(adapter.name, chat):
            self.store.log(
                LogRow(
                    "event",
                    adapter.persona,
                    adapter.platform,
                    chat,
                    text=error,
                    status="unsubscribed",
                    event="unsubscribed",
                    run=self.options.run,
                )
            )

    def _scheduler_error(self, exc: BaseException) -> None:
        log.error("scheduled task failed: %s", self.redactor(f"{type(exc).__name__}: {exc}"))


async def _quietly_stop(adapter: Adapter) -> None:
    """Stop ``adapter``; a failure to stop is not worth more than a debug line."""
    try:
        await adapter.stop()
    except Exception as exc:
        log.debug("%s did not stop cleanly: %s", adapter.name, exc)


def _with_adapter(o: Outgoing, incoming: Incoming) -> Outgoing:
    if o.chat is None or incoming.adapter is None:
        return o
    return replace(o, adapter=incoming.adapter)


def watch_files(
    paths: Callable[[], list[Path]], on_change: Callable[[], Awaitable[None]], interval: float = 1.0
) -> asyncio.Task[None]:
    """Poll ``paths()`` for modification-time changes and call ``on_change``."""

    def snapshot() -> dict[Path, float]:
        out = {}
        for p in paths():
            with contextlib.suppress(OSError):
                out[p] = p.stat().st_mtime
        return out

    async def loop() -> None:
        seen = snapshot()
        while True:
            await asyncio.sleep(interval)
            now = snapshot()
            if now != seen:
                seen = now
                await on_change()

    return asyncio.create_task(loop(), name="personae-watch")
