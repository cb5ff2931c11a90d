"""The engine: hosts personas, answers messages, reacts to events, keeps state.

It does no I/O of its own besides queueing log rows and state changes in the
:class:`~personae.storage.interface.Journal`; delivering what it returns is the runtime's job.
"""

from __future__ import annotations

import contextlib
import functools
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ..language.templates import Dialect, TemplateRenderError, Text, days_since
from ..storage.interface import Journal
from ..storage.records import LogRow
from ..timing.clock import Clock, SystemClock
from ..timing.scheduler import Scheduler
from . import cooldowns, limits, variety
from .cooldowns import Cooldowns, cooldown_key, describe_remaining
from .limits import Admission, RateLimiter
from .memory import ScopedMemory
from .messages import Event, Incoming, Outgoing
from .persona import Action, Persona
from .router import parse_command
from .safe_regex import MESSAGE_BUDGET, Budget, RegexTimeout
from .variety import Variety

Sink = Callable[[list[Outgoing]], Awaitable[None]]


class EngineError(Exception):
    """A problem while reacting (an emit loop, an unknown persona)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A runtime problem the engine logged instead of crashing (see :attr:`Engine.problems`)."""

    persona: str
    where: str
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one reply rule does with a message (see :meth:`Engine.explain`).

    ``outcome`` is ``answers``, ``shadowed`` (it would, but an earlier rule answers),
    ``no trigger match``, ``condition false``, ``condition failed: …``,
    ``cooling down: …`` (skipped), ``answers with its cooldown_say (cooling down: …)``,
    or ``rate limited: …`` (the user is past the persona's ``limits``; rule ``limits``).
    """

    rule: str
    where: str
    outcome: str


#: Where :meth:`Engine.problems_of` collects, in the current task's context.
_COLLECTING: ContextVar[list[Problem] | None] = ContextVar("personae_problems", default=None)

_COERCE: dict[type, Callable[[str], Any]] = {
    bool: lambda s: s.strip().lower() in ("1", "true", "yes", "on"),
    int: lambda s: int(float(s)),
    float: float,
}


class Engine:
    """One engine, many personas.

    :param personas: compiled personas by id.
    :param store: where log rows and state go; ``None`` keeps state in memory only.
    :param clock: mission/system clock templates see as ``now``.
    :param scheduler: runs delayed reactions; without one, delays are applied at once.
    :param sink: receives output produced later (delayed reactions).
    :param platforms: dialect of each platform messages are rendered for.
    :param voices: platforms each persona speaks on (default: all of ``platforms``).
    :param seed: base seed of every random pick, for reproducible runs.
    :param max_depth: bound on ``emit`` chains.
    """

    def __init__(
        self,
        personas: Mapping[str, Persona],
        *,
        store: Journal | None = None,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        sink: Sink | None = None,
        platforms: Mapping[str, Dialect] | None = None,
        voices: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
        max_depth: int = 8,
        run: str | None = None,
    ) -> None:
        self.personas: dict[str, Persona] = dict(personas)
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.scheduler = scheduler
        self.sink = sink
        self.platforms: dict[str, Dialect] = dict(platforms or {"console": "plain"})
        self.voices = {k: tuple(v) for k, v in (voices or {}).items()}
        self.seed = seed
        self.max_depth = max_depth
        self.run = run
        #: The latest runtime problems (at most 100), newest last.
        self.problems: list[Problem] = []
        #: Regex rules (persona id, rule index) that ran out of a message's time budget, reported once each.
        self._timed_out: set[tuple[str, int]] = set()
        #: Whether ``set:`` changes are saved to the store (replays keep their own state).
        self.persist_state = True
        #: Log nothing that happens before this mission time (a resumed replay re-runs its past).
        self.log_from: datetime | None = None
        #: Key prefixes of events that every process sharing the database fires alike (live
        #: timelines, cron entries): their log rows are keyed too, so they are written once.
        self.shared_keys: tuple[str, ...] = ()
        self._state: dict[str, dict[str, Any]] = {}
        self._chat_state: dict[tuple[str, str], dict[str, Any]] = {}
        self._counters: dict[str, int] = {}
        # Cooldowns, rate limits and latest picks: saved with state, each under a scope of its own.
        self._memories = {
            scope: ScopedMemory(scope, self._save_memory) for scope in (cooldowns.SCOPE, limits.SCOPE, variety.SCOPE)
        }
        self._cooldowns = Cooldowns(self._memories[cooldowns.SCOPE])
        self._limiter = RateLimiter(self._memories[limits.SCOPE])
        self._variety = Variety(self._memories[variety.SCOPE])

    # -- lifecycle

    async def restore(self) -> None:
        """Load persisted state from the store (persona-wide and per chat)."""
        if self.store is None:
            return
        for (persona, scope, chat), data in (await self.store.load_states()).items():
            if persona not in self.personas or not isinstance(data, Mapping):
                continue  # a row some other version (or hand) left in another shape starts afresh
            if scope == "persona":
                self.state(persona).update(_known(data, self.personas[persona].state))
            elif scope in self._memories:
                # A run that does not save them (a replay) does not read them either: its picks
                # and cooldowns then depend on its seed and timeline only.
                if self.persist_state:
                    self._memories[scope].load(persona, chat, data)
            else:
                self.chat_state(persona, chat).update(_known(data, self.personas[persona].chat_state))

    def reload(self, personas: Mapping[str, Persona]) -> None:
        """Swap in new persona versions, keeping state (keys the new version dropped are dropped)."""
        self.personas = dict(personas)
        for pid in list(self._state):
            if pid in self.personas:
                old = self._state[pid]
                self._state[pid] = {**self.personas[pid].state, **_known(old, self.personas[pid].state)}

    def state(self, persona: str) -> dict[str, Any]:
        """Live persona-wide state of ``persona``."""
        st = self._state.get(persona)
        if st is None:
            st = self._state[persona] = dict(self.personas[persona].state)
        return st

    def chat_state(self, persona: str, chat: str) -> dict[str, Any]:
        """Live state of ``persona`` in one chat (``platform:chat``)."""
        key = (persona, chat)
        st = self._chat_state.get(key)
        if st is None:
            st = self._chat_state[key] = dict(self.personas[persona].chat_state)
        return st

    @contextlib.contextmanager
    def problems_of(self) -> Iterator[list[Problem]]:
        """Collect the problems of what this task runs inside the block.

        A context variable, so a reaction failing meanwhile in another task
        (another user's message) is not blamed on this one.
        """
        found: list[Problem] = []
        token = _COLLECTING.set(found)
        try:
            yield found
        finally:
            _COLLECTING.reset(token)

    def reacts_to(self, event: str) -> list[str]:
        """Ids of the personas with a reaction to ``event``."""
        return [p.id for p in self.personas.values() if event in p.events]

    def audience(self, event: Event) -> list[Persona]:
        """The personas ``event`` reaches, in load order: the one it names, else those of its cast.

        Scoping is what keeps timelines apart: a persona outside a timeline's cast never
        hears its events, nor the events their reactions emit, whatever it handles.
        """
        if event.persona is not None:
            p = self.personas.get(event.persona)
            return [p] if p is not None else []
        if event.cast is None:
            return list(self.personas.values())
        return [p for p in self.personas.values() if p.id in event.cast]

    def speaks_on(self, persona: str) -> tuple[str, ...]:
        """Platforms ``persona`` is rendered for when it broadcasts."""
        return self.voices.get(persona) or tuple(self.platforms)

    # -- messages

    def admit(self, incoming: Incoming) -> list[Outgoing] | None:
        """Count ``incoming`` against its user's ``limits``: ``None`` if it may be handled, else what to send.

        :meth:`handle` counts the messages it answers by itself; the runtime calls this
        for its built-in commands, which spend the user's allowance too.
        """
        incoming = incoming.cleaned()
        persona = self.personas.get(incoming.persona)
        if persona is None or persona.limits is None or self._for_another_bot(persona, incoming):
            return None
        return self._admit(persona, incoming, self.clock.now(), time.perf_counter())

    def _for_another_bot(self, persona: Persona, incoming: Incoming) -> bool:
        command = parse_command(incoming.text, persona.router.prefixes)
        return bool(
            command is not None
            and command.bot
            and incoming.bot_username
            and command.bot.lower() != incoming.bot_username.lower()
        )

    async def handle(self, incoming: Incoming, *, admitted: bool = False) -> list[Outgoing]:
        """Answer one user message: first matching rule, else fallback. Never raises on user text.

        A message that a rule or the fallback answers counts against its user's ``limits``
        (unless ``admitted`` already): past them, the user is told once, then ignored.
        """
        t0 = time.perf_counter()
        incoming = incoming.cleaned()
        persona = self.personas.get(incoming.persona)
        if persona is None:
            raise EngineError(f"unknown persona '{incoming.persona}'")
        text = incoming.text
        router = persona.router
        command = parse_command(text, router.prefixes)
        now = self.clock.now()
        if (
            command is not None
            and command.bot
            and incoming.bot_username
            and command.bot.lower() != incoming.bot_username.lower()
        ):
            self._log_in(incoming, now, "ignored: addressed to another bot")
            return []
        chat_key = f"{incoming.platform}:{incoming.chat.id}"
        ctx: dict[str, Any] | None = None  # built only when a template or condition needs it
        chosen: Action | None = None
        cooling = False  # the chosen rule rests and says its cooldown_say
        match: dict[str, Any] = {}
        args = command.args if command else ""
        budget = Budget.start()  # shared by every regex tried on this message
        for index in router.candidates(text, command):
            try:
                hit = router.hit(index, text, command, budget)
            except RegexTimeout:
                self._regex_timeout(persona, index, incoming)
                continue
            if hit is None:
                continue
            action = persona.replies[index]
            if action.condition is not None:
                ctx = self._reply_context(persona, incoming, now, chat_key, hit.args)
                ctx["match"] = hit.groups
                if not self._holds(persona, action, ctx):
                    continue
            if action.cooldown is not None and self._resting(persona, action, incoming, now) is not None:
                if not action.cooldown.say:
                    continue  # resting and silent: the next rule may answer
                cooling = True
            chosen, match, args = action, hit.groups, hit.args
            break
        if chosen is None and incoming.fallback and persona.fallback is not None:
            chosen, match = persona.fallback, {}
            if chosen.cooldown is not None and self._resting(persona, chosen, incoming, now) is not None:
                cooling = True
                if not chosen.cooldown.say:
                    chosen = None
        if chosen is None:
            self._log_in(incoming, now, None)
            return []
        if persona.limits is not None and not admitted:
            # Only what would be answered counts: talk among others in a group spends nothing.
            refused = self._admit(persona, incoming, now, t0)
            if refused is not None:
                return refused
        platform = incoming.platform
        if cooling:
            assert chosen.cooldown is not None
            options, dynamic = chosen.cooldown.say, True
        else:
            options, dynamic = chosen.variants(platform), chosen.dynamic
            if chosen.cooldown is not None:
                self._cooldowns.start(persona.id, chosen.name, self._cooldown_key(chosen, incoming), now)
        seed = 0
        if dynamic or len(options) > 1:
            seed = self._seed(persona.id, chosen.name)
        variant = "cooldown_say" if cooling else platform if platform in chosen.platforms else "say"
        pick = self._pick(persona, chosen, chat_key, options, seed, variant)
        if dynamic:
            ctx = ctx or self._reply_context(persona, incoming, now, chat_key, args)
            ctx["match"] = match
            ctx["message"]["args"] = args
            self._bind_phrase(persona, ctx, seed, chat_key, _no_repeat(persona, chosen))
            try:
                if not cooling:  # a resting rule only says its cooldown_say: no set, no emit
                    self._assign(persona, chosen, ctx, chat_key)
                say = options[pick].render(ctx, self.platforms.get(platform, "plain")) if options else ""
            except TemplateRenderError as exc:
                self._log_in(incoming, now, None)
                self._problem(persona, chosen, str(exc), incoming=incoming)
                return []
        else:
            say = options[pick].render({}) if options else ""
        out: list[Outgoing] = []
        # A resting rule says only its cooldown_say: the picture it rests from is not sent again.
        media = () if cooling else chosen.media_for(platform)
        if say or media:
            out.append(
                Outgoing(
                    persona.id,
                    platform,
                    incoming.chat.id,
                    say,
                    incoming.message_id,
                    chosen.where,
                    seed,
                    None,
                    f"reply:{platform}:{incoming.chat.id}:{incoming.message_id or seed}",
                    now,
                    media=media,
                )
            )
            store = self.store
            if store is not None and (self.log_from is None or now >= self.log_from):
                user = incoming.user
                store.log_exchange(
                    persona.id,
                    platform,
                    incoming.chat.id,
                    user.id,
                    user.name,
                    text,
                    "ok",
                    now.timestamp(),
                    self.run,
                    (
                        say,
                        chosen.where,
                        seed if len(options) > 1 or chosen.dynamic else None,
                        round((time.perf_counter() - t0) * 1000, 3),
                    ),
                )
        else:
            self._log_in(incoming, now, None)
        if chosen.emit and not cooling:
            assert ctx is not None
            out.extend(await self._emit(persona, chosen, ctx, 0, f"reply:{seed}", None))
        return out

    def explain(self, incoming: Incoming) -> list[Verdict]:
        """Why each reply rule of the persona would answer ``incoming`` now or not, in file order.

        Nothing changes: no state is set, nothing is logged. ``personae test`` shows
        these when the expected rule did not answer.
        """
        incoming = incoming.cleaned()
        persona = self.personas[incoming.persona]
        router = persona.router
        command = parse_command(incoming.text, router.prefixes)
        candidates = set(router.candidates(incoming.text, command))
        chat_key = f"{incoming.platform}:{incoming.chat.id}"
        now = self.clock.now()
        budget = Budget.start()
        verdicts: list[Verdict] = []
        answered = False
        limited = self._limited_now(persona, incoming, now)
        for index, action in enumerate(persona.replies):
            hit = None
            if index in candidates:
                with contextlib.suppress(RegexTimeout):
                    hit = router.hit(index, incoming.text, command, budget)
            if hit is None:
                verdicts.append(Verdict(action.name, action.where, "no trigger match"))
                continue
            if action.condition is not None:
                ctx = self._reply_context(persona, incoming, now, chat_key, hit.args)
                ctx["match"] = hit.groups
                try:
                    holds = bool(action.condition(**ctx))
                except Exception as exc:  # author code: a failing condition counts as false
                    verdicts.append(Verdict(action.name, action.where, f"condition failed: {exc}"))
                    continue
                if not holds:
                    verdicts.append(Verdict(action.name, action.where, "condition false"))
                    continue
            outcome = "answers"
            resting = self._resting_text(persona, action, incoming, now)
            if resting is not None:
                assert action.cooldown is not None
                if not action.cooldown.say:
                    verdicts.append(Verdict(action.name, action.where, resting))
                    continue
                outcome = f"answers with its cooldown_say ({resting})"
            if limited is not None and not answered:
                outcome = limited.outcome
            verdicts.append(Verdict(action.name, action.where, "shadowed" if answered else outcome))
            answered = True
        fallback = persona.fallback
        if not answered and fallback is not None and incoming.fallback:
            resting = self._resting_text(persona, fallback, incoming, now)
            if resting is not None:
                verdicts.append(Verdict(fallback.name, fallback.where, resting))
            answered = resting is None or bool(fallback.cooldown and fallback.cooldown.say)
        if limited is not None and answered:
            verdicts.insert(0, limited)
        return verdicts

    # -- cooldowns, limits, variety

    def _save_memory(self, persona: str, scope: str, key: str, data: Mapping[str, Any]) -> None:
        if self.store is not None and self.persist_state:
            self.store.save_state(persona, scope, key, data)

    def _cooldown_key(self, action: Action, incoming: Incoming | None) -> str:
        assert action.cooldown is not None
        if incoming is None:
            return cooldowns.GLOBAL
        chat = f"{incoming.platform}:{incoming.chat.id}"
        return cooldown_key(action.cooldown.per, chat, _user_key(incoming))

    def _resting(self, persona: Persona, action: Action, incoming: Incoming | None, now: datetime) -> timedelta | None:
        """How long ``action`` still rests, or ``None``."""
        cooldown = action.cooldown
        if cooldown is None:
            return None
        key = self._cooldown_key(action, incoming)
        return self._cooldowns.remaining(persona.id, action.name, key, now, cooldown.duration)

    def _resting_text(self, persona: Persona, action: Action, incoming: Incoming, now: datetime) -> str | None:
        left = self._resting(persona, action, incoming, now)
        if left is None or action.cooldown is None:
            return None
        per = {"chat": "in this chat", "user": "for this user"}.get(action.cooldown.per, "for everyone")
        total = describe_remaining(action.cooldown.duration)
        return f"cooling down: {describe_remaining(left)} left of its {total} cooldown {per}"

    def _limited_now(self, persona: Persona, incoming: Incoming, now: datetime) -> Verdict | None:
        limit = persona.limits
        if limit is None or not self._limiter.peek(persona.id, _user_key(incoming), now, limit):
            return None
        per = describe_remaining(limit.per)
        outcome = f"rate limited: this user already sent {limit.messages} message(s) in the last {per}"
        return Verdict(limit.notice.name, limit.notice.where, outcome)

    def _admit(self, persona: Persona, incoming: Incoming, now: datetime, t0: float) -> list[Outgoing] | None:
        """``None`` for a message within the user's limit; past it the notice the first time, then nothing."""
        limit = persona.limits
        assert limit is not None
        admission = self._limiter.admit(persona.id, _user_key(incoming), now, limit)
        if admission is Admission.ADMIT:
            return None
        chat_key = f"{incoming.platform}:{incoming.chat.id}"
        notice = limit.notice
        if admission is Admission.SILENT or not notice.say:
            self._log_in(incoming, now, RATE_LIMITED)
            return []
        seed = self._seed(persona.id, notice.name) if notice.dynamic or len(notice.say) > 1 else 0
        pick = self._pick(persona, notice, chat_key, notice.say, seed, "say")
        ctx: dict[str, Any] = {}
        if notice.dynamic:
            ctx = self._reply_context(persona, incoming, now, chat_key, "")
            self._bind_phrase(persona, ctx, seed, chat_key, _no_repeat(persona, notice))
        try:
            say = notice.say[pick].render(ctx, self.platforms.get(incoming.platform, "plain"))
        except TemplateRenderError as exc:
            self._log_in(incoming, now, RATE_LIMITED)
            self._problem(persona, notice, str(exc), incoming=incoming)
            return []
        if not say:
            self._log_in(incoming, now, RATE_LIMITED)
            return []
        store = self.store
        user = incoming.user
        if store is not None and (self.log_from is None or now >= self.log_from):
            latency = round((time.perf_counter() - t0) * 1000, 3)
            reply = (say, notice.where, seed if notice.dynamic or len(notice.say) > 1 else None, latency)
            store.log_exchange(
                persona.id,
                incoming.platform,
                incoming.chat.id,
                user.id,
                user.name,
                incoming.text,
                RATE_LIMITED,
                now.timestamp(),
                self.run,
                reply,
            )
        key = f"reply:{incoming.platform}:{incoming.chat.id}:{incoming.message_id or seed}"
        return [
            Outgoing(
                persona.id,
                incoming.platform,
                incoming.chat.id,
                say,
                incoming.message_id,
                notice.where,
                seed,
                None,
                key,
                now,
            )
        ]

    def _pick(
        self, persona: Persona, action: Action, chat: str, options: Sequence[Text], seed: int, variant: str
    ) -> int:
        """Which of ``options`` to say: the seed's pick, avoiding the latest ones when ``no_repeat`` asks."""
        if len(options) <= 1:
            return 0
        n = _no_repeat(persona, action)
        if n <= 0:
            return seed % len(options)
        return self._variety.pick(persona.id, chat, f"{action.name}:{variant}", len(options), seed, n)

    def _reply_context(
        self, persona: Persona, incoming: Incoming, now: datetime, chat_key: str, args: str
    ) -> dict[str, Any]:
        chat = incoming.chat
        user = incoming.user
        return {
            "state": self.state(persona.id),
            "persona": _persona_view(persona),
            "now": now,
            "chat": {
                "id": chat.id,
                "type": chat.type,
                "title": chat.title,
                "state": self.chat_state(persona.id, chat_key),
            },
            "user": {"id": user.id, "name": user.name, "username": user.username},
            "message": {"text": incoming.text, "args": args},
            "match": {},
            "days_since": functools.partial(_days_since_now, now),
        }

    # -- events

    async def dispatch(self, event: Event) -> list[Outgoing]:
        """React to ``event`` with every persona of its :meth:`audience` that handles it."""
        if event.depth > self.max_depth:
            chain = event.key or event.name
            raise EngineError(f"emit chain deeper than {self.max_depth} at '{event.name}' ({chain}): is there a loop?")
        store = self.store
        if store is not None and (self.log_from is None or event.at >= self.log_from):
            # The data goes into the row as an object: the store encodes the whole
            # batch once, and SQLite stores this field as its JSON text.
            store.log_reaction(
                "event",
                event.persona,
                None,
                dict(event.data),
                None,
                None,
                event.source,
                event.name,
                self.run,
                event.at.timestamp(),
                self._log_key("event", event.key),
            )
        out: list[Outgoing] = []
        for persona in self.audience(event):
            action = persona.events.get(event.name)
            if action is None:
                continue
            if action.delay and self.scheduler is not None:
                self._later(event.at + action.delay, persona, action, event)
                continue
            out.extend(await self.react(persona, action, event))
        return out

    async def react(self, persona: Persona, action: Action, event: Event) -> list[Outgoing]:
        """Run one event reaction (or schedule entry) of ``persona`` now."""
        ctx = self._event_context(persona, event)
        if action.condition is not None and not self._holds(
            persona, action, ctx, key=self._log_key("error", f"{event.key}|{persona.id}")
        ):
            return []
        if action.cooldown is not None:
            # An event has no chat or user: its cooldown is global.
            if self._resting(persona, action, None, event.at) is not None:
                return []
            self._cooldowns.start(persona.id, action.name, cooldowns.GLOBAL, event.at)
        # The run id is not part of the pick: the same timeline and seed pick the same, run after run.
        basis = _without_run(event.key, self.run) or self._tick(persona.id + action.name)
        seed = _crc(f"{self.seed}:{persona.id}:{action.name}:{basis}")
        self._bind_phrase(persona, ctx, seed, "", _no_repeat(persona, action))
        out: list[Outgoing] = []
        picks: dict[str, int] = {}  # one pick per say list, whichever platforms share it
        try:
            self._assign(persona, action, ctx, None)
            for platform in self.speaks_on(persona.id):
                options = action.variants(platform)
                variant = platform if platform in action.platforms else "say"
                if variant not in picks:
                    picks[variant] = self._pick(persona, action, "", options, seed, variant)
                dialect = self.platforms.get(platform, "plain")
                say = options[picks[variant]].render(ctx, dialect) if options else ""
                media = action.media_for(platform)
                if not say and not media:
                    continue
                out.append(
                    Outgoing(
                        persona.id,
                        platform,
                        None,
                        say,
                        None,
                        action.where,
                        seed,
                        event.name,
                        key=f"{event.key or event.name}|{persona.id}|{platform}",
                        at=ctx["now"],
                        media=media,
                    )
                )
        except TemplateRenderError as exc:
            self._problem(persona, action, str(exc), key=self._log_key("error", f"{event.key}|{persona.id}"))
            return out
        store = self.store
        now = ctx["now"]
        if out and store is not None and (self.log_from is None or now >= self.log_from):
            at, rule, name = now.timestamp(), action.where, event.name
            for o in out:
                key = self._log_key("out", event.key and o.key)
                store.log_reaction("out", persona.id, o.platform, o.text, rule, seed, "ok", name, self.run, at, key)
        if action.emit:
            out.extend(await self._emit(persona, action, ctx, event.depth, event.key or event.name, event.cast))
        return out

    def _event_context(self, persona: Persona, event: Event) -> dict[str, Any]:
        # A reaction happens at its event's time, not whenever the clock is read: at
        # --speed 2,200,000 one millisecond of lateness is 37 mission minutes, which
        # made printed times and "days since" differ from run to run.
        now = event.at
        ctx: dict[str, Any] = {
            "state": self.state(persona.id),
            "persona": _persona_view(persona),
            "now": now,
            # The event's own data wins over the built-in keys (a data key may be called "name").
            "event": {"name": event.name, "at": event.at, **event.data},
            "days_since": lambda start: days_since(start, now),
        }
        return ctx

    def _later(self, when: datetime, persona: Persona, action: Action, event: Event) -> None:
        assert self.scheduler is not None

        async def fire() -> None:
            out = await self.react(persona, action, replace(event, at=when))
            if out and self.sink is not None:
                await self.sink(out)

        self.scheduler.call_at(when, fire)

    async def _emit(
        self,
        persona: Persona,
        action: Action,
        ctx: dict[str, Any],
        depth: int,
        parent: str,
        cast: frozenset[str] | None,
    ) -> list[Outgoing]:
        # An emitted event reaches the cast of the event that caused it (or the persona it
        # names): a timeline's chain of reactions stays inside that timeline's cast.
        out: list[Outgoing] = []
        now = ctx["now"]
        for spec in action.emit:
            try:
                data = {k: v.render(ctx) if isinstance(v, Text) else v for k, v in spec.data.items()}
            except TemplateRenderError as exc:
                self._problem(persona, action, str(exc))
                continue
            at = now + spec.delay if spec.delay else now
            key = f"{parent}>{spec.event}"
            ev = Event(spec.event, at, data, f"emit:{persona.id}", spec.persona, depth + 1, key, cast)
            if spec.delay and self.scheduler is not None:
                self._later_event(ev)
                continue
            try:
                out.extend(await self.dispatch(ev))
            except EngineError as exc:
                self._problem(persona, action, str(exc))
        return out

    def _later_event(self, ev: Event) -> None:
        assert self.scheduler is not None

        async def fire() -> None:
            out = await self.dispatch(ev)
            if out and self.sink is not None:
                await self.sink(out)

        self.scheduler.call_at(ev.at, fire)

    # -- helpers

    def _holds(self, persona: Persona, action: Action, ctx: Mapping[str, Any], *, key: str | None = None) -> bool:
        assert action.condition is not None
        try:
            return bool(action.condition(**ctx))
        except Exception as exc:  # a condition is author code: report, treat as false
            self._problem(persona, action, f"condition failed: {type(exc).__name__}: {exc}", key=key)
            return False

    def _assign(self, persona: Persona, action: Action, ctx: Mapping[str, Any], chat_key: str | None) -> None:
        if not action.assign:
            return
        changes: dict[str, dict[str, Any]] = {}
        for a in action.assign:
            target = self.state(persona.id) if a.scope == "persona" else self.chat_state(persona.id, chat_key or "")
            initial = (persona.state if a.scope == "persona" else persona.chat_state).get(a.key)
            value = a.value.render(ctx) if isinstance(a.value, Text) else a.value
            if isinstance(value, str) and initial is not None and not isinstance(initial, str):
                try:
                    value = _COERCE[type(initial)](value)
                except (KeyError, ValueError) as exc:
                    raise TemplateRenderError(f"set {a.key}: '{value}' is not a {type(initial).__name__}") from exc
            changes.setdefault(a.scope, {})[a.key] = value
        # Apply after all values are computed, so `set` templates all see the old state.
        for scope, values in changes.items():
            target = self.state(persona.id) if scope == "persona" else self.chat_state(persona.id, chat_key or "")
            target.update(values)
            if self.store is not None and self.persist_state:
                self.store.save_state(persona.id, scope, (chat_key or "") if scope == "chat" else "", target)

    def _bind_phrase(self, persona: Persona, ctx: dict[str, Any], seed: int, chat: str = "", n: int = 0) -> None:
        """Give ``ctx`` its ``phrase(bank)``: a seeded pick, avoiding the bank's latest ``n`` in ``chat``."""
        calls = [0]

        def phrase(bank: str) -> str:
            options = persona.phrases.get(bank)
            if not options:
                raise TemplateRenderError(f"unknown phrase bank '{bank}'")
            calls[0] += 1
            if calls[0] > 50:
                raise TemplateRenderError("phrase() called too often (a phrase that calls itself?)")
            pick = _crc(f"{seed}:{bank}:{calls[0]}") % len(options)
            if n > 0 and len(options) > 1:
                pick = self._variety.pick(persona.id, chat, f"phrase:{bank}", len(options), pick, n)
            return options[pick].render(ctx)

        ctx["phrase"] = phrase

    def _seed(self, persona: str, rule: str) -> int:
        return _crc(f"{self.seed}:{persona}:{rule}:{self._tick(persona + rule)}")

    def _tick(self, key: str) -> int:
        n = self._counters.get(key, 0)
        self._counters[key] = n + 1
        return n

    def _log_in(self, incoming: Incoming, now: datetime, status: str | None) -> None:
        store = self.store
        if store is None or (self.log_from is not None and now < self.log_from):
            return
        user = incoming.user
        store.log_exchange(
            incoming.persona,
            incoming.platform,
            incoming.chat.id,
            user.id,
            user.name,
            incoming.text,
            status or "ok",
            now.timestamp(),
            self.run,
        )

    def _log(self, direction: str, at: datetime, **fields: Any) -> None:
        if self.store is None or (self.log_from is not None and at < self.log_from):
            return
        self.store.log(LogRow(direction, run=self.run, mission_time=at, **fields))

    def _log_key(self, kind: str, key: str) -> str | None:
        """The log key of a row about event ``key``, if a resumed run may log it again (else ``None``).

        Only what a run re-executes on ``--resume`` (its timeline, cron and their emits,
        whose keys start with the run id), and what every worker on a shared database fires
        alike (:attr:`shared_keys`), is keyed: an event from a chat has no stable identity.
        """
        if not key or not ((self.run and key.startswith(f"{self.run}|")) or key.startswith(self.shared_keys)):
            return None
        return f"{kind}|{key}"

    def _regex_timeout(self, persona: Persona, index: int, incoming: Incoming) -> None:
        # Once per rule: a flood of hostile messages must not flood the log as well.
        if (persona.id, index) in self._timed_out:
            return
        self._timed_out.add((persona.id, index))
        limit = round(MESSAGE_BUDGET * 1000)
        message = f"regex ran out of the {limit} ms a message may take; treated as no match (reported once per rule)"
        self._problem(persona, persona.replies[index], message, incoming=incoming)

    def _problem(
        self,
        persona: Persona,
        action: Action,
        message: str,
        *,
        incoming: Incoming | None = None,
        key: str | None = None,
    ) -> None:
        problem = Problem(persona.id, action.where, message)
        self.problems.append(problem)
        collecting = _COLLECTING.get()
        if collecting is not None:
            collecting.append(problem)
        del self.problems[:-100]
        self._log(
            "out",
            self.clock.now(),
            persona=persona.id,
            platform=incoming.platform if incoming else None,
            chat=incoming.chat.id if incoming else None,
            rule=action.where,
            status=f"error: {message}",
            key=key,
        )


#: The log status of a message past the user's limit (its notice, if any, is the reply).
RATE_LIMITED = "ignored: rate limited"


def _user_key(incoming: Incoming) -> str:
    return f"{incoming.platform}:{incoming.user.id}"


def _no_repeat(persona: Persona, action: Action) -> int:
    return action.no_repeat if action.no_repeat is not None else persona.no_repeat


def _persona_view(p: Persona) -> dict[str, str]:
    return {"id": p.id, "name": p.name, "description": p.description, "locale": p.locale}


def _days_since_now(now: datetime, start: str) -> int:
    return days_since(start, now)


def _without_run(key: str, run: str | None) -> str:
    """``key`` without its leading run id (``run|…``): what names the event within any run."""
    if run and key.startswith(f"{run}|"):
        return key[len(run) + 1 :]
    return key


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def _known(data: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in declared}
