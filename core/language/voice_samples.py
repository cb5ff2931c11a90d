"""Sample data for the voice lint: what a persona's templates would see when they post.

Event reactions see the ``data`` of the timeline events that reach the persona
(its cast's timelines, or the events that name it), and the data of the
``emit``\\ s those reactions make, rendered as the engine renders them. Replies
see a sample user and chat, a message their trigger matches (for a regex, a
text built from the pattern, so ``match`` holds its named groups), and the
declared ``state`` and ``chat_state`` defaults. ``phrase()`` gives the longest
rendering of its bank, so lengths are judged at their worst.
"""

from __future__ import annotations

import json
import re

# The parser is private (3.11+) but it is the exact reader of Python's syntax (as in engine/regex_syntax.py).
import re._constants as _c  # type: ignore[import-not-found]
import re._parser as _p  # type: ignore[import-not-found]
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..engine.persona import Action, Persona
from ..engine.safe_regex import compile_regex
from ..timing.timeline import Timeline
from .schema import Reply
from .templates import TemplateRenderError, Text, days_since

#: When no timeline says what time it is: a fixed instant, so lint says the same every day.
DEFAULT_NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
#: Samples kept per event and persona, and regex samples per rule: enough variety, bounded work.
MAX_SAMPLES = 24
MAX_REGEX_SAMPLES = 12
#: The longest message built from a regex (``(x{60}){60}`` nested would otherwise grow without bound).
MAX_SAMPLE_TEXT = 1000
#: Rounds of following emits (an emit of an emit ...); loops end here.
EMIT_ROUNDS = 8
#: What the engine allows ``phrase()`` per render (a phrase that calls itself).
MAX_PHRASE_CALLS = 50

SAMPLE_USER = {"id": "1001", "name": "Ada", "username": "ada_l"}
SAMPLE_CHAT = {"id": "1001", "type": "private", "title": None}


@dataclass(frozen=True, slots=True)
class Sample:
    """One set of template variables, and where its data came from (said in messages)."""

    context: Mapping[str, Any]
    origin: str
    #: No data was found for it (the event's data is empty): a failure says little about the template.
    stand_in: bool = False


@dataclass(frozen=True, slots=True)
class EventData:
    """The data of one event that reaches a persona, and where it was written."""

    data: Mapping[str, Any]
    at: datetime
    origin: str
    cast: frozenset[str] | None = None


@dataclass
class EventSamples:
    """The event data each persona's reactions get: ``(persona id, event name) -> data``."""

    by_event: dict[tuple[str, str], list[EventData]] = field(default_factory=dict)

    def add(self, persona: str, event: str, item: EventData) -> bool:
        """Keep ``item`` unless the same data is known or there are enough; whether it was kept."""
        items = self.by_event.setdefault((persona, event), [])
        if len(items) >= MAX_SAMPLES:
            return False
        key = _fingerprint(item.data)
        if any(_fingerprint(i.data) == key for i in items):
            return False
        items.append(item)
        return True

    def of(self, persona: str, event: str) -> list[EventData]:
        """The data samples of ``event`` for ``persona`` (empty: nothing linted raises it with data)."""
        return self.by_event.get((persona, event), [])

    def now(self, persona: str) -> datetime:
        """A sample time for ``persona``'s replies: its latest event, else :data:`DEFAULT_NOW`."""
        times = [i.at for (pid, _), items in self.by_event.items() if pid == persona for i in items]
        return max(times, default=DEFAULT_NOW)


def _fingerprint(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=repr)


