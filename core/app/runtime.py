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
from ..delivery.split import split_message
from ..engine.engine import Engine, EngineError
from ..engine.messages import Event, Incoming, Outgoing
from ..engine.persona import Persona
from ..language.errors import ConfigError, PersonaeError
from ..language.templates import TemplateRenderError
from ..storage.interface import Storage
from ..storage.records import LogRow, OutboxItem, OutboxRow
from ..timing.clock import Clock, SystemClock
from ..timing.cron import fire_times
from ..timing.scheduler import Handle, Scheduler
from .metrics import Metrics

log = logging.getLogger("personae.app.runtime")

#: Queued outbox rows written as soon as there are this many (not after ``linger``).
_OUTBOX_BATCH = 2000
#: Queued outbox rows at which :meth:`Bot.deliver` waits for the disk (bounds memory).
_OUTBOX_HIGH_WATER = 20_000

Transcript = Callable[[Outgoing], None]


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
    #: Seconds before the first retry of an adapter whose platform could not be reached at
    #: start; doubled after each failed attempt, up to ``start_backoff_max``.
    start_backoff: float = 1.0
    start_backoff_max: float = 60.0


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
        self.session = self.options.run or uuid.uuid4().hex[:12]
        self.scheduler = Scheduler(self.clock, on_error=self._scheduler_error)
        #: Who speaks for each (persona, platform): the adapters a message is queued on.
        self._speakers: dict[tuple[str, str], list[Adapter]] = {}
        for a in self.adapters:
            self._speakers.setdefault((a.persona, a.platform), []).append(a)
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
            sink=self.deliver,
            platforms=platforms,
            voices=voices,
            seed=self.options.seed,
            max_depth=self.options.max_depth,
            run=self.options.run,
        )
        if not self.options.persist_state:
            self.engine.persist_state = False
        self.dispatchers: dict[str, Dispatcher] = {}
        #: This bot's Prometheus metrics (``GET /metrics`` of the HTTP intake).
        self.metrics = Metrics()
        self.metrics.watch_delivery(lambda: {lane: d.stats for lane, d in self.dispatchers.items()})
        self._platform_of = {a.name: a.platform for a in self.adapters}
        self._tasks: list[asyncio.Task[Any]] = []
        self._started: list[Adapter] = []
        self._subscribers: dict[str, list[str]] = {}
        self._rows: list[OutboxRow] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._schedules_on = False
        self._cron: dict[tuple[str, int], Handle] = {}
        #: Whose cron entries run, and whom their emits reach (a replayed timeline's cast; ``None``: all).
        self._schedule_cast: frozenset[str] | None = None
        #: Seconds queued rows may wait to be written together (0: next loop turn).
        self.linger = 0.0
        #: Called after each outbox write, with the mission time of the last message written.
        self.on_written: Callable[[datetime | None], Awaitable[None]] | None = None
        self._last_at: datetime | None = None
        #: Messages from before this mission time are dropped (a replay's silent prelude).
        self.silent_until: datetime | None = None
        #: ``(adapter, chat)``: broadcasts go only there (an admin's ``/replay here``).
        self.target: tuple[str, str] | None = None
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
        child.dispatchers = self.dispatchers
        child._subscribers = self._subscribers
        child.target = target
        return child

    async def discard(self) -> None:
        """Drop what a (cancelled) fork has queued but not yet written."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        async with self._flush_lock:
            self._rows.clear()

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
            if self.store is not None:
                self._subscribers[a.name] = await self.store.subscribers(a.name)
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
        d = Dispatcher(
            self.store,
            members,
            redact=self.redactor,
            on_sent=self._sent,
            on_failed=self._failed,
            on_chat_gone=self._chat_gone,
            on_chat_moved=self._chat_moved,
            seed=self.options.seed,
        )
        self.dispatchers[lane] = d
        self._tasks.append(asyncio.create_task(d.run(), name=f"dispatch-{lane}"))

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
        """Put every persona's cron entries on the scheduler (again: the previous ones are taken off).

        With ``cast`` (a replayed timeline's), only those personas' entries run, and what they
        emit reaches only that cast: a persona outside the timeline never posts in its replay.
        """
        self.stop_schedules()
        self._schedules_on = True
        self._schedule_cast = cast
        for persona in self.engine.personas.values():
            if cast is not None and persona.id not in cast:
                continue
            for i in range(len(persona.schedule)):
                self._next_cron(persona.id, i, after or self.clock.now())

    def stop_schedules(self) -> None:
        """Take every cron entry off the scheduler (a replayed mission is over: its clock must not run on)."""
        self._schedules_on = False
        for handle in self._cron.values():
            handle.cancel()
        self._cron.clear()

    def _next_cron(self, persona_id: str, index: int, after: datetime) -> None:
        persona = self.engine.personas.get(persona_id)
        if not self._schedules_on or persona is None or index >= len(persona.schedule):
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
                key = f"{self.options.run or 'live'}|cron:{persona_id}:{index}:{when.isoformat()}"
                event = Event(s.event, when, {}, "schedule", persona_id, 0, key, self._schedule_cast)
                await self.deliver(await self.engine.react(p, s.action, event))
            self._next_cron(persona_id, index, when)

        self._cron[(persona_id, index)] = self.scheduler.call_at(when, fire, recurring=True)

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
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self.store is not None:
            await self.flush()
            await self.store.flush()

    # -- messages in

    async def on_message(self, incoming: Incoming) -> None:
        """Handle one user message from an adapter: built-in commands, then the persona."""
        arrived = time.perf_counter()
        incoming = incoming.cleaned()
        self.metrics.messages_in.labels(incoming.persona, incoming.platform).inc()
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
            if self._is_builtin(incoming):
                # The user's rate limit counts built-in commands too: a flood of /subscribe spends the budget.
                refused = self.engine.admit(incoming)
                if refused is not None:
                    await self.deliver([_with_adapter(o, incoming) for o in refused])
                    self._count_replies(refused, arrived)
                    return
            handled = await self._builtin(incoming)
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
            self.metrics.replies.labels(o.persona, o.rule).inc()

    def _is_builtin(self, incoming: Incoming) -> bool:
        """Whether :meth:`_builtin` answers ``incoming`` (a built-in command of this bot, on a known adapter)."""
        from ..engine.router import parse_command

        cmd = parse_command(incoming.text, "/!")
        if cmd is None or (cmd.bot and incoming.bot_username and cmd.bot.lower() != incoming.bot_username.lower()):
            return False
        names = self.options.commands
        store_cmds = {names.subscribe, names.unsubscribe} if self.store is not None else set()
        admin_cmds = {names.emit, names.reload, names.replay}
        return cmd.name in {c for c in (*store_cmds, *admin_cmds) if c} and self._adapter_for(incoming) is not None

    async def _builtin(self, incoming: Incoming) -> list[Outgoing] | None:
        from ..engine.router import parse_command

        cmd = parse_command(incoming.text, "/!")
        if cmd is None:
            return None
        if cmd.bot and incoming.bot_username and cmd.bot.lower() != incoming.bot_username.lower():
            return None
        names = self.options.commands
        adapter = self._adapter_for(incoming)
        if adapter is None:
            return None

        def reply(text: str) -> list[Outgoing]:
            return [
                Outgoing(
                    incoming.persona,
                    incoming.platform,
                    incoming.chat.id,
                    text,
                    incoming.message_id,
                    f"builtin:{cmd.name}",
                    key=f"reply:{adapter.name}:{incoming.chat.id}:{incoming.message_id}",
                    at=self.clock.now(),
                )
            ]

        persona = self.engine.personas.get(incoming.persona)
        pname = persona.name if persona else incoming.persona
        if names.subscribe and cmd.name == names.subscribe and self.store is not None:
            new = await self.store.subscribe(adapter.name, incoming.chat.id, incoming.persona)
            if new:
                self._subscribers.setdefault(adapter.name, []).append(incoming.chat.id)
            self._log_in(incoming, "builtin")
            return reply(f"Subscribed: {pname}'s news will arrive here." if new else "This chat is already subscribed.")
        if names.unsubscribe and cmd.name == names.unsubscribe and self.store is not None:
            gone = await self.unsubscribe(adapter.name, incoming.chat.id)
            self._log_in(incoming, "builtin")
            return reply("Unsubscribed. Farewell!" if gone else "This chat was not subscribed.")
        admin_cmds = {c for c in (names.emit, names.reload, names.replay) if c}
        if cmd.name in admin_cmds:
            if incoming.user.id not in adapter.config.admins and not incoming.user.is_admin:
                self._log_in(incoming, "refused: not an admin")
                log.warning("refused /%s from non-admin user %s on %s", cmd.name, incoming.user.id, adapter.name)
                return reply("Sorry, only the bot's admins can do that.")
            self._log_in(incoming, "admin")
            if cmd.name == names.emit:
                from .chat import parse_event_line

                try:
                    event = parse_event_line(f"!event {cmd.args}", self.clock.now(), source="admin")
                except ValueError as exc:
                    return reply(f"Usage: /{names.emit} EVENT key=value … ({exc})")
                with self.engine.problems_of() as failed:
                    await self.deliver(await self.engine.dispatch(event))
                if failed:
                    why = "; ".join(f"{p.persona} ({Path(p.where).name}): {p.message}" for p in failed[:3])
                    return reply(f"Event '{event.name}' raised, but {len(failed)} reaction(s) failed: {why}")
                if not self.engine.reacts_to(event.name):
                    return reply(f"Event '{event.name}' raised; no persona reacts to it.")
                return reply(f"Event '{event.name}' raised.")
            if cmd.name == names.replay:
                if self.replays is None:
                    return reply("No timeline is configured for replays (add one under [[timelines]] in bot.toml).")
                return reply(await self.replays.command(cmd.args, incoming, adapter.name))
            return reply(self.reload()[1])
        return None

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

    def _adapter_for(self, incoming: Incoming) -> Adapter | None:
        for a in self.adapters:
            same = a.persona == incoming.persona and a.platform == incoming.platform
            if same and incoming.adapter in (None, a.name):
                return a
        return None

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

    # -- messages out

    async def deliver(self, outgoing: list[Outgoing]) -> None:
        """Queue messages: expand broadcasts, split long text, write the outbox, wake dispatchers."""
        if self.silent_until is not None:
            outgoing = [o for o in outgoing if o.at is None or o.at >= self.silent_until]
        if self.target is not None:
            outgoing = self._retarget(outgoing, *self.target)
        if not outgoing:
            return
        if self.transcript is not None:
            for o in outgoing:
                self.transcript(o)
        if self.store is None:
            return
        rows = self._rows
        run = self.options.run
        for o in outgoing:
            for adapter in self._speakers.get((o.persona, o.platform), ()):
                name = adapter.name
                if o.chat is not None:
                    if o.adapter is not None and o.adapter != name:
                        continue
                    chats: Sequence[str] = (o.chat,)
                    base = f"{self.session}|{o.key}"
                else:
                    subs = self._subscribers.get(name, [])
                    channels = adapter.channels
                    chats = list(dict.fromkeys([*map(str, channels), *subs])) if channels else subs
                    base = o.key
                limits = adapter.limits
                mission = o.at.isoformat() if o.at else None
                persona, event, rule = o.persona, o.event, o.rule
                if limits.measure != "utf16":
                    # Such a platform may prefix each piece per chat (Mastodon: "@author "): split per chat.
                    for chat in chats:
                        room = limits.max_length - adapter.reserve(chat)
                        for n, part in enumerate(split_message(o.text, room, limits.dialect, limits.measure)):
                            reply_to = o.reply_to if n == 0 else None
                            key = f"{base}|{name}|{chat}|{n}"
                            rows.append((key, run, persona, name, chat, part, reply_to, event, rule, mission))
                    continue
                parts = split_message(o.text, limits.max_length, limits.dialect)
                if len(parts) == 1:
                    text, reply_to = parts[0], o.reply_to
                    rows.extend(
                        (f"{base}|{name}|{chat}|0", run, persona, name, chat, text, reply_to, event, rule, mission)
                        for chat in chats
                    )
                    continue
                for chat in chats:
                    for n, part in enumerate(parts):
                        reply_to = o.reply_to if n == 0 else None
                        rows.append(
                            (
                                f"{base}|{name}|{chat}|{n}",
                                run,
                                persona,
                                name,
                                chat,
                                part,
                                reply_to,
                                event,
                                rule,
                                mission,
                            )
                        )
            if o.at is not None:
                self._last_at = o.at
        if len(rows) >= _OUTBOX_HIGH_WATER:
            await self.flush()  # back-pressure: the producer waits for the disk
        elif rows and self._flusher is None:
            # A full batch is written at once, in the background: the caller goes on
            # producing the next batch while SQLite commits this one.
            delay = 0.0 if len(rows) >= _OUTBOX_BATCH else self.linger
            self._flusher = asyncio.create_task(self._flush_soon(delay))

    def _retarget(self, outgoing: list[Outgoing], name: str, chat: str) -> list[Outgoing]:
        adapter = next((a for a in self.adapters if a.name == name), None)
        if adapter is None:
            return []
        # Only what this adapter's persona says on its platform: another persona's
        # broadcast has no voice in this chat, and must not fall back to everyone.
        return [
            replace(o, chat=chat, adapter=name) if o.chat is None else o
            for o in outgoing
            if o.persona == adapter.persona and o.platform == adapter.platform
        ]

    async def _flush_soon(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        try:
            await self.flush()
        except Exception as exc:  # the rows stay queued; the next flush retries them
            log.error("could not write the outbox: %s", exc)

    async def flush(self) -> None:
        """Write queued outbox rows now (one transaction) and wake the dispatchers."""
        if self.store is None:
            return
        async with self._flush_lock:  # one writer at a time keeps rows in their queued order
            rows, self._rows = self._rows, []
            last = self._last_at
            if rows:
                try:
                    await self.store.outbox_add(rows)
                except BaseException:
                    self._rows[:0] = rows  # never drop a message: the next flush retries
                    raise
                for d in self.dispatchers.values():
                    d.notify()
            if self.on_written is not None:
                await self.on_written(last)

    async def subscribe(self, adapter: str, chats: Sequence[str]) -> None:
        """Subscribe ``chats`` to ``adapter``'s broadcasts (imports, tests, benchmarks)."""
        if self.store is None:
            return
        persona = next(a.persona for a in self.adapters if a.name == adapter)
        await self.store.subscribe_many(adapter, chats, persona)
        subs = self._subscribers.setdefault(adapter, [])
        subs.extend(c for c in chats if c not in set(subs))

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Remove ``chat`` from ``adapter``'s broadcasts."""
        if self.store is None:
            return False
        subs = self._subscribers.get(adapter, [])
        if chat in subs:
            subs.remove(chat)
        return await self.store.unsubscribe(adapter, chat)

    async def _sent(self, item: OutboxItem, receipt: Receipt) -> None:
        self.metrics.messages_out.labels(item.persona, self._platform_of.get(item.adapter, item.adapter)).inc()

    async def _failed(self, item: OutboxItem, error: str) -> None:
        log.error("message %s to %s on %s failed for good: %s", item.id, item.chat, item.adapter, error)

    async def _chat_moved(self, name: str, old: str, new: str) -> None:
        # The store has moved the subscription already; keep the in-memory list in step.
        subs = self._subscribers.get(name)
        if subs is not None and old in subs:
            self._subscribers[name] = list(dict.fromkeys(new if c == old else c for c in subs))
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
