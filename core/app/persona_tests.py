"""``personae test``: conversation tests for personas, run offline.

Each test gets a fresh bot: the personas it names, one adapter per persona for
its platform (built, never started: rendering and splitting are the
platform's, nothing goes over the network), a virtual mission clock that
moves only when a step says ``advance``, and no database. Steps run in
order; after each, what followed is compared with what the step expects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..engine.cooldowns import describe_remaining
from ..engine.engine import Verdict
from ..engine.messages import Chat, Event, Incoming, Outgoing, User
from ..engine.persona import Action, Persona
from ..language.errors import Diagnostic, PersonaeError, did_you_mean, format_path
from ..language.loader import validate
from ..language.source import DataPath, Source, load_yaml
from ..language.test_schema import Expectation, Step, TestFile, UserSpec, is_test_file

#: Where a test starts on the mission clock when it does not say.
DEFAULT_START = datetime(2000, 1, 1, tzinfo=UTC)
#: The chat a test's user writes in (the same chat for every step).
CHAT_ID = "test-chat"
_TOKEN_ENV = "PERSONAE_TEST_TOKEN"
_TEST_ENVIRON = {_TOKEN_ENV: "0:personae-test-token"}
#: Options each platform's adapter needs to be built (no connection is made).
_ADAPTER_DEFAULTS: dict[str, dict[str, Any]] = {
    "console": {},
    "telegram": {"token_env": _TOKEN_ENV},
    "discord": {"token_env": _TOKEN_ENV},
    "mastodon": {"token_env": _TOKEN_ENV, "base_url": "https://mastodon.invalid"},
    "bluesky": {"password_env": _TOKEN_ENV, "handle": "persona.bsky.invalid", "base_url": "https://bsky.invalid"},
}


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class TestSource:
    """One parsed and validated test file."""

    __test__ = False

    source: Source
    model: TestFile

    @property
    def file(self) -> str:
        """The file's name as given."""
        return self.source.file


@dataclass(frozen=True)
class Case:
    """One test with its file's defaults applied, checked against the personas."""

    __test__ = False

    source: Source
    index: int
    name: str
    personas: tuple[str, ...]
    platform: str
    adapter: Mapping[str, Any]
    user: UserSpec
    start: datetime
    seed: int
    state: Mapping[str, Mapping[str, Any]]
    steps: tuple[Step, ...]

    @property
    def path(self) -> DataPath:
        """The test's data path in its file."""
        return ("tests", self.index)

    @property
    def where(self) -> str:
        """``file:line`` of the test."""
        return f"{self.source.file}:{self.source.where(self.path).line}"


