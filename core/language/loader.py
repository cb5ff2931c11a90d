"""Load persona scripts: YAML → validated model → compiled :class:`Persona`.

Every problem becomes a :class:`Diagnostic` at ``file:line:col``; all problems
of a file are reported together, never as a traceback.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateAssertionError, TemplateSyntaxError, nodes
from jinja2.meta import find_undeclared_variables
from pydantic import BaseModel, ValidationError

from ..engine.messages import Media
from ..engine.persona import Action, Assignment, CooldownRule, EmitAction, Persona, RateLimit, Scheduled
from ..engine.router import Router, Trigger
from ..engine.safe_regex import compile_regex
from .budget_lint import budget_problems
from .errors import Diagnostic, PersonaeError, did_you_mean, format_path
from .media import known_types, mime_of
from .schema import MediaFile, PersonaFile, Reaction, Reply, ScheduleEntry, field_names
from .source import DataPath, Source, load_yaml, parse_yaml
from .templates import Templates, Text

_COMMON = frozenset({"state", "persona", "now", "phrase", "days_since"})
CONTEXT_NAMES: dict[str, frozenset[str]] = {
    "reply": _COMMON | {"chat", "user", "message"},
    "regex": _COMMON | {"chat", "user", "message", "match"},
    "event": _COMMON | {"event"},
}
#: What a user past the persona's ``limits`` is told once, unless the persona says otherwise.
DEFAULT_NOTICE = "You're writing faster than I can answer. I'll be back with you in a little while."
_SET_KEY = re.compile(r"^(chat\.)?([A-Za-z_][A-Za-z0-9_]*)$")

#: The keys of the fixed objects templates see (the engine builds them as dicts), for attribute typos.
OBJECT_KEYS: dict[str, frozenset[str]] = {
    "user": frozenset({"id", "name", "username"}),
    "message": frozenset({"text", "args"}),
    "chat": frozenset({"id", "type", "title", "state"}),
    "persona": frozenset({"id", "name", "description", "locale"}),
    "now": frozenset(n for n in dir(datetime) if not n.startswith("_")),
}
#: What ``event`` holds in a schedule entry: the runtime raises its tick without data.
_SCHEDULE_EVENT_KEYS = frozenset({"name", "at"})
#: What ``.name`` also finds on a dict: Jinja looks up attributes before keys.
_DICT_METHODS = frozenset({"get", "items", "keys", "values", "copy"})


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


def _salvage(data: dict[Any, Any]) -> tuple[PersonaFile | None, dict[str, list[int]]]:
    """The parts of an invalid persona that do validate, so their own checks still run.

    Whatever pydantic rejects is pruned (the deepest part of each error's
    location that exists), and validation is tried again, until the rest is
    valid. The errors of these later rounds are artefacts of pruning, never
    reported. Items of ``replies`` and ``schedule`` are set aside rather than
    deleted, and the index of each kept item in the file is returned, so that
    later diagnostics still point at ``replies[3]``, not at its new index.
    """
    work = copy.deepcopy(data)
    dropped: dict[str, set[int]] = {"replies": set(), "schedule": set()}
    for _ in range(_SALVAGE_ROUNDS):
        view = dict(work)
        kept: dict[str, list[int]] = {}
        for section, gone in dropped.items():
            items = work.get(section)
            if isinstance(items, list):
                kept[section] = [i for i in range(len(items)) if i not in gone]
                view[section] = [items[i] for i in kept[section]]
        try:
            spec = PersonaFile.model_validate(view)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                loc: DataPath = tuple(p for p in err["loc"] if isinstance(p, str | int))
                if len(loc) > 1 and loc[0] in kept and isinstance(loc[1], int) and loc[1] < len(kept[str(loc[0])]):
                    loc = (loc[0], kept[str(loc[0])][loc[1]], *loc[2:])
                _prune(work, loc, dropped)
            continue
        return spec, kept
    return None, {}


#: Each round prunes at least one part; a file has few levels of nesting.
_SALVAGE_ROUNDS = 16
#: Stand-ins for required top-level values that are missing or invalid.
_PLACEHOLDERS: dict[str, str] = {"persona": "unnamed", "name": "unnamed"}


#: The trigger given to a reply whose own is broken, while the rest of the file is checked.
_NEVER = "\ufffe never matches \ufffe"


def _prune(work: dict[Any, Any], loc: DataPath, dropped: dict[str, set[int]]) -> None:
    """Remove from ``work`` the deepest part of ``loc`` that exists (see :func:`_salvage`)."""
    if loc and loc[0] in _PLACEHOLDERS and (len(loc) == 1 or loc[0] not in work):
        work[loc[0]] = _PLACEHOLDERS[str(loc[0])]
        return
    node: Any = work
    found: DataPath = ()
    for part in loc:
        if not _holds(node, part):
            break
        node = node[part]
        found = (*found, part)
    if len(found) >= 3 and found[0] == "replies" and found[2] == "when":
        # A broken trigger would drop the whole reply, and its `say`, `set` and `if` would go
        # unchecked until it is fixed: give it one that never matches, and check the rest.
        work["replies"][found[1]]["when"] = {"exact": [_NEVER]}
        return
    # Deleting an item of a nested list would shift the indices its neighbours are reported at.
    while len(found) > 2 and isinstance(found[-1], int):
        found = found[:-1]
    if len(found) == 2 and found[0] in dropped and isinstance(found[1], int):
        dropped[str(found[0])].add(found[1])
    elif found:
        parent: Any = work
        for part in found[:-1]:
            parent = parent[part]
        if isinstance(parent, dict):
            del parent[found[-1]]


def _holds(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _dedupe(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    diags = list(diags)
    # `{fr: 1h}` is one typo: "unknown key 'fr' (did you mean 'for'?)" says it all, without "missing 'for'".
    typos = {(d.path, d.message.rpartition("(did you mean ")[2]) for d in diags if "unknown key" in d.message}
    diags = [
        d
        for d in diags
        if not (d.message.startswith("missing required key ") and (d.path, f"{d.message[21:]}?)") in typos)
    ]
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
        # A mapping written where a list may go (`media: {file: …, alt: …}`) was wrapped in
        # a list: without the index the normaliser added, the key is in the file.
        for i, part in enumerate(loc):
            if isinstance(part, int) and (*loc[:i], *loc[i + 1 :]) in source.values:
                return (*loc[:i], *loc[i + 1 :])
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
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    ctx = err.get("ctx", {})
    if kind == "string_too_long":
        return f"too long: at most {ctx.get('max_length'):,} characters, found {len(value):,}"
    if kind == "too_long":
        return f"too many: at most {ctx.get('max_length')} items, found {ctx.get('actual_length')}"
    bound = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most")}.get(kind)
    if bound is not None:
        return f"must be {bound[1]} {err.get('ctx', {}).get(bound[0])}, found {value!r}"
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

    def __init__(
        self,
        source: Source,
        spec: PersonaFile,
        templates: Templates,
        prefixes: str,
        indices: dict[str, list[int]] | None = None,
    ) -> None:
        self.src = source
        self.spec = spec
        # Where each reply and schedule entry is in the file (only some of them are in a salvaged spec).
        self.indices = indices or {}
        self.tpl = templates
        self.prefixes = prefixes
        self.diags: list[Diagnostic] = []
        self.state_keys = set(spec.state)
        self.chat_keys = set(spec.chat_state)
        self.phrase_names = set(spec.phrases)
        # The named groups of the regex of the reply being compiled (None: unknown, not checked).
        self.match_groups: frozenset[str] | None = None
        # The keys of ``event`` when they are known (a schedule's tick carries no data); None: any.
        self.event_keys: frozenset[str] | None = None

    def error(self, path: DataPath, message: str, **kw: Any) -> None:
        self.diags.append(self.src.diagnostic(path, message, **kw))

    # -- templates

    def text(self, source: str, path: DataPath, context: str) -> Text | None:
        if "{" not in source:
            # No tag, no variable, no expression: nothing to check (its length is the schema's).
            return self.tpl.text(source)
        try:
            ast = self.tpl.parse(source)
            checks = [self._check_ast(ast, path, context), self._check_objects(ast, source, path, context)]
            if not all(checks):
                return None
            return self.tpl.text(source, ast)
        except (RecursionError, MemoryError, SyntaxError):
            # Jinja's parser and Python's compiler recurse per level of nesting.
            self.error(path, "template error: nested too deeply")
            return None
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
            checks = [self._check_ast(ast, path, context), self._check_objects(ast, source, path, context)]
            return fn if all(checks) else None
        except (RecursionError, MemoryError, SyntaxError):
            self.error(path, "condition error: nested too deeply")
            return None
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
        for problem in budget_problems(ast, self.tpl.env()):
            self.error(path, problem)
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

    def _check_objects(self, ast: nodes.Template, source: str, path: DataPath, context: str) -> bool:
        """Attribute typos on the objects templates see (``user.nmae``), which otherwise fail only when rendered."""
        ok = True
        # A name the template binds itself ({% set %}, a loop or macro variable) is not the context's object.
        bound = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            if isinstance(node, nodes.Getattr):
                owner, attr, item = node.node, node.attr, False
            elif (
                isinstance(node, nodes.Getitem)
                and isinstance(node.arg, nodes.Const)
                and isinstance(node.arg.value, str)
            ):
                owner, attr, item = node.node, node.arg.value, True
            else:
                continue
            if not isinstance(owner, nodes.Name) or owner.name in bound or owner.name not in CONTEXT_NAMES[context]:
                continue
            name = owner.name
            if name == "match" and self.match_groups is not None:
                if attr in self.match_groups or (not item and attr in _DICT_METHODS):
                    continue
                hint = did_you_mean(attr, self.match_groups) or (
                    f" (its groups: {', '.join(sorted(self.match_groups))})"
                    if self.match_groups
                    else " (name a group with (?P<name>...))"
                )
                message = f"the regex has no group named '{attr}'{hint}"
            elif name == "event" and self.event_keys is not None:
                if attr in self.event_keys or (not item and attr in _DICT_METHODS):
                    continue
                hint = did_you_mean(attr, self.event_keys) or f" (it has: {', '.join(sorted(self.event_keys))})"
                message = f"a scheduled event has no data: 'event' has no attribute '{attr}'{hint}"
            elif name in OBJECT_KEYS:
                keys = OBJECT_KEYS[name]
                if attr in keys or (not item and name != "now" and attr in _DICT_METHODS) or attr.startswith("_"):
                    continue  # an underscore name is the sandbox check's to report
                hint = did_you_mean(attr, keys) or (f" (it has: {', '.join(sorted(keys))})" if name != "now" else "")
                message = f"'{name}' has no attribute '{attr}'{hint}"
            else:
                continue
            self.error(
                path,
                message,
                line_offset=self._line(path, node.lineno),
                column=self._column(path, source, name, attr),
            )
            ok = False
        return ok

    def _column(self, path: DataPath, source: str, name: str, attr: str) -> int | None:
        # Jinja nodes carry a line, not a column: find the attribute in the text when it is on one line.
        style = self.src.styles.get(path)
        if "\n" in source or style not in (None, "'", '"'):
            return None
        n, a = re.escape(name), re.escape(attr)
        m = re.search(rf"\b{n}\s*(?:\.\s*({a})\b|\[\s*['\"]({a})['\"])", source)
        if m is None:
            return None
        return self.src.where(path).column + (1 if style else 0) + m.start(m.lastindex or 1)

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
            declared = (self.spec.chat_state if scope == "chat" else self.spec.state)[k]
            problem = _set_mismatch(value, declared, self.tpl)
            if problem:
                self.error(kp, f"{problem} ('{k}' is declared as {_declared(declared)})")
                continue
            compiled: Any = self.text(value, kp, context) if isinstance(value, str) else value
            assign.append(Assignment(scope, k, compiled))
        emits = []
        for i, e in enumerate(r.emit):
            ep = (*path, "emit", i) if (*path, "emit", i) in self.src.values else (*path, "emit")
            data = {k: self.text(v, (*ep, "data", k), context) if isinstance(v, str) else v for k, v in e.data.items()}
            emits.append(EmitAction(e.event, data, e.delay, e.persona))
        platforms, platform_media = {}, {}
        for p, v in r.platforms.items():
            vp: DataPath = (*path, "platforms", p)
            # A variant written as text (or a list of texts) is its say; a mapping has say/media keys.
            platforms[p] = self.say(v.say, (*vp, "say") if (*vp, "say") in self.src.keys else vp, context)
            if v.media is not None:
                platform_media[p] = self.media(v.media, (*vp, "media"))
        condition = self.condition(r.if_, (*path, "if"), context) if r.if_ else None
        pos = self.src.where(path)
        say = self.say(r.say, (*path, "say"), context)
        texts = [*say, *(t for v in platforms.values() for t in v)]
        self._check_no_repeat(r, path)
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
            media=self.media(r.media, (*path, "media")),
            platform_media=platform_media,
            cooldown=self.cooldown(r, path, context),
            no_repeat=r.no_repeat,
        )

    def media(self, files: Sequence[MediaFile], path: DataPath) -> tuple[Media, ...]:
        """The files of a ``media:`` list, found relative to the persona file; a missing one is an error."""
        out = []
        base = Path(self.src.file).parent
        for i, m in enumerate(files):
            at = media_path(self.src, path, i)
            mime = mime_of(m.file)
            if mime is None:
                message = f"'{m.file}' is not an image, audio or video file the platforms take ({known_types()})"
                self.error(at, message, key=True)
                continue
            file = base / m.file
            problem = media_file_problem(base, m.file)
            if problem:
                self.error(at, problem, key=True)
                continue
            out.append(Media(str(file.resolve()), mime, (m.alt or "").strip()))
        return tuple(out)

    def cooldown(self, r: Reaction, path: DataPath, context: str) -> CooldownRule | None:
        """The compiled ``cooldown`` of a reaction (an event's is global: it has no chat or user)."""
        if r.cooldown_say is not None and context == "event":
            message = "cooldown_say is for replies: an event reaction that is cooling down is skipped"
            self.error((*path, "cooldown_say"), message, key=True)
        elif r.cooldown_say is not None and r.cooldown is None and (*path, "cooldown") not in self.src.values:
            # (A cooldown that is written but invalid is reported as such, and set aside.)
            self.error((*path, "cooldown_say"), "cooldown_say needs a cooldown (e.g. cooldown: 10m)", key=True)
        if r.cooldown is None:
            return None
        per = r.cooldown.per or ("global" if context == "event" else "chat")
        if context == "event" and per != "global":
            where = (*path, "cooldown", "per")
            self.error(where, f"an event reaction has no {per}: its cooldown can only be global (leave 'per' out)")
        say = self.say(r.cooldown_say, (*path, "cooldown_say"), context) if context != "event" else ()
        return CooldownRule(r.cooldown.for_, per, say)

    def _check_no_repeat(self, r: Reaction, path: DataPath) -> None:
        # Of n options, at most n - 1 can be avoided: the last pick must stay possible.
        sizes = [len(r.say or ()), *(len(v.say or ()) for v in r.platforms.values())]
        if r.no_repeat and r.no_repeat >= max(sizes):
            most = max(max(sizes) - 1, 0)
            self.diags.append(
                self.src.diagnostic(
                    (*path, "no_repeat"),
                    f"no_repeat {r.no_repeat} with {max(sizes)} option(s): only the last {most} pick(s) can be avoided",
                    severity="warning",
                )
            )

    def limits(self) -> RateLimit | None:
        """The persona's per-user rate limit, with its notice (a default one if it gives none)."""
        spec = self.spec.limits
        if spec is None:
            return None
        path: DataPath = ("limits",)
        notice_path = (*path, "notice")
        notice = (
            self.say(spec.notice, notice_path, "reply") if spec.notice is not None else (self.tpl.text(DEFAULT_NOTICE),)
        )
        action = Action(
            name="limits",
            where=f"{self.src.file}:{self.src.where(path).line}",
            say=notice,
            dynamic=not all(t.constant for t in notice),
        )
        return RateLimit(spec.messages, spec.per, action)

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
        for i, rule in zip(self._index("replies", spec.replies), spec.replies, strict=True):
            path: DataPath = ("replies", i)
            triggers.append(self.trigger(rule, path))
            ctx = "regex" if rule.when.regex is not None else "reply"
            self.match_groups = _group_names(rule.when.regex) if rule.when.regex is not None else None
            replies.append(self.action(rule, path, f"replies[{i}]", ctx))
        self.match_groups = None
        fallback = self.action(spec.fallback, ("fallback",), "fallback", "reply") if spec.fallback else None
        schedule = tuple(
            self.scheduled(e, i) for i, e in zip(self._index("schedule", spec.schedule), spec.schedule, strict=True)
        )
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
            limits=self.limits(),
            no_repeat=spec.no_repeat,
        )

    def _index(self, section: str, items: Sequence[object]) -> Sequence[int]:
        return self.indices.get(section) or range(len(items))

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
        self.event_keys = _SCHEDULE_EVENT_KEYS
        action = self.action(entry, path, f"schedule[{i}]", "event")
        self.event_keys = None
        return Scheduled(entry.cron, entry.event or "schedule", action, entry.timezone)


