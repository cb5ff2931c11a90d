"""Load persona scripts: YAML → validated model → compiled :class:`Persona`.

Every problem becomes a :class:`Diagnostic` at ``file:line:col``; all problems
of a file are reported together, never as a traceback.
"""

from __future__ import annotations

import operator
import re
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from jinja2 import TemplateAssertionError, TemplateSyntaxError, nodes
from jinja2.meta import find_undeclared_variables
from pydantic import BaseModel, ValidationError

from ..engine.persona import Action, Assignment, EmitAction, Persona, Scheduled
from ..engine.router import Router, Trigger
from ..engine.safe_regex import compile_regex
from .errors import Diagnostic, PersonaeError, did_you_mean, format_path
from .schema import PersonaFile, Reaction, Reply, ScheduleEntry, field_names
from .source import DataPath, Source, load_yaml, parse_yaml
from .templates import Templates, Text, too_large, too_large_message

_COMMON = frozenset({"state", "persona", "now", "phrase", "days_since"})
CONTEXT_NAMES: dict[str, frozenset[str]] = {
    "reply": _COMMON | {"chat", "user", "message"},
    "regex": _COMMON | {"chat", "user", "message", "match"},
    "event": _COMMON | {"event"},
}
_SET_KEY = re.compile(r"^(chat\.)?([A-Za-z_][A-Za-z0-9_]*)$")


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "**": operator.pow,
    "%": operator.mod,
    "/": operator.truediv,
    "//": operator.floordiv,
}


def _oversized(expr: nodes.BinExpr) -> str | None:
    """The operator of a constant expression that would build a huge value (the sandbox refuses it at run time)."""

    def fold(node: nodes.Expr) -> Any:
        if isinstance(node, nodes.BinExpr) and node.operator in _BINOPS:
            left, right = fold(node.left), fold(node.right)
            if too_large(node.operator, left, right):
                raise _Oversized(node.operator)
            return _BINOPS[node.operator](left, right)
        return node.as_const()

    try:
        fold(expr)
    except _Oversized as exc:
        return str(exc)
    except Exception:  # not constant, or an error the template reports when it runs
        return None
    return None


class _Oversized(Exception):
    pass


# --------------------------------------------------------------------------- validation


def validate(source: Source, model: type[BaseModel]) -> BaseModel:
    """Validate ``source.data`` against ``model``; positioned diagnostics on failure."""
    if not isinstance(source.data, dict):
        kind = type(source.data).__name__
        raise PersonaeError([source.diagnostic((), f"expected a mapping of keys at the top level, found {kind}")])
    try:
        return model.model_validate(source.data)
    except ValidationError as exc:
        diags = [_diagnostic(source, model, err) for err in exc.errors(include_url=False)]
        raise PersonaeError(_dedupe(diags)) from None


def _dedupe(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for d in sorted(diags, key=lambda d: (d.line, d.column)):
        k = (d.line, d.column, d.message)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


def _diagnostic(source: Source, model: type[BaseModel], err: Any) -> Diagnostic:
    loc: DataPath = tuple(p for p in err["loc"] if isinstance(p, str | int))
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), field_names(parent)) if parent else ""
        d = source.diagnostic(loc, f"unknown key '{loc[-1]}'{hint}", key=True)
        # Name the mapping that has the stray key, as the key itself is the mistake.
        return Diagnostic(d.file, d.line, d.column, format_path(loc[:-1]), d.message)
    if kind == "missing":
        return source.diagnostic(loc[:-1], f"missing required key '{loc[-1]}'", key=True)
    return source.diagnostic(_present(source, loc), _message(err), key=False)


def _present(source: Source, loc: DataPath) -> DataPath:
    # A normalised value (a string turned into a list) has deeper locs than the YAML.
    while loc and loc not in source.values:
        loc = loc[:-1]
    return loc