def test_files(paths: Sequence[str | Path]) -> list[Path]:
    """Test files under ``paths``: folders are searched recursively for ``*.yaml`` and ``*.yml``."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted({*p.rglob("*.yaml"), *p.rglob("*.yml")}))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def load_test_file(path: Path) -> TestSource:
    """Parse and validate one test file; :class:`PersonaeError` with positioned problems."""
    source = load_yaml(path)
    if not is_test_file(source.data):
        what = "a persona" if isinstance(source.data, dict) and "persona" in source.data else "a test file"
        if isinstance(source.data, dict) and "timeline" in source.data:
            what = "a timeline"
        message = "not a test file: it needs a 'tests:' list at the top level" + (
            f" (this looks like {what})" if what != "a test file" else ""
        )
        raise PersonaeError([source.diagnostic((), message)])
    model = validate(source, TestFile)
    assert isinstance(model, TestFile)
    return TestSource(source, model)


# --------------------------------------------------------------------------- rules


def actions_of(persona: Persona) -> list[Action]:
    """Every rule of ``persona``: replies, fallback, event reactions, schedule entries, the ``limits`` notice.

    In file order.
    """
    found = [*persona.replies, *persona.events.values(), *(s.action for s in persona.schedule)]
    if persona.fallback is not None:
        found.append(persona.fallback)
    if persona.limits is not None:
        found.append(persona.limits.notice)
    return sorted(found, key=lambda a: _line_of(a.where))


def _line_of(where: str) -> int:
    _, _, line = where.rpartition(":")
    return int(line) if line.isdigit() else 0


def _file_of(where: str) -> str:
    return where.rpartition(":")[0]


def describe(persona: Persona, where: str) -> str:
    """``replies[3] (personas/philae.yaml:120)`` for the rule at ``where``."""
    for a in actions_of(persona):
        if a.where == where:
            return f"{a.name} ({where})"
    return where


def resolve_rule(ref: str | int, candidates: Sequence[Persona]) -> tuple[Persona, Action] | str:
    """The rule ``ref`` names among ``candidates`` (first match wins), or why none is found.

    ``ref`` is a rule name (``replies[3]``, ``events.launch``, ``fallback``,
    ``schedule[0]``), ``file:line`` (a line inside the rule), or a bare line.
    """
    text = str(ref).strip()
    file_part, colon, line_part = text.rpartition(":")
    line: int | None = None
    if text.isdigit():
        line, file_part = int(text), ""
    elif colon and line_part.isdigit():
        line = int(line_part)
    if line is None:
        for p in candidates:
            for a in actions_of(p):
                if a.name == text:
                    return p, a
        names = [a.name for p in candidates for a in actions_of(p)]
        return (
            f"unknown rule '{text}'{did_you_mean(text, names)} (rules are named like replies[0], events.NAME, fallback)"
        )
    for p in candidates:
        if file_part and not _same_file(file_part, p.file):
            continue
        chosen: Action | None = None
        for a in actions_of(p):
            if _line_of(a.where) <= line:
                chosen = a
        if chosen is not None and line <= _last_line(p.file):
            return p, chosen
    where = f" in {file_part}" if file_part else ""
    return f"no rule{where} at line {line} of {', '.join(p.id for p in candidates)}"


def _last_line(file: str) -> int:
    """How many lines ``file`` has (a line past its end is inside no rule)."""
    try:
        with open(file, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _same_file(ref: str, file: str) -> bool:
    a, b = Path(ref), Path(file)
    return a == b or (a.name == b.name and (len(a.parts) == 1 or str(b).endswith(str(a))))


# --------------------------------------------------------------------------- checking


def _at(test: TestSource, index: int, key: str) -> tuple[DataPath, Any]:
    """Where a setting of test ``index`` is written (in the test, else at the top), and its value."""
    case = test.model.tests[index]
    if getattr(case, key) not in (None, {}, []):
        return ("tests", index, key), getattr(case, key)
    return (key,), getattr(test.model, key)


def check(test: TestSource, personas: Mapping[str, Persona]) -> tuple[list[Case], list[Diagnostic]]:
    """Apply the file's defaults to each test and check every name it uses against ``personas``."""
    src = test.source
    diags: list[Diagnostic] = []
    cases: list[Case] = []
    for i, t in enumerate(test.model.tests):
        at: DataPath = ("tests", i)
        ppath, ids = _at(test, i, "personas")
        ids = list(ids or personas)
        unknown = False
        for j, pid in enumerate(ids):
            if pid not in personas:
                hint = did_you_mean(pid, personas) or f" (loaded: {', '.join(sorted(personas)) or 'none'})"
                diags.append(src.diagnostic((*ppath, j), f"unknown persona '{pid}'{hint}"))
                unknown = True
        if unknown or not ids:
            if not ids:
                diags.append(src.diagnostic(at, "no personas loaded (see --personas)"))
            continue
        members = [personas[p] for p in ids]
        platform = t.platform or test.model.platform or "console"
        apath, options = _at(test, i, "adapter")
        problem = _adapter_problem(platform, dict(options or {}))
        if problem is not None:
            key, message = problem
            diags.append(src.diagnostic((*apath, key) if key else apath, message, key=bool(key)))
        for pid, values in t.state.items():
            sp: DataPath = (*at, "state", pid)
            if pid not in ids:
                diags.append(
                    src.diagnostic(sp, f"persona '{pid}' is not in this test{did_you_mean(pid, ids)}", key=True)
                )
                continue
            diags.extend(_state_keys(src, sp, personas[pid], values))
        for k, step in enumerate(t.steps):
            diags.extend(_check_step(src, (*at, "steps", k), step, members))
        _, user = _at(test, i, "user")
        _, start = _at(test, i, "start")
        _, seed = _at(test, i, "seed")
        cases.append(
            Case(
                src,
                i,
                t.name,
                tuple(ids),
                platform,
                dict(options or {}),
                user or UserSpec(),
                (start or DEFAULT_START).astimezone(UTC),
                int(seed or 0),
                {pid: dict(v) for pid, v in t.state.items()},
                tuple(t.steps),
            )
        )
    return cases, diags