#: The strings the engine reads as a boolean when ``set`` stores one (any other reads as false).
_BOOL_WORDS = frozenset({"1", "true", "yes", "on", "0", "false", "no", "off"})
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _converts(text: str, kind: type) -> bool:
    """Whether the engine can store rendered ``text`` in state declared of type ``kind``."""
    if kind is bool:
        return text.strip().lower() in _BOOL_WORDS
    try:
        if kind is int:
            int(float(text))  # what the engine stores: "3.0" is fine, "inf" is not
        elif kind is float:
            float(text)
    except (ValueError, OverflowError):
        return False
    return True


def _template_shape(source: str, templates: Templates, stand_in: str) -> str | None:
    """What a template renders, with each ``{{ expression }}`` as ``stand_in``; None if not that simple."""
    try:
        ast = templates.parse(source)
    except TemplateSyntaxError:
        return None  # reported where the template is compiled
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    parts = []
    for node in ast.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str | int | float):
            parts.append(str(node.value))
        else:
            parts.append(stand_in)
    return "".join(parts)


def _set_mismatch(value: Any, declared: Any, templates: Templates) -> str | None:
    """Why ``set`` cannot store ``value`` in state declared as ``declared``, or ``None``.

    A string is what a template renders: the engine converts it to a declared
    number (failing at run time when it cannot) or boolean (reading anything
    unknown as false). A template is judged by its constant text with each
    ``{{ }}`` taken as a number, so ``"{{ n }} items"`` is refused for an
    integer while ``"{{ n + 1 }}"`` is not.
    """
    if declared is None:
        return None
    kind = type(declared)
    if isinstance(value, str):
        if kind is str:
            return None
        if "{" not in value:
            return None if _converts(value, kind) else f"'{value}' is not {_KIND_WORDS[kind]}"
        shape = _template_shape(value, templates, "1" if kind is bool else "0")
        constant = _template_shape(value, templates, "")
        if shape is None or constant is None or not constant.strip() or _converts(shape, kind):
            return None  # nothing but expressions: only their values decide
        return f"'{value}' never renders {_KIND_WORDS[kind]}"
    fits = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str | int | float) and not isinstance(value, bool),
    }[kind]
    return None if fits or value is None else f"expected {_KIND_WORDS[kind]}, found {_kind(value)}"