def _message(err: Any) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind in ("value_error", "assertion_error"):
        return str(msg).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "string_pattern_mismatch":
        return f"'{value}' is not a valid name (use lowercase letters, digits, '-' and '_', starting with a letter)"
    expected = {
        "string_type": "a string",
        "list_type": "a string or a list of strings",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
        "int_type": "an integer",
        "bool_type": "true or false",
    }.get(kind)
    if expected:
        return f"expected {expected}, found {_kind(value)}"
    if kind == "too_short":
        return "must not be empty"
    return str(msg)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _model_at(model: type[BaseModel], loc: DataPath) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    skip = 0
    for part in loc:
        if skip:
            skip -= 1
            continue
        if current is None or not isinstance(part, str):
            return None
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        if part not in fields:
            return None
        current, skip = _inner_model(fields[part].annotation)
    return current


def _inner_model(annotation: Any, depth: int = 0) -> tuple[type[BaseModel] | None, int]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, depth
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _inner_model(typing.get_args(annotation)[0], depth)
    args = typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset):
        return _inner_model(args[0], depth + 1) if args else (None, 0)
    if origin is dict:
        return _inner_model(args[1], depth + 1) if len(args) == 2 else (None, 0)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found, d = _inner_model(arg, depth)
            if found is not None:
                return found, d
    return None, 0


# --------------------------------------------------------------------------- compilation