def _state_keys(src: Source, path: DataPath, persona: Persona, values: Mapping[str, Any]) -> list[Diagnostic]:
    out = []
    for key in values:
        scope, _, name = key.rpartition(".")
        declared = persona.chat_state if scope == "chat" else persona.state
        section = "chat_state" if scope == "chat" else "state"
        if scope not in ("", "chat") or name not in declared:
            hint = did_you_mean(name, declared) or f" ({persona.id} declares: {', '.join(declared) or 'nothing'})"
            out.append(src.diagnostic((*path, key), f"unknown {section} key '{key}' of {persona.id}{hint}", key=True))
    return out


def _check_step(src: Source, path: DataPath, step: Step, members: Sequence[Persona]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    ids = [p.id for p in members]
    by_id = {p.id: p for p in members}
    if step.to is not None and step.to not in by_id:
        out.append(
            src.diagnostic((*path, "to"), f"persona '{step.to}' is not in this test{did_you_mean(step.to, ids)}")
        )
        return out
    target = by_id[step.to] if step.to else members[0]
    if step.event is not None and not any(step.event in p.events for p in members):
        known = sorted({e for p in members for e in p.events})
        hint = did_you_mean(step.event, known) or f" (handled: {', '.join(known) or 'none'})"
        out.append(src.diagnostic((*path, "event"), f"no persona of this test handles event '{step.event}'{hint}"))
    if step.state:
        out.extend(_state_keys(src, (*path, "state"), target, step.state))
    entries: list[tuple[DataPath, Expectation]] = []
    if step.expect is not None:
        entries = [((*path, "expect", n), e) for n, e in enumerate(step.expect)]
    else:
        found = step.expectations()
        if found:
            entries = [(path, found[0])]
    for epath, e in entries:
        speakers = members
        if e.from_ is not None:
            if e.from_ not in by_id:
                hint = did_you_mean(e.from_, ids)
                out.append(src.diagnostic((*epath, "from"), f"persona '{e.from_}' is not in this test{hint}"))
                continue
            speakers = [by_id[e.from_]]
        if e.rule is not None and not str(e.rule).startswith("builtin:"):
            found_rule = resolve_rule(e.rule, speakers)
            if isinstance(found_rule, str):
                out.append(src.diagnostic((*epath, "rule"), found_rule))
    return out


def _adapter_problem(platform: str, options: dict[str, Any]) -> tuple[str, str] | None:
    from personae.adapters.base import OptionError

    if not options:
        # The test defaults are valid: building the adapter only to check them would import its
        # client library (atproto alone takes over a second), on every lint of a test file.
        return None
    try:
        _build_adapter(platform, "check", options)
    except OptionError as exc:
        return exc.key, str(exc)
    return None


def _build_adapter(platform: str, persona: str, options: Mapping[str, Any]) -> Any:
    """The platform's real adapter, configured but never started (so no network)."""
    from personae.adapters.base import AdapterConfig, OptionError

    from .config import adapter_class

    cls = adapter_class(platform)
    merged = {**_ADAPTER_DEFAULTS[platform], **options}
    if cls.option_names is not None:
        for key in options:
            if key not in cls.option_names or key == "token_env":
                raise OptionError(key, f"unknown option '{key}' for {platform}{did_you_mean(key, cls.option_names)}")
    return cls.create(AdapterConfig(f"test-{platform}-{persona}", persona, options=merged), _TEST_ENVIRON)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Said:
    """One message that followed a step, as the platform would get it."""

    persona: str
    text: str
    rule: str
    where: str
    pieces: int
    event: str | None


@dataclass(frozen=True)
class Failure:
    """A step that did not do what it expected (or a persona error during it)."""

    step: int
    path: DataPath
    message: str
    #: What ``--update`` can rewrite (``None``: nothing it can fix, such as a persona error).
    fixable: bool = True


@dataclass
class CaseResult:
    """What one test did."""

    case: Case
    failures: list[Failure] = field(default_factory=list)
    said: list[list[Said]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    raised: set[str] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether every step did what it expected."""
        return not self.failures


async def run_case(case: Case, personas: Mapping[str, Persona]) -> CaseResult:
    """Run one test on a fresh bot with a virtual clock and no database."""
    from ..timing.clock import VirtualClock
    from .runtime import Bot, BotOptions

    t0 = time.perf_counter()
    result = CaseResult(case)
    members = {pid: personas[pid] for pid in case.personas}
    adapters = {pid: _build_adapter(case.platform, pid, case.adapter) for pid in case.personas}
    captured: list[Outgoing] = []
    clock = VirtualClock(case.start, None)
    bot = Bot(
        members,
        list(adapters.values()),
        store=None,
        clock=clock,
        options=BotOptions(seed=case.seed, persist_state=False, run="test"),
        transcript=captured.append,
    )
    engine = bot.engine
    chat_key = f"{case.platform}:{CHAT_ID}"
    for pid, values in case.state.items():
        for key, value in values.items():
            scope, _, name = key.rpartition(".")
            (engine.chat_state(pid, chat_key) if scope == "chat" else engine.state(pid))[name] = value
    bot.start_schedules(after=case.start, cast=frozenset(case.personas))
    user = case.user
    person = User(user.id or f"{case.platform}:{user.name}", user.name, None, user.admin)
    for k, step in enumerate(case.steps):
        path: DataPath = (*case.path, "steps", k)
        captured.clear()
        verdicts: list[Verdict] = []
        target = step.to or case.personas[0]
        with engine.problems_of() as problems:
            if step.say is not None:
                incoming = Incoming(
                    target,
                    case.platform,
                    Chat(CHAT_ID, "private"),
                    person,
                    step.say,
                    message_id=str(k + 1),
                    adapter=adapters[target].name,
                )
                verdicts = engine.explain(incoming)
                await bot.on_message(incoming)
            elif step.event is not None:
                result.raised.add(step.event)
                event = Event(step.event, clock.now(), dict(step.data), "test", None, 0, f"test|{k}:{step.event}")
                await bot.deliver(await engine.dispatch(event))
            elif step.advance is not None:
                await _advance(bot, clock, step.advance)
        said = [_said(o, members, adapters) for o in captured]
        result.raised.update(s.event for s in said if s.event)
        result.said.append(said)
        state = _state_view(engine, target, chat_key, step.state or {})
        result.states.append(state)
        for p in problems:
            result.failures.append(Failure(k, path, f"{p.where}: persona error: {p.message}", fixable=False))
        result.failures.extend(_compare(case, k, path, step, said, state, verdicts, members))
    result.seconds = time.perf_counter() - t0
    return result


async def _advance(bot: Any, clock: Any, by: timedelta) -> None:
    """Move the mission clock by ``by``, running every delayed reaction and schedule due on the way."""
    target = clock.now() + by

    async def nothing() -> None:
        return None

    # A marker just after the target: the scheduler stops before it instead of waiting for more work.
    marker = bot.scheduler.call_at(target + timedelta(microseconds=1), nothing, recurring=True)
    await bot.scheduler.run(until=target)
    marker.cancel()
    clock.jump(target)


def _said(o: Outgoing, members: Mapping[str, Persona], adapters: Mapping[str, Any]) -> Said:
    from ..delivery.split import split_message

    adapter = adapters[o.persona]
    limits = adapter.limits
    chat = o.chat if o.chat is not None else next(iter(adapter.channels), "")
    room = limits.max_length - adapter.reserve(chat)
    pieces = len(split_message(o.text, room, limits.dialect, limits.measure))
    rule = o.rule
    persona = members.get(o.persona)
    if persona is not None:
        for a in actions_of(persona):
            if a.where == o.rule:
                rule = a.name
    return Said(o.persona, o.text, rule, o.rule, pieces, o.event)


def _state_view(engine: Any, persona: str, chat_key: str, wanted: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in wanted:
        scope, _, name = key.rpartition(".")
        values = engine.chat_state(persona, chat_key) if scope == "chat" else engine.state(persona)
        out[key] = values.get(name)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _show(text: str) -> str:
    return repr(text) if len(text) <= 300 else repr(text[:297] + "...")


def _step_label(step: Step) -> str:
    if step.say is not None:
        return f"say {_show(step.say)}"
    if step.event is not None:
        return f"event {step.event}"
    return f"advance {step.advance}"


def _compare(
    case: Case,
    k: int,
    path: DataPath,
    step: Step,
    said: list[Said],
    state: Mapping[str, Any],
    verdicts: list[Verdict],
    members: Mapping[str, Persona],
) -> list[Failure]:
    out: list[Failure] = []
    label = f"step {k + 1} ({_step_label(step)})"
    for key, want in (step.state or {}).items():
        got = state.get(key)
        if not _same(got, want):
            out.append(Failure(k, (*path, "state", key), f"{label}: state {key} is {got!r}, expected {want!r}"))
    expected = step.expectations()
    if expected is None:
        return out
    if len(expected) != len(said):
        got = "\n".join(f"    {_said_line(s, members)}" for s in said) or "    (nothing)"
        message = f"{label}: expected {len(expected)} message(s), got {len(said)}:\n{got}"
        why = _why(step, None, said, verdicts, members, case)
        out.append(Failure(k, path, message + (f"\n  why: {why}" if why else "")))
        return out
    for n, (e, s) in enumerate(zip(expected, said, strict=True)):
        epath = (*path, "expect", n) if step.expect is not None else path
        problems: list[str] = []
        if e.from_ is not None and e.from_ != s.persona:
            problems.append(f"from: expected {e.from_}, said by {s.persona}")
        text_problem = _text_problem(e, s.text)
        if text_problem:
            problems.append(text_problem)
        if e.rule is not None and not rule_matches(e.rule, s, members):
            problems.append(f"rule: expected {e.rule}, answered by {_rule_label(s, members)}")
        if e.pieces is not None and e.pieces != s.pieces:
            problems.append(f"pieces: expected {e.pieces}, {s.pieces} on {case.platform}")
        if problems:
            details = "".join(f"\n    {p}" for p in problems)
            message = f"{label}:{details}\n    actual:   {_said_line(s, members)}"
            why = _why(step, e, [s], verdicts, members, case)
            out.append(Failure(k, epath, message + (f"\n  why: {why}" if why else "")))
    return out


def _text_problem(e: Expectation, text: str) -> str | None:
    import re

    if e.reply is not None and text != e.reply:
        return f"expected: {_show(e.reply)}"
    if e.match is not None and re.search(e.match, text) is None:
        return f"expected a match of /{e.match}/"
    if e.one_of is not None and text not in e.one_of:
        options = "".join(f"\n      {_show(o)}" for o in e.one_of)
        return f"expected one of:{options}"
    return None


def _said_line(s: Said, members: Mapping[str, Persona]) -> str:
    return f"{_show(s.text)}  ({s.persona}, {_rule_label(s, members)})"


def _rule_label(s: Said, members: Mapping[str, Persona]) -> str:
    return f"{s.rule} at {s.where}" if s.rule != s.where else s.where


def rule_matches(ref: str | int, s: Said, members: Mapping[str, Persona]) -> bool:
    """Whether message ``s`` came from the rule ``ref`` names."""
    text = str(ref)
    if text.startswith("builtin:"):
        return text == s.where
    persona = members.get(s.persona)
    if persona is None:
        return False
    found = resolve_rule(ref, [persona])
    return not isinstance(found, str) and found[1].where == s.where


def _why(
    step: Step,
    e: Expectation | None,
    said: Sequence[Said],
    verdicts: Sequence[Verdict],
    members: Mapping[str, Persona],
    case: Case,
) -> str:
    """Why the expected rule did not answer: no trigger match, condition false, shadowed; or a delay."""
    target = members[step.to or case.personas[0]]
    if e is not None and e.rule is not None and not str(e.rule).startswith("builtin:"):
        found = resolve_rule(e.rule, [members[e.from_]] if e.from_ else list(members.values()))
        if isinstance(found, str):
            return found
        persona, action = found
        if step.say is not None:
            for v in verdicts:
                if v.where == action.where:
                    return _verdict_text(v, verdicts, persona)
            if action is persona.fallback:
                return "the fallback answers only when no rule does"
            if persona.limits is not None and action is persona.limits.notice:
                limit = persona.limits
                return (
                    f"the limits notice is said once, at the first message past {limit.messages} "
                    f"per {describe_remaining(limit.per)} from one user"
                )
            return f"{action.name} is not a reply rule: a message never fires it"
        if not action.name.startswith(("events.", "schedule[")):
            return f"{action.name} answers messages; an event or the clock never fires it"
        if action.delay:
            return f"{action.name} has a delay of {action.delay}: add an 'advance' step"
        if action.cooldown is not None:
            rest = f"its {describe_remaining(action.cooldown.duration)} cooldown had not run out since it last posted"
            if action.condition is None:
                return f"{action.name} did not post: {rest}"
            return f"{action.name} did not post: its condition was false, or {rest}"
        if action.condition is not None:
            reaction = persona.spec.events.get(action.name.removeprefix("events."))
            condition = f" '{reaction.if_}'" if reaction is not None and reaction.if_ else ""
            return f"{action.name} did not post: its condition{condition} was false"
        return f"{action.name} did not post"
    if step.say is None:
        return ""
    # No rule named: show the rules whose trigger matched but which did not answer.
    skipped = [v for v in verdicts if v.outcome not in ("no trigger match", "answers", "shadowed")]
    lines = [f"{v.rule} ({v.where}): {v.outcome}{_condition_of(target, v)}" for v in skipped[:5]]
    if not said and not any(v.outcome == "answers" for v in verdicts) and target.fallback is None:
        lines.append(f"no rule of {target.id} matched and it has no fallback")
    return "; ".join(lines)


def _verdict_text(v: Verdict, verdicts: Sequence[Verdict], persona: Persona) -> str:
    if v.outcome == "shadowed":
        first = next((w for w in verdicts if w.outcome == "answers"), None)
        return f"{v.rule} ({v.where}) is shadowed by an earlier rule" + (
            f": {first.rule} ({first.where}) answers first" if first else ""
        )
    if v.outcome == "answers":
        return f"{v.rule} ({v.where}) answers (the text or count differs)"
    return f"{v.rule} ({v.where}): {v.outcome}{_condition_of(persona, v)}"


def _condition_of(persona: Persona, v: Verdict) -> str:
    if not v.outcome.startswith("condition"):
        return ""
    for i, rule in enumerate(persona.spec.replies):
        if f"replies[{i}]" == v.rule and rule.if_:
            return f" (if: {rule.if_})"
    return ""


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class Coverage:
    """What the tests did not exercise: rules, events, phrase options."""

    rules: list[tuple[Persona, Action]]
    events: list[tuple[Persona, str]]
    phrases: list[tuple[Persona, str, int]]
    totals: tuple[int, int, int]


def coverage(personas: Mapping[str, Persona], results: Iterable[CaseResult]) -> Coverage:
    """Rules that never answered or posted, events never raised, phrase options never said."""
    results = list(results)
    used = {s.where for r in results for step in r.said for s in step}
    raised = {e for r in results for e in r.raised}
    texts = [s.text for r in results for step in r.said for s in step]
    rules = [(p, a) for p in personas.values() for a in actions_of(p)]
    events = [(p, name) for p in personas.values() for name in p.events]
    phrases = [
        (p, bank, i) for p in personas.values() for bank, opts in p.spec.phrases.items() for i in range(len(opts))
    ]
    return Coverage(
        [(p, a) for p, a in rules if a.where not in used],
        [(p, name) for p, name in events if name not in raised],
        [(p, bank, i) for p, bank, i in phrases if not _phrase_said(p.spec.phrases[bank][i], texts)],
        (len(rules), len(events), len(phrases)),
    )


def _phrase_said(source: str, texts: Sequence[str]) -> bool:
    """Whether some text says phrase ``source``: its literal parts in order, anything where its templates are."""
    import re

    parts = re.split(r"\{\{.*?\}\}|\{%.*?%\}", source, flags=re.S)
    pattern = re.compile(".*?".join(re.escape(p) for p in parts), re.S)
    return any(pattern.search(t) for t in texts)


__all__ = [
    "Case",
    "CaseResult",
    "Coverage",
    "Failure",
    "Said",
    "TestSource",
    "actions_of",
    "check",
    "coverage",
    "describe",
    "format_path",
    "load_test_file",
    "resolve_rule",
    "rule_matches",
    "run_case",
    "test_files",
]
