"""Mission timelines: dated events from YAML, CSV or iCalendar files.

A timeline is validated like a persona file: every problem is reported at
``file:line:col``. Times must be timezone-aware and in order; several events
may share an instant, and then play in file order.

A timeline names its *cast*, the personas its events reach: the ``cast:`` list
(``# cast: a, b`` in a CSV file, ``X-PERSONAE-CAST:a,b`` in an iCalendar file)
plus every persona an event names with ``persona:``. The cast comes from the
file alone, so adding a persona to a folder never changes what a timeline plays.
A timeline without ``cast:`` must name the persona of every event.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from ..engine.messages import Event
from ..language.errors import Diagnostic, PersonaeError
from ..language.schema import EVENT, IDENT, EventName, Ident, _Strict
from ..language.source import Source, decode_text, parse_yaml, read_text


class TimelineEntry(_Strict):
    """One dated event of a timeline file."""

    at: AwareDatetime
    event: EventName
    data: dict[str, Any] = Field(default_factory=dict)
    persona: Ident | None = Field(
        default=None,
        description="only this persona reacts (it joins the timeline's cast); "
        "the CSV column after `event`, X-PERSONAE-PERSONA in iCalendar",
    )
    basis: Literal["SC", "ERT", "UTC"] | None = Field(
        default=None, description="time basis: spacecraft or Earth receive"
    )
    source: str | None = None
    confidence: Literal["high", "medium", "low"] | None = None


class TimelineFile(_Strict):
    """A timeline file (YAML)."""

    timeline: Annotated[str, StringConstraints(pattern=IDENT)]
    title: str = ""
    cast: list[Ident] | None = Field(
        default=None,
        min_length=1,
        description="the personas this timeline's events (and the emits they cause) reach; "
        "`# cast: a, b` in CSV, X-PERSONAE-CAST:a,b in iCalendar. Without it, every event must name its persona",
    )
    events: list[TimelineEntry] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """A timeline event with where it was written."""

    at: datetime
    name: str
    data: Mapping[str, Any]
    persona: str | None
    line: int
    index: int
    #: The timeline's cast (see :attr:`Timeline.members`): who this event, and what it emits, reaches.
    cast: frozenset[str] | None = None

    def to_event(self, timeline: str, run: str = "") -> Event:
        """The engine :class:`~personae.engine.messages.Event` for this entry (its key names the run)."""
        key = f"{run}|{timeline}#{self.index}:{self.name}"
        return Event(self.name, self.at, dict(self.data), f"timeline:{timeline}", self.persona, 0, key, self.cast)


@dataclass(frozen=True)
class Timeline:
    """An ordered, validated timeline."""

    id: str
    title: str
    file: str
    events: tuple[TimelineEvent, ...] = field(default_factory=tuple)
    #: The ``cast:`` list as written (``None``: the file has none), and where each entry is (line, column).
    cast: tuple[str, ...] | None = None
    cast_at: tuple[tuple[int, int], ...] = ()

    @property
    def members(self) -> frozenset[str] | None:
        """The personas this timeline reaches: its ``cast:`` and every persona an event names.

        ``None`` when the file has no ``cast:`` and some event names no persona: such a
        timeline cannot say who plays it (``personae replay`` and ``run`` refuse it).
        """
        if self.cast is None and any(e.persona is None for e in self.events):
            return None
        return frozenset(self.cast or ()) | {e.persona for e in self.events if e.persona is not None}

    @property
    def start(self) -> datetime:
        """Time of the first event."""
        return self.events[0].at

    @property
    def end(self) -> datetime:
        """Time of the last event."""
        return self.events[-1].at

    def window(self, start: datetime | None, end: datetime | None) -> tuple[TimelineEvent, ...]:
        """Events with ``start <= at <= end``."""
        return tuple(e for e in self.events if (start is None or e.at >= start) and (end is None or e.at <= end))


def _timeline(
    tid: str, title: str, file: str, events: list[TimelineEvent], cast: list[str] | None, cast_at: list[tuple[int, int]]
) -> Timeline:
    """A :class:`Timeline` whose events carry its cast (a timeline event's emits reach that cast)."""
    t = Timeline(tid, title, file, tuple(events), None if cast is None else tuple(cast), tuple(cast_at))
    members = t.members
    return dataclasses.replace(t, events=tuple(dataclasses.replace(e, cast=members) for e in events))


def is_timeline(data: Any) -> bool:
    """Whether parsed YAML data looks like a timeline rather than a persona."""
    return isinstance(data, dict) and "timeline" in data and "persona" not in data


def load_timeline(path: str | Path, *, display: str | None = None) -> Timeline:
    """Load a timeline from ``.yaml``/``.yml``, ``.csv`` or ``.ics``."""
    p = Path(path)
    name = display or str(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return _from_csv(read_text(p, display=name), name, p.stem)
    if suffix in (".ics", ".ical"):
        raw = p.read_bytes() if p.exists() else b""
        return _from_ics(raw, name, p.stem)
    return timeline_from_source(parse_yaml(read_text(p, display=name), name))


def timeline_from_source(source: Source) -> Timeline:
    """Validate a parsed YAML timeline."""
    from ..language.loader import validate  # the shared pydantic → diagnostic mapping

    data = source.data
    if isinstance(data, dict) and "persona" in data and "timeline" not in data:
        # Not a dozen "unknown key" lines about a file that was never meant to be one.
        at = source.where(("persona",), key=True)
        message = "this is a persona file, not a timeline (a timeline has 'timeline:' and 'events:' keys)"
        raise PersonaeError([Diagnostic(source.file, at.line, at.column, "", message)])
    spec = validate(source, TimelineFile)
    assert isinstance(spec, TimelineFile)
    events = []
    for i, e in enumerate(spec.events):
        events.append(
            TimelineEvent(e.at.astimezone(UTC), e.event, e.data, e.persona, source.where(("events", i)).line, i)
        )
    _check_order(events, lambda i: source.diagnostic(("events", i, "at"), ""))
    cast_at = [(w.line, w.column) for w in (source.where(("cast", i)) for i in range(len(spec.cast or ())))]
    return _timeline(spec.timeline, spec.title, source.file, events, spec.cast, cast_at)


def _check_order(events: list[TimelineEvent], where: Any) -> None:
    diags: list[Diagnostic] = []
    for prev, cur in itertools.pairwise(events):
        # Equal times are fine: events at one instant play in file order.
        if cur.at < prev.at:
            d = where(cur.index)
            diags.append(
                _with(
                    d,
                    f"events are not in time order: {cur.at.isoformat()} is before the previous {prev.at.isoformat()}",
                )
            )
    if diags:
        raise PersonaeError(diags)


def _with(d: Diagnostic, message: str) -> Diagnostic:
    return Diagnostic(d.file, d.line, d.column, d.path, message, d.severity)


def bare_date(text: str) -> date | None:
    """The day ``text`` names when it is an ISO 8601 date alone, in any of its spellings
    (``2014-11-15``, ``20141115``, ``2014-W46-6``); ``None`` for a time or anything else."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


def parse_time(text: str, *, default_tz: Any = None) -> datetime:
    """Parse an ISO 8601 time; a date alone means midnight UTC. Naive times are an error."""
    text = text.strip()
    if (d := bare_date(text)) is not None:
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        if default_tz is None:
            raise ValueError(f"'{text}' has no timezone (add Z for UTC, e.g. {text}Z)")
        value = value.replace(tzinfo=default_tz)
    return value.astimezone(UTC)


def _from_csv(text: str, name: str, stem: str) -> Timeline:
    diags: list[Diagnostic] = []
    events: list[TimelineEvent] = []
    cast: list[str] | None = None
    cast_line, cast_at = 0, list[tuple[int, int]]()
    rows = list(csv.reader(io.StringIO(text)))
    for lineno, row in enumerate(rows, start=1):
        if row and (directive := _CAST_COMMENT.match(",".join(row))):
            if cast is not None:
                first = f"the first is line {cast_line}"
                diags.append(Diagnostic(name, lineno, 1, "cast", f"a second '# cast:' line ({first})"))
                continue
            cast, bad = _cast_list(directive.group(1))
            cast_line, cast_at = lineno, [(lineno, 1)] * len(cast)
            diags.extend(Diagnostic(name, lineno, 1, "cast", f"'{b}' is not a valid persona id") for b in bad)
            continue
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if not events and not diags and row[0].strip().lower() == "at":
            continue  # the header row (it may follow comments, such as the cast line)
        col = 1
        if len(row) < 2:
            diags.append(
                Diagnostic(name, lineno, 1, "", "expected at least 2 columns: at,event[,persona][,key=value…]")
            )
            continue
        try:
            at = parse_time(row[0])
        except ValueError as exc:
            diags.append(
                Diagnostic(
                    name, lineno, col, "at", str(exc).replace("Invalid isoformat string", "not an ISO 8601 time")
                )
            )
            continue
        col += len(row[0]) + 1
        event = row[1].strip()
        if not re.match(EVENT, event):
            diags.append(Diagnostic(name, lineno, col, "event", f"'{event}' is not a valid event name"))
            continue
        col += len(row[1]) + 1
        has_persona = len(row) > 2 and "=" not in row[2]
        persona = row[2].strip() or None if has_persona else None
        rest = row[3:] if has_persona else row[2:]
        if persona is not None and not re.match(IDENT, persona):
            diags.append(Diagnostic(name, lineno, col, "persona", f"'{persona}' is not a valid persona id"))
            continue
        if has_persona:
            col += len(row[2]) + 1
        data: dict[str, Any] = {}
        for cell in rest:
            if not cell.strip():
                col += len(cell) + 1
                continue
            if "=" not in cell:
                diags.append(Diagnostic(name, lineno, col, "data", f"expected key=value, found '{cell}'"))
                break
            k, v = cell.split("=", 1)
            data[k.strip()] = _scalar(v.strip())
            col += len(cell) + 1
        else:
            events.append(TimelineEvent(at, event, data, persona, lineno, len(events)))
    if not events and not diags:
        diags.append(Diagnostic(name, 1, 1, "", "timeline has no events"))
    if diags:
        raise PersonaeError(diags)
    by_index = {e.index: e for e in events}
    _check_order(events, lambda i: Diagnostic(name, by_index[i].line, 1, "at", ""))
    return _timeline(_slug(stem), stem, name, events, cast, cast_at)


#: ``# cast: philae, rosetta`` in a CSV timeline (a comment line, so other tools skip it).
_CAST_COMMENT = re.compile(r"^\s*#\s*cast\s*:(.*)$", re.IGNORECASE)


def _cast_list(text: str) -> tuple[list[str], list[str]]:
    """Persona ids of a comma-separated cast, and the entries that are not valid ids."""
    ids = [c.strip() for c in text.split(",") if c.strip()]
    return [c for c in ids if re.match(IDENT, c)], [c for c in ids if not re.match(IDENT, c)]


def _scalar(v: str) -> Any:
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    if re.fullmatch(r"-?\d+\.\d*", v):
        return float(v)
    if v in ("true", "false"):
        return v == "true"
    return v


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_-") or "timeline"
    return s if s[0].isalpha() else "t_" + s


def _from_ics(raw: bytes, name: str, stem: str) -> Timeline:
    from icalendar import Calendar

    text = decode_text(raw, name) if raw else ""
    if not text.strip():
        raise PersonaeError([Diagnostic(name, 1, 1, "", "file is empty")])
    try:
        cal = Calendar.from_ical(text)
    except ValueError as exc:
        raise PersonaeError([Diagnostic(name, 1, 1, "", f"invalid iCalendar file: {exc}")]) from None
    lines = text.splitlines()
    begins = [i + 1 for i, line in enumerate(lines) if line.strip().upper() == "BEGIN:VEVENT"]
    found = []
    diags: list[Diagnostic] = []
    for n, comp in enumerate(cal.walk("VEVENT")):
        line = begins[n] if n < len(begins) else 1
        start = comp.get("DTSTART")
        if start is None:
            diags.append(Diagnostic(name, line, 1, f"VEVENT[{n}]", "VEVENT has no DTSTART"))
            continue
        at = start.dt
        if not isinstance(at, datetime):
            at = datetime(at.year, at.month, at.day, tzinfo=UTC)
        if at.tzinfo is None:
            diags.append(
                Diagnostic(name, line, 1, f"VEVENT[{n}].DTSTART", "time has no timezone (use a UTC time ending in Z)")
            )
            continue
        summary = str(comp.get("SUMMARY", "")).strip()
        event = str(
            comp.get("X-PERSONAE-EVENT", "") or (comp.get("CATEGORIES", "") and _cat(comp)) or _event_slug(summary)
        )
        data: dict[str, Any] = {"summary": summary} if summary else {}
        for key in ("DESCRIPTION", "LOCATION", "URL"):
            if comp.get(key):
                data[key.lower()] = str(comp.get(key))
        if comp.get("X-PERSONAE-DATA"):
            try:
                data.update(json.loads(str(comp.get("X-PERSONAE-DATA"))))
            except ValueError:
                diags.append(Diagnostic(name, line, 1, f"VEVENT[{n}].X-PERSONAE-DATA", "not valid JSON"))
        persona = str(comp.get("X-PERSONAE-PERSONA", "")).strip() or None
        if persona is not None and not re.match(IDENT, persona):
            diags.append(
                Diagnostic(name, line, 1, f"VEVENT[{n}].X-PERSONAE-PERSONA", f"'{persona}' is not a valid persona id")
            )
            continue
        found.append((at.astimezone(UTC), event, data, persona, line))
    if diags:
        raise PersonaeError(diags)
    if not found:
        raise PersonaeError([Diagnostic(name, 1, 1, "", "calendar has no VEVENT: a timeline needs at least one event")])
    # A calendar need not list its events in time order; the sort is stable, so events
    # at one instant keep their file order.
    found.sort(key=lambda f: f[0])
    events = [TimelineEvent(at, ev, d, p, ln, i) for i, (at, ev, d, p, ln) in enumerate(found)]
    cast: list[str] | None = None
    cast_at: list[tuple[int, int]] = []
    if cal.get("X-PERSONAE-CAST") is not None:
        line = next((i + 1 for i, t in enumerate(lines) if t.upper().startswith("X-PERSONAE-CAST")), 1)
        cast, bad = _cast_list(str(cal.get("X-PERSONAE-CAST")))
        cast_at = [(line, 1)] * len(cast)
        if bad:
            raise PersonaeError(
                [Diagnostic(name, line, 1, "X-PERSONAE-CAST", f"'{b}' is not a valid persona id") for b in bad]
            )
    title = str(cal.get("X-WR-CALNAME", stem))
    return _timeline(_slug(title), title, name, events, cast, cast_at)


def _cat(comp: Any) -> str:
    cats = comp.get("CATEGORIES")
    items = cats.cats if hasattr(cats, "cats") else [cats]
    return _event_slug(str(items[0])) if items else ""


def _event_slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()
    return s if s and s[0].isalpha() else f"event_{s}" if s else "event"
