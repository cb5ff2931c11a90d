"""``personae lint``: check persona scripts and timelines together.

Per-file problems are errors. Cross-file checks are warnings: a timeline
event no persona handles, a persona event nothing raises. An ``emit`` cycle
with no condition anywhere on it is an error (it could only end at the depth
bound); a conditional one is a warning.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.persona import Persona
from ..engine.regex_syntax import shape
from ..timing.timeline import Timeline, is_timeline, load_timeline, timeline_from_source
from .errors import Diagnostic, PersonaeError, did_you_mean
from .loader import compile_source, persona_files
from .source import Source, load_yaml
from .templates import Templates

TIMELINE_SUFFIXES = (".csv", ".ics", ".ical")


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
    """Lint every persona and timeline file under ``paths``."""
    result = LintResult()
    templates = Templates()
    first_file: dict[str, str] = {}
    for path in expand(paths):
        result.files += 1
        try:
            if path.suffix.lower() in TIMELINE_SUFFIXES:
                result.timelines.append(load_timeline(path))
                continue
            source = load_yaml(path)
            if is_timeline(source.data):
                result.timelines.append(timeline_from_source(source))
                continue
            persona = compile_source(source, templates=templates)
        except PersonaeError as exc:
            result.diagnostics.extend(exc.diagnostics)
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
        result.diagnostics.extend(regex_warnings(source, persona))
    result.diagnostics.extend(emit_cycles(result.personas.values()))
    if result.timelines and result.personas:
        result.diagnostics.extend(cross_check(result.personas.values(), result.timelines))
    return result


def regex_warnings(source: Source, persona: Persona) -> list[Diagnostic]:
    """Warnings for reply regexes: which run in the deadline-bound fallback engine, and which
    nest quantifiers (``(a+)+``, ``(a|a)*``: exponential in a backtracking engine)."""
    out: list[Diagnostic] = []
    for i, rule in enumerate(persona.spec.replies):
        pattern = rule.when.regex
        if pattern is None:
            continue
        path = ("replies", i, "when", "regex")
        found = shape(pattern)
        trigger = persona.router.regex_of(i)
        reasons = trigger.fallback_reasons if trigger is not None else found.needs_fallback
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
    persona handles (most often a typo), an event for a persona that is not loaded.

    ``personae lint`` reports these as warnings (a timeline may be linted apart from some
    of its personas); ``personae replay`` and ``personae run`` refuse to play them.
    """
    by_id = {p.id: p for p in personas}
    handled = sorted({name for p in by_id.values() for name in p.events})
    out: list[Diagnostic] = []
    for e in timeline.events:
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