def _declared(value: Any) -> str:
    return _KIND_WORDS.get(type(value), type(value).__name__)


def media_file_problem(base: Path, name: str) -> str | None:
    """Why the media file ``name`` (relative to the persona folder ``base``) cannot be sent, or ``None``.

    A persona may only send files from its own folder (or below): a script that names
    ``/etc/passwd`` or ``../../secret.png``, or a link pointing out of the folder, would
    otherwise post any file the bot can read to a public network.
    """
    if Path(name).is_absolute():
        return f"media file '{name}' must be a path relative to the persona file, not an absolute path"
    file = base / name
    try:
        inside = file.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return f"media file '{name}' cannot be read (a symbolic link loop?)"
    if not inside:
        return f"media file '{name}' is outside the persona's folder ({base.resolve()}): keep media next to the persona"
    if file.is_dir():
        return f"media file '{name}' is a directory, not a file"
    if not file.is_file():
        return f"media file '{name}' not found (looked for {file})"
    if file.stat().st_size == 0:
        return f"media file '{name}' is empty (0 bytes): no platform takes an empty file"
    return None


def media_path(source: Source, path: DataPath, i: int) -> DataPath:
    """Where item ``i`` of the ``media:`` list at ``path`` names its file (the ``file:`` key, when written)."""
    item: DataPath = (*path, i) if (*path, i) in source.values else path  # one mapping, not a list
    return (*item, "file") if (*item, "file") in source.keys else item