def event_samples(personas: Sequence[Persona], timelines: Iterable[Timeline]) -> EventSamples:
    """The data of every timeline event and every ``emit`` each persona reacts to."""
    by_id = {p.id: p for p in personas}
    samples = EventSamples()
    fresh: list[tuple[str, str, EventData]] = []
    for t in timelines:
        members = t.members
        for e in t.events:
            targets = [e.persona] if e.persona else sorted(members or ())
            for pid in targets:
                persona = by_id.get(pid)
                if persona is None or e.name not in persona.events:
                    continue
                item = EventData(dict(e.data), e.at, f"{t.file}:{e.line}", members)
                if samples.add(pid, e.name, item):
                    fresh.append((pid, e.name, item))
    for _ in range(EMIT_ROUNDS):
        if not fresh:
            break
        later: list[tuple[str, str, EventData]] = []
        for pid, name, item in fresh:
            persona = by_id[pid]
            action = persona.events[name]
            context = event_context(persona, name, item.data, item.at)
            for emit in action.emit:
                data = _emit_data(emit.data, context)
                if data is None:
                    continue
                at = item.at + (emit.delay or timedelta())
                origin = f"{item.origin}, emitted at {action.where}"
                for target in _emit_targets(by_id, emit.event, emit.persona, item.cast):
                    child = EventData(data, at, origin, item.cast)
                    if samples.add(target, emit.event, child):
                        later.append((target, emit.event, child))
        fresh = later
    return samples


def _emit_targets(
    by_id: Mapping[str, Persona], event: str, persona: str | None, cast: frozenset[str] | None
) -> list[str]:
    if persona is not None:
        return [persona] if persona in by_id and event in by_id[persona].events else []
    return [pid for pid, p in by_id.items() if event in p.events and (cast is None or pid in cast)]


def _emit_data(data: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Text):
            try:
                out[key] = value.render(context)
            except Exception:
                return None
        else:
            out[key] = value
    return out


def _common(persona: Persona, now: datetime) -> dict[str, Any]:
    return {
        "state": dict(persona.state),
        "persona": {
            "id": persona.id,
            "name": persona.name,
            "description": persona.description,
            "locale": persona.locale,
        },
        "now": now,
        "days_since": lambda start: days_since(start, now),
    }


