"""``personae lint``: check persona scripts, timelines and ``bot.toml`` together.

Every problem of every file is reported in one run. Per-file problems are
errors. Cross-file checks are warnings: a timeline event no persona handles, a
persona event nothing raises, a timeline without a cast, a persona outside a
timeline's cast handling the same event as its cast, an exact duplicate
timeline row. An ``emit`` cycle with no condition anywhere on
it is an error (it could only end at the depth bound); a conditional one is a warning.

Last, the voice lint (:mod:`personae.language.voice_lint`) renders every text
with sample data from the linted timelines and checks it against the persona's
``voice:``; a text it cannot render gets a note, which never fails lint.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.persona import Persona
from ..engine.regex_syntax import shape
from ..engine.safe_regex import compile_regex
from ..timing.timeline import Timeline, is_timeline, load_timeline, timeline_from_source
from .errors import Diagnostic, PersonaeError, did_you_mean
from .loader import check_source, persona_files
from .media_lint import media_problems, platforms_from_config
from .source import Source, load_yaml
from .templates import Templates
from .test_schema import is_test_file
from .voice_lint import voice_problems
from .voice_samples import event_samples

TIMELINE_SUFFIXES = (".csv", ".ics", ".ical")
#: A ``bot.toml`` is linted when named (folders are not searched for it: pyproject.toml is TOML too).
CONFIG_SUFFIX = ".toml"


@dataclass
class LintResult:
    """What lint found, and what it loaded."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    personas: dict[str, Persona] = field(default_factory=dict)
    timelines: list[Timeline] = field(default_factory=list)
    files: int = 0

    @property
    def errors(self) -> list[Diagnostic]:
        """Only the errors."""
        return [d for d in self.diagnostics if d.severity == "error"]


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """Files to lint: folders are searched recursively for YAML, CSV and iCalendar files."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for pattern in ("*.yaml", "*.yml", *(f"*{s}" for s in TIMELINE_SUFFIXES)):
                out.extend(p.rglob(pattern))
        else:
            out.extend(persona_files([raw]))
    return sorted(set(out))


def lint(paths: Sequence[str | Path]) -> LintResult:
    """Lint every persona, timeline and ``bot.toml`` file under ``paths``.

    Every problem of every file is reported in one run: a file with schema
    errors still has the parts that validate checked, and those parts take
    part in the checks across files (the emit graph).
    """
    result = LintResult()
    templates = Templates()
    first_file: dict[str, str] = {}
    # Personas with errors still have edges in the emit graph; they are not "loaded".
    checked: list[Persona] = []
    tests: list[Source] = []
    # Each persona's file, and whether it has errors: the voice lint runs once all timelines are read.
    voiced: list[tuple[Source, Persona, bool]] = []
    files = expand(paths)
    speaks = platforms_from_config(p for p in files if p.suffix.lower() == CONFIG_SUFFIX)
    for path in files:
        result.files += 1
        try:
            if path.suffix.lower() in TIMELINE_SUFFIXES:
                result.timelines.append(load_timeline(path))
                continue
            if path.suffix.lower() == CONFIG_SUFFIX:
                result.diagnostics.extend(config_diagnostics(path))
                continue
            source = load_yaml(path)
            if is_timeline(source.data):
                result.timelines.append(timeline_from_source(source))
                continue
            if is_test_file(source.data):
                # Conversation tests (personae test) live next to the personas: checked once all are loaded.
                tests.append(source)
                continue
            persona, diags = check_source(source, templates=templates)
        except PersonaeError as exc:
            result.diagnostics.extend(exc.diagnostics)
            continue
        result.diagnostics.extend(diags)
        # Read from the file, not the compiled persona: a file with errors still gets its regex warnings.
        result.diagnostics.extend(regex_warnings(source))
        if persona is None:
            continue
        checked.append(persona)
        voiced.append((source, persona, any(d.severity == "error" for d in diags)))
        result.diagnostics.extend(media_problems(source, None if speaks is None else speaks.get(persona.id, [])))
        if any(d.severity == "error" for d in diags):
            continue
        if persona.id in result.personas:
            result.diagnostics.append(
                source.diagnostic(
                    ("persona",), f"duplicate persona id '{persona.id}' (also in {first_file[persona.id]})"
                )
            )
            continue
        result.personas[persona.id] = persona
        first_file[persona.id] = persona.file
    result.diagnostics.extend(emit_cycles(checked))
    for t in result.timelines:
        result.diagnostics.extend(duplicate_rows(t))
        result.diagnostics.extend(_warnings(cast_problems(result.personas, t)))
    if result.timelines and checked:
        result.diagnostics.extend(cross_check(checked, result.timelines))
        result.diagnostics.extend(scope_clashes(checked, result.timelines))
    if checked:
        result.diagnostics.extend(emit_targets(checked))
    for source in tests:
        result.diagnostics.extend(test_file_problems(source, result.personas))
    if voiced:
        samples = event_samples(checked, result.timelines)
        for source, persona, broken in voiced:
            # A file with errors: what cannot render is most likely those errors, already reported.
            result.diagnostics.extend(voice_problems(source, persona, samples, templates=templates, notes=not broken))
    return result


def test_file_problems(source: Source, personas: Mapping[str, Persona]) -> list[Diagnostic]:
    """The problems of a test file: its schema, and (when personas were loaded) the names it uses."""
    from ..app.persona_tests import TestSource, check  # the test runner is the app layer's
    from .loader import validate
    from .test_schema import TestFile

    try:
        model = validate(source, TestFile)
    except PersonaeError as exc:
        return list(exc.diagnostics)
    if not personas:
        return []
    assert isinstance(model, TestFile)
    return check(TestSource(source, model), personas)[1]


def _warnings(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [Diagnostic(d.file, d.line, d.column, d.path, d.message, "warning") for d in diagnostics]


def _column(timeline: Timeline) -> int:
    # A YAML event is a list item ("  - at: ..."); CSV rows and VEVENTs start at column 1.
    return 5 if timeline.file.lower().endswith((".yaml", ".yml")) else 1


def duplicate_rows(timeline: Timeline) -> list[Diagnostic]:
    """Warnings for rows with the same time, event, persona and data as an earlier row: both play."""
    first: dict[tuple[object, ...], int] = {}
    out: list[Diagnostic] = []
    for e in timeline.events:
        key = (e.at, e.name, e.persona, json.dumps(e.data, sort_keys=True, default=repr))
        line = first.setdefault(key, e.line)
        if line != e.line:
            out.append(
                Diagnostic(
                    timeline.file,
                    e.line,
                    _column(timeline),
                    f"events[{e.index}]",
                    f"same time, event, persona and data as line {line}: it will play twice",
                    "warning",
                )
            )
    return out


def _cast_fix(timeline: Timeline, ids: Sequence[str]) -> str:
    names = list(ids) or ["persona", "..."]
    name = timeline.file.lower()
    if name.endswith(".csv"):
        return f"a line '# cast: {', '.join(names)}'"
    if name.endswith((".ics", ".ical")):
        return f"'X-PERSONAE-CAST:{','.join(names)}'"
    return f"'cast: [{', '.join(names)}]'"


def cast_problems(personas: Mapping[str, Persona], timeline: Timeline) -> list[Diagnostic]:
    """What is wrong with who plays ``timeline``: no cast at all, a cast entry that is
    not a loaded persona, an event that only personas outside the cast handle.
    """
    members = timeline.members
    if members is None:
        handlers = sorted({p.id for p in personas.values() for e in timeline.events if e.name in p.events})
        message = (
            f"timeline '{timeline.id}' has no cast: add {_cast_fix(timeline, handlers)} "
            "(only the cast hears its events, so adding a persona never changes it), "
            "or name the persona of every event"
        )
        return [Diagnostic(timeline.file, 1, 1, "", message)]
    if not personas:
        return []
    out: list[Diagnostic] = []
    for i, (pid, (line, column)) in enumerate(zip(timeline.cast or (), timeline.cast_at, strict=False)):
        if pid not in personas:
            hint = did_you_mean(pid, personas) or f" (loaded: {', '.join(sorted(personas))})"
            out.append(Diagnostic(timeline.file, line, column, f"cast[{i}]", f"unknown persona '{pid}'{hint}"))
    for e in timeline.events:
        if e.persona is not None or any(e.name in p.events for p in personas.values() if p.id in members):
            continue
        outside = [p.id for p in personas.values() if e.name in p.events]
        if outside:
            message = (
                f"no persona of the cast ({', '.join(sorted(members))}) handles event '{e.name}'; "
                f"{', '.join(outside)} does: add it to the cast"
            )
            out.append(Diagnostic(timeline.file, e.line, _column(timeline), f"events[{e.index}].event", message))
    return out


def config_diagnostics(path: Path) -> list[Diagnostic]:
    """The problems of a ``bot.toml``, all of them, as diagnostics."""
    from ..app.config import config_problems  # the app layer, only for the files that need it

    return config_problems(path)


def refusals(personas: Iterable[Persona]) -> list[Diagnostic]:
    """What ``lint`` rejects in personas that each loaded cleanly: checks across files.

    ``personae chat`` refuses these too, so it never runs what lint rejects.
    """
    return [d for d in emit_cycles(personas) if d.severity == "error"]


def regex_warnings(source: Source) -> list[Diagnostic]:
    """Warnings for the reply regexes of a persona file: which run in the deadline-bound fallback
    engine, and which nest quantifiers (``(a+)+``, ``(a|a)*``: exponential in a backtracking engine).

    The patterns are read from the file itself, so a file whose other parts have errors gets them too.
    """
    out: list[Diagnostic] = []
    replies = source.data.get("replies") if isinstance(source.data, dict) else None
    for i, rule in enumerate(replies if isinstance(replies, list) else []):
        when = rule.get("when") if isinstance(rule, dict) else None
        pattern = when.get("regex") if isinstance(when, dict) else None
        if not isinstance(pattern, str):
            continue
        try:
            found = shape(pattern)
            reasons = compile_regex(pattern).fallback_reasons
        except (re.error, ValueError, OverflowError, RecursionError):  # reported as an error already
            continue
        path = ("replies", i, "when", "regex")
        if reasons:
            message = (
                f"regex needs the fallback engine ({', '.join(reasons)}): it runs with a time limit, "
                "and a message that exceeds it is treated as no match"
            )
            out.append(source.diagnostic(path, message, severity="warning"))
        if found.nested:
            message = (
                f"regex has {found.nested[0]} (like '(a+)+'): exponential backtracking in most engines; "
                "write it without the nesting"
            )
            out.append(source.diagnostic(path, message, severity="warning"))
    return out


def _event_diag(persona: Persona, event: str, message: str, severity: str = "warning") -> Diagnostic:
    source_path = ("events", event)
    where = persona.events[event].where if event in persona.events else f"{persona.file}:1"
    line = int(where.rsplit(":", 1)[1])
    return Diagnostic(
        persona.file, line, 3, ".".join(source_path), message, "warning" if severity == "warning" else "error"
    )


def unplayable(personas: Iterable[Persona], timeline: Timeline) -> list[Diagnostic]:
    """Errors that make ``timeline`` wrong to play with ``personas``: an event no loaded
    persona handles (most often a typo), an event for a persona that is not loaded,
    and the :func:`cast_problems` (a timeline without a cast cannot be played).

    ``personae lint`` reports these as warnings (a timeline may be linted apart from some
    of its personas); ``personae replay`` and ``personae run`` refuse to play them.
    """
    by_id = {p.id: p for p in personas}
    handled = sorted({name for p in by_id.values() for name in p.events})
    out = cast_problems(by_id, timeline)
    # An emit naming a persona that is not loaded would start to land once that persona is
    # added, changing this timeline's transcript: refused, like an event naming one.
    members = timeline.members
    for p in by_id.values():
        if members is None or p.id in members:
            out.extend(d for d, unknown in _emit_targets(p, by_id) if unknown)
    reported = {(d.line, d.path) for d in out}
    for e in timeline.events:
        if (e.line, f"events[{e.index}].event") in reported:
            continue
        if e.persona and e.persona not in by_id:
            hint = did_you_mean(e.persona, by_id) or f" (loaded: {', '.join(sorted(by_id))})"
            where, message = "persona", f"unknown persona '{e.persona}'{hint}"
        elif e.persona and e.name not in by_id[e.persona].events:
            hint = did_you_mean(e.name, by_id[e.persona].events)
            where, message = "event", f"persona '{e.persona}' has no reaction to event '{e.name}'{hint}"
        elif e.name not in handled:
            where, message = "event", f"no loaded persona handles event '{e.name}'{did_you_mean(e.name, handled)}"
        else:
            continue
        out.append(Diagnostic(timeline.file, e.line, 5, f"events[{e.index}].{where}", message))
    return out


def cross_check(personas: Iterable[Persona], timelines: Iterable[Timeline]) -> list[Diagnostic]:
    """Warnings for unhandled timeline events and persona events nothing raises."""
    personas = list(personas)
    timelines = list(timelines)
    handled = {name for p in personas for name in p.events}
    raised = {e.name for t in timelines for e in t.events}
    raised |= {s.event for p in personas for s in p.schedule}
    for p in personas:
        actions = [
            *p.events.values(),
            *p.replies,
            *([p.fallback] if p.fallback else []),
            *(s.action for s in p.schedule),
        ]
        raised |= {e.event for a in actions for e in a.emit}
    out: list[Diagnostic] = []
    for t in timelines:
        reported: set[str] = set()
        for e in t.events:
            if e.name not in handled and e.name not in reported:
                reported.add(e.name)
                out.append(
                    Diagnostic(
                        t.file, e.line, 5, f"events[{e.index}].event", f"no persona handles event '{e.name}'", "warning"
                    )
                )
            elif e.persona and not any(p.id == e.persona for p in personas):
                out.append(
                    Diagnostic(
                        t.file, e.line, 5, f"events[{e.index}].persona", f"unknown persona '{e.persona}'", "warning"
                    )
                )
    for p in personas:
        for name in p.events:
            if name not in raised:
                out.append(_event_diag(p, name, f"no timeline, schedule or emit raises event '{name}'"))
    return out


def scope_clashes(personas: Iterable[Persona], timelines: Iterable[Timeline]) -> list[Diagnostic]:
    """Warnings where a persona outside a timeline's cast handles an event that cast handles.

    Scoping keeps them apart (that timeline's event never reaches the outsider), which is
    what an author adding a persona may not expect; and an admin ``/emit`` reaches both.
    """
    personas = list(personas)
    timelines = [t for t in timelines if t.members is not None]
    out: list[Diagnostic] = []
    reported: set[tuple[str, str]] = set()
    for t in timelines:
        members = t.members or frozenset()
        for q in personas:
            if q.id in members:
                continue
            own = [u.id for u in timelines if q.id in (u.members or ())]
            for name in q.events:
                mates = [p.id for p in personas if p.id in members and name in p.events]
                if not mates or (q.id, name) in reported:
                    continue
                reported.add((q.id, name))
                where = f"timeline '{own[0]}'" if own else "no timeline's cast"
                message = (
                    f"event '{name}' is also handled by {', '.join(mates)} of timeline '{t.id}'; "
                    f"'{q.id}' (in {where}) is not in its cast, so that timeline's '{name}' never reaches it "
                    f"(an admin /emit {name} reaches both: rename one if they mean different things)"
                )
                out.append(_event_diag(q, name, message))
    return out


def emit_targets(personas: Iterable[Persona]) -> list[Diagnostic]:
    """Warnings for an ``emit`` naming a persona that is not loaded or does not handle the event."""
    by_id = {p.id: p for p in personas}
    return _warnings(d for p in by_id.values() for d, _ in _emit_targets(p, by_id))


def _emit_targets(p: Persona, by_id: Mapping[str, Persona]) -> Iterable[tuple[Diagnostic, bool]]:
    """Problems of ``p``'s emits that name a persona, each with whether that persona is unknown."""
    actions = [*p.events.values(), *p.replies, *([p.fallback] if p.fallback else []), *(s.action for s in p.schedule)]
    for action in actions:
        for e in action.emit:
            if e.persona is None:
                continue
            target = by_id.get(e.persona)
            if target is None:
                message = f"emit {e.event}: unknown persona '{e.persona}'{did_you_mean(e.persona, by_id)}"
            elif e.event not in target.events:
                hint = did_you_mean(e.event, target.events)
                message = f"emit {e.event}: persona '{e.persona}' has no reaction to event '{e.event}'{hint}"
            else:
                continue
            line = int(action.where.rsplit(":", 1)[1])
            yield Diagnostic(p.file, line, 3, "emit", message), target is None


def emit_cycles(personas: Iterable[Persona]) -> list[Diagnostic]:
    """Find loops in the event → emit graph across personas."""
    personas = list(personas)
    edges: dict[str, set[str]] = {}
    conditional: dict[tuple[str, str], bool] = {}
    owner: dict[str, Persona] = {}
    for p in personas:
        for name, action in p.events.items():
            owner.setdefault(name, p)
            for e in action.emit:
                edges.setdefault(name, set()).add(e.event)
                key = (name, e.event)
                conditional[key] = conditional.get(key, True) and action.condition is not None
    out: list[Diagnostic] = []
    seen_cycles: set[frozenset[str]] = set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                cycle = [*stack[stack.index(nxt) :], nxt]
                key = frozenset(cycle)
                if key in seen_cycles:
                    continue
                seen_cycles.add(key)
                guarded = any(conditional.get((a, b), False) for a, b in itertools.pairwise(cycle))
                p = owner[cycle[0]]
                msg = "emit loop: " + " → ".join(cycle)
                out.append(
                    _event_diag(
                        p,
                        cycle[0],
                        msg + (" (guarded by a condition)" if guarded else ""),
                        "warning" if guarded else "error",
                    )
                )
            elif len(stack) < 64:
                visit(nxt, [*stack, nxt])

    for start in sorted(edges):
        visit(start, [start])
    return out