def _group_names(pattern: str) -> frozenset[str] | None:
    """The named groups of ``pattern``, which ``match`` holds; ``None`` when Python's ``re`` cannot tell."""
    try:
        return frozenset(re.compile(pattern).groupindex)
    except (re.error, RecursionError, OverflowError):
        return None


# --------------------------------------------------------------------------- public API


def check_source(
    source: Source, *, templates: Templates | None = None, prefixes: str = "/!"
) -> tuple[Persona | None, list[Diagnostic]]:
    """Every problem of one parsed persona document, and the persona as far as it compiles.

    A schema error does not stop the other checks: the parts of the file that
    do validate are compiled too (their regexes, templates and emits checked),
    so one run reports everything. The persona returned alongside errors is
    only fit for further checks (``lint``'s emit graph), never to run.
    """
    if not isinstance(source.data, dict):
        kind = type(source.data).__name__
        return None, [source.diagnostic((), f"expected a mapping of keys at the top level, found {kind}")]
    diags: list[Diagnostic] = []
    indices: dict[str, list[int]] = {}
    try:
        spec: PersonaFile | None = PersonaFile.model_validate(source.data)
    except ValidationError as exc:
        diags = [_diagnostic(source, PersonaFile, err) for err in exc.errors(include_url=False)]
        spec, indices = _salvage(source.data)
    if spec is None:
        return None, _dedupe(diags)
    compiler = _Compiler(source, spec, templates or Templates(), prefixes, indices)
    persona = compiler.compile()
    return persona, _dedupe([*diags, *compiler.diags])


def compile_source(source: Source, *, templates: Templates | None = None, prefixes: str = "/!") -> Persona:
    """Validate and compile one parsed persona document; :class:`PersonaeError` with every problem."""
    persona, diags = check_source(source, templates=templates, prefixes=prefixes)
    errors = [d for d in diags if d.severity == "error"]
    if errors or persona is None:
        raise PersonaeError(errors)
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