class _Compiler:
    """Compiles one validated persona file, collecting diagnostics."""

    def __init__(self, source: Source, spec: PersonaFile, templates: Templates, prefixes: str) -> None:
        self.src = source
        self.spec = spec
        self.tpl = templates
        self.prefixes = prefixes
        self.diags: list[Diagnostic] = []
        self.state_keys = set(spec.state)
        self.chat_keys = set(spec.chat_state)
        self.phrase_names = set(spec.phrases)

    def error(self, path: DataPath, message: str, **kw: Any) -> None:
        self.diags.append(self.src.diagnostic(path, message, **kw))

    # -- templates

    def text(self, source: str, path: DataPath, context: str) -> Text | None:
        try:
            ast = self.tpl.parse(source)
            if not self._check_ast(ast, path, context):
                return None
            return self.tpl.text(source, ast)
        except TemplateSyntaxError as exc:
            # An assertion error is a compile-time check (unknown filter or test).
            kind = "template error" if isinstance(exc, TemplateAssertionError) else "template syntax error"
            self.error(path, f"{kind}: {exc.message}", line_offset=self._line(path, exc.lineno))
            return None

    def _line(self, path: DataPath, lineno: int | None) -> int:
        style = self.src.styles.get(path)
        if not lineno:
            return 0
        return lineno if style in ("|", ">") else lineno - 1

    def condition(self, source: str, path: DataPath, context: str) -> Any:
        try:
            ast = self.tpl.parse("{{ (" + source + ") }}")
            fn = self.tpl.expression(source)
            return fn if self._check_ast(ast, path, context) else None
        except TemplateSyntaxError as exc:
            kind = "condition error" if isinstance(exc, TemplateAssertionError) else "condition syntax error"
            self.error(path, f"{kind}: {exc.message}")
            return None

    def _check_ast(self, ast: nodes.Template, path: DataPath, context: str) -> bool:
        ok = True
        allowed = CONTEXT_NAMES[context]
        for name in sorted(find_undeclared_variables(ast)):
            if name not in allowed:
                hint = did_you_mean(name, allowed)
                where = {"event": "an event reaction", "reply": "a reply", "regex": "a regex reply"}[context]
                extra = " ('match' is only set in regex replies)" if name == "match" else ""
                self.error(path, f"undefined variable '{name}' in {where}{hint or extra}")
                ok = False
        unsafe = [n.attr for n in ast.find_all(nodes.Getattr) if n.attr.startswith("_")]
        unsafe += [
            n.arg.value
            for n in ast.find_all(nodes.Getitem)
            if isinstance(n.arg, nodes.Const) and isinstance(n.arg.value, str) and n.arg.value.startswith("_")
        ]
        unsafe += [
            f.args[0].value
            for f in ast.find_all(nodes.Filter)
            if f.name == "attr" and f.args and isinstance(f.args[0], nodes.Const) and str(f.args[0].value)[:1] == "_"
        ]
        if unsafe:
            # One message per template: ''.__class__.__mro__ is one escape attempt, not two.
            self.error(path, f"unsafe attribute '{unsafe[-1]}': templates run in a sandbox")
            ok = False
        huge = next((op for op in map(_oversized, ast.find_all(nodes.BinExpr)) if op), None)
        if huge:
            self.error(path, too_large_message(huge))
            ok = False
        for node in ast.find_all(nodes.Getattr):
            owner = node.node
            if isinstance(owner, nodes.Name) and owner.name == "state" and node.attr not in self.state_keys:
                self.error(path, f"unknown state key '{node.attr}'{did_you_mean(node.attr, self.state_keys)}")
                ok = False
            if (
                isinstance(owner, nodes.Getattr)
                and owner.attr == "state"
                and isinstance(owner.node, nodes.Name)
                and owner.node.name == "chat"
                and node.attr not in self.chat_keys
            ):
                self.error(path, f"unknown chat_state key '{node.attr}'{did_you_mean(node.attr, self.chat_keys)}")
                ok = False
        for call in ast.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == "phrase":
                arg = call.args[0] if call.args else None
                if isinstance(arg, nodes.Const) and arg.value not in self.phrase_names:
                    self.error(
                        path,
                        f"unknown phrase bank '{arg.value}'{did_you_mean(str(arg.value), self.phrase_names)}",
                    )
                    ok = False
        return ok

    def say(self, values: Sequence[str] | None, path: DataPath, context: str) -> tuple[Text, ...]:
        out = []
        for i, value in enumerate(values or ()):
            p = (*path, i) if (*path, i) in self.src.values else path
            t = self.text(value, p, context)
            if t is not None:
                out.append(t)
        return tuple(out)

    # -- actions

    def action(self, r: Reaction, path: DataPath, name: str, context: str) -> Action:
        assign = []
        for key, value in r.set.items():
            kp = (*path, "set", key)
            m = _SET_KEY.match(key)
            if m is None:
                self.error(kp, f"'{key}' is not a state key (use 'key' or 'chat.key')", key=True)
                continue
            scope, k = ("chat", m.group(2)) if m.group(1) else ("persona", m.group(2))
            known = self.chat_keys if scope == "chat" else self.state_keys
            if k not in known:
                section = "chat_state" if scope == "chat" else "state"
                self.error(
                    kp, f"unknown {section} key '{k}' (declare it under '{section}:'){did_you_mean(k, known)}", key=True
                )
                continue
            if scope == "chat" and context == "event":
                self.error(kp, "an event has no chat: set persona state here, not 'chat.' keys", key=True)
                continue
            compiled: Any = self.text(value, kp, context) if isinstance(value, str) else value
            assign.append(Assignment(scope, k, compiled))
        emits = []
        for i, e in enumerate(r.emit):
            ep = (*path, "emit", i) if (*path, "emit", i) in self.src.values else (*path, "emit")
            data = {k: self.text(v, (*ep, "data", k), context) if isinstance(v, str) else v for k, v in e.data.items()}
            emits.append(EmitAction(e.event, data, e.delay))
        platforms = {p: self.say(v, (*path, "platforms", p), context) for p, v in r.platforms.items()}
        condition = self.condition(r.if_, (*path, "if"), context) if r.if_ else None
        pos = self.src.where(path)
        say = self.say(r.say, (*path, "say"), context)
        texts = [*say, *(t for v in platforms.values() for t in v)]
        return Action(
            name=name,
            where=f"{self.src.file}:{pos.line}",
            say=say,
            platforms=platforms,
            assign=tuple(assign),
            emit=tuple(emits),
            condition=condition,
            delay=r.delay,
            dynamic=bool(assign or emits) or not all(t.constant for t in texts),
        )

    def trigger(self, rule: Reply, path: DataPath) -> Trigger:
        w = rule.when
        if w.regex is not None:
            try:
                rx = compile_regex(w.regex)
            except re.error as exc:
                self.error((*path, "when", "regex"), f"invalid regex: {exc.msg} at position {exc.pos}")
                return Trigger()
            return Trigger(regex=rx)
        if w.command is not None:
            bad = [c for c in w.command if not re.fullmatch(r"[/!]?[A-Za-z0-9_]{1,64}", c)]
            for c in bad:
                self.error((*path, "when", "command"), f"'{c}' is not a command name (letters, digits, '_')")
            return Trigger(commands=tuple(c.lstrip("/!").lower() for c in w.command))
        if w.keywords is not None:
            return Trigger(keywords=tuple(w.keywords))
        return Trigger(exact=tuple(w.exact or ()))

    def compile(self) -> Persona:
        spec = self.spec
        phrases = {k: self.say(v, ("phrases", k), "reply") for k, v in spec.phrases.items()}
        events = {k: self.action(v, ("events", k), f"events.{k}", "event") for k, v in spec.events.items()}
        triggers, replies = [], []
        for i, rule in enumerate(spec.replies):
            path: DataPath = ("replies", i)
            triggers.append(self.trigger(rule, path))
            ctx = "regex" if rule.when.regex is not None else "reply"
            replies.append(self.action(rule, path, f"replies[{i}]", ctx))
        fallback = self.action(spec.fallback, ("fallback",), "fallback", "reply") if spec.fallback else None
        schedule = tuple(self.scheduled(e, i) for i, e in enumerate(spec.schedule))
        return Persona(
            id=spec.persona,
            name=spec.name,
            description=spec.description,
            locale=spec.locale,
            file=self.src.file,
            state=dict(spec.state),
            chat_state=dict(spec.chat_state),
            phrases=phrases,
            events=events,
            replies=tuple(replies),
            router=Router(triggers, prefixes=self.prefixes),
            fallback=fallback,
            schedule=schedule,
            spec=spec,
        )

    def scheduled(self, entry: ScheduleEntry, i: int) -> Scheduled:
        path: DataPath = ("schedule", i)
        from ..timing.cron import CronError, validate_cron, zone  # local: croniter only needed here

        try:
            validate_cron(entry.cron)
        except CronError as exc:
            self.error((*path, "cron"), str(exc))
        try:
            zone(entry.timezone)
        except CronError as exc:
            self.error((*path, "timezone"), str(exc))
        action = self.action(entry, path, f"schedule[{i}]", "event")
        return Scheduled(entry.cron, entry.event or "schedule", action, entry.timezone)