def event_context(persona: Persona, name: str, data: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """What an event reaction's templates see (as the engine builds it), with ``phrase`` bound."""
    context = _common(persona, at)
    context["event"] = {"name": name, "at": at, **data}
    return bind_phrase(persona, context)


def reply_context(persona: Persona, now: datetime, text: str, args: str, match: Mapping[str, Any]) -> dict[str, Any]:
    """What a reply's templates see, for a sample user writing ``text``."""
    context = _common(persona, now)
    context["chat"] = {**SAMPLE_CHAT, "state": dict(persona.chat_state)}
    context["user"] = dict(SAMPLE_USER)
    context["message"] = {"text": text, "args": args}
    context["match"] = dict(match)
    return bind_phrase(persona, context)


def bind_phrase(persona: Persona, context: dict[str, Any]) -> dict[str, Any]:
    """Give ``context`` a ``phrase()`` that returns the longest rendering of the bank (the worst case)."""
    calls = [0]

    def phrase(bank: str) -> str:
        options = persona.phrases.get(bank)
        if not options:
            raise TemplateRenderError(f"unknown phrase bank '{bank}'")
        calls[0] += 1
        if calls[0] > MAX_PHRASE_CALLS:
            raise TemplateRenderError("phrase() called too often (a phrase that calls itself?)")
        return max((o.render(context) for o in options), key=len)

    context["phrase"] = phrase
    return context


def event_samples_for(persona: Persona, name: str, samples: EventSamples) -> list[Sample]:
    """Contexts for ``persona``'s reaction to event ``name``: one per known data sample, else one without data."""
    found = samples.of(persona.id, name)
    if not found:
        context = event_context(persona, name, {}, samples.now(persona.id))
        return [Sample(context, "no event data", stand_in=True)]
    return [Sample(event_context(persona, name, i.data, i.at), f"the data of {i.origin}") for i in found]


def schedule_samples(persona: Persona, event: str, samples: EventSamples) -> list[Sample]:
    """The context of a schedule entry: its tick carries no data."""
    now = samples.now(persona.id)
    return [Sample(event_context(persona, event, {}, now), "a schedule tick")]


def reply_samples(persona: Persona, rule: Reply | None, samples: EventSamples) -> list[Sample]:
    """Contexts for a reply rule (``None``: the fallback): one per sample message its trigger matches."""
    now = samples.now(persona.id)
    if rule is None:
        return [Sample(reply_context(persona, now, "What is this?", "", {}), "a sample message")]
    w = rule.when
    if w.command:
        command = w.command[0].lstrip("/!")
        text = f"/{command} sample"
        return [Sample(reply_context(persona, now, text, "sample", {}), f"the message '{text}'")]
    if w.regex is None:
        text = (w.keywords or w.exact or ["hello"])[0]
        return [Sample(reply_context(persona, now, text, "", {}), f"the message '{text}'")]
    out = []
    seen: set[str] = set()
    for text, groups in regex_matches(w.regex):
        key = _fingerprint(groups)
        if key in seen:
            continue
        seen.add(key)
        out.append(Sample(reply_context(persona, now, text, "", groups), f"the message '{text}'"))
    return out or [Sample(reply_context(persona, now, "", "", {}), "no sample message (none built matches the regex)")]


# --------------------------------------------------------------------------- texts a regex matches


def regex_matches(pattern: str) -> list[tuple[str, dict[str, str]]]:
    """Texts ``pattern`` matches, built from it (each branch of an alternation once), with their named groups."""
    try:
        tree = _p.parse(pattern)
        texts = _expand(tree)
        rx = compile_regex(pattern)
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return []
    out = []
    for text in texts[:MAX_REGEX_SAMPLES]:
        try:
            groups = rx.search(text)
        except Exception:
            continue
        if groups is not None:
            out.append((text, groups))
    return out


def _expand(items: Any) -> list[str]:
    """Some texts the parsed ``items`` match: the product of each item's choices, bounded."""
    texts = [""]
    for op, av in items:
        choices = _choices(op, av)
        texts = [t + c for t in texts for c in choices if len(t) + len(c) <= MAX_SAMPLE_TEXT][:MAX_REGEX_SAMPLES]
    return texts


_CATEGORY_SAMPLE: dict[Any, str] = {
    _c.CATEGORY_DIGIT: "0",
    _c.CATEGORY_NOT_DIGIT: "a",
    _c.CATEGORY_SPACE: " ",
    _c.CATEGORY_NOT_SPACE: "a",
    _c.CATEGORY_WORD: "a",
    _c.CATEGORY_NOT_WORD: " ",
}


def _choices(op: Any, av: Any) -> list[str]:
    handlers: dict[Any, Callable[[Any], list[str]]] = {
        _c.LITERAL: lambda v: [chr(v)],
        _c.NOT_LITERAL: lambda v: ["x" if v != ord("x") else "y"],
        _c.ANY: lambda _: ["x"],
        _c.IN: _in_choice,
        _c.BRANCH: lambda v: [t for branch in v[1] for t in _expand(branch)],
        _c.SUBPATTERN: lambda v: _expand(v[-1]),
        _c.ATOMIC_GROUP: _expand,
    }
    if op in handlers:
        return handlers[op](av)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, high, sub = av
        # An optional part is written once: the groups inside it are then set.
        n = max(low, 1) if high else 0
        return [t * n for t in _expand(sub) if len(t) * n <= MAX_SAMPLE_TEXT]
    return [""]  # anchors, look-arounds, back-references: nothing to write (the regex is run to check)


def _in_choice(items: Any) -> list[str]:
    if items and items[0][0] == _c.NEGATE:
        return ["x"]
    for op, av in items:
        if op == _c.LITERAL:
            return [chr(av)]
        if op == _c.RANGE:
            return [chr(av[0])]
        if op == _c.CATEGORY and av in _CATEGORY_SAMPLE:
            return [_CATEGORY_SAMPLE[av]]
    return ["x"]


def action_of(persona: Persona, name: str) -> Action | None:
    """The compiled action called ``name`` (``events.x``, ``replies[3]``, ``fallback``, ``schedule[0]``)."""
    for action in (*persona.events.values(), *persona.replies, *([persona.fallback] if persona.fallback else [])):
        if action.name == name:
            return action
    return next((s.action for s in persona.schedule if s.action.name == name), None)