# --------------------------------------------------------------------------- public API


def compile_source(source: Source, *, templates: Templates | None = None, prefixes: str = "/!") -> Persona:
    """Validate and compile one parsed persona document."""
    spec = validate(source, PersonaFile)
    assert isinstance(spec, PersonaFile)
    compiler = _Compiler(source, spec, templates or Templates(), prefixes)
    persona = compiler.compile()
    errors = [d for d in compiler.diags if d.severity == "error"]
    if errors:
        raise PersonaeError(_dedupe(errors))
    return persona


def load_persona(path: str | Path, *, templates: Templates | None = None, display: str | None = None) -> Persona:
    """Load one persona file. Raises :class:`PersonaeError` with every problem found."""
    p = Path(path)
    return compile_source(load_yaml(p, display=display or str(path)), templates=templates)


def parse_persona(text: str, name: str = "<string>", *, templates: Templates | None = None) -> Persona:
    """Load a persona from YAML text (handy in tests and notebooks)."""
    return compile_source(parse_yaml(text, name), templates=templates)


def persona_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files, folders (``*.yaml``/``*.yml``, not recursive) and globs, sorted and unique."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if any(ch in str(raw) for ch in "*?["):
            anchor = Path(p.anchor) if p.is_absolute() else Path()
            rel = str(p.relative_to(anchor)) if p.is_absolute() else str(raw)
            out.extend(sorted(anchor.glob(rel)))
        elif p.is_dir():
            out.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def load_personas(paths: Iterable[str | Path], *, templates: Templates | None = None) -> dict[str, Persona]:
    """Load every persona under ``paths``; all files' problems are raised together.

    Two files declaring the same ``persona:`` id is an error.
    """
    templates = templates or Templates()
    personas: dict[str, Persona] = {}
    diags: list[Diagnostic] = []
    for file in persona_files(paths):
        try:
            source = load_yaml(file)
            persona = compile_source(source, templates=templates)
        except PersonaeError as exc:
            diags.extend(exc.diagnostics)
            continue
        if persona.id in personas:
            first = personas[persona.id].file
            diags.append(source.diagnostic(("persona",), f"duplicate persona id '{persona.id}' (also in {first})"))
            continue
        personas[persona.id] = persona
    if diags:
        raise PersonaeError(diags)
    return personas
