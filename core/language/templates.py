"""Jinja2 templates in a sandbox: compiled once, rendered per platform dialect.

User text only ever reaches a template as a *value* (``message.text``); it is
never compiled, so ``{{ 7*7 }}`` typed by a user comes back literally.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from jinja2 import (
    Environment,
    StrictUndefined,
    TemplateSyntaxError,
    nodes,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.runtime import Context, LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from .budget import (
    FILTER_SIZES,
    MAX_ITERATIONS,
    MAX_OUTPUT,
    MAX_SIZE,
    METHOD_SIZES,
    STRINGIFYING,
    BudgetExceeded,
    Meter,
    OperationRefused,
    counted,
    current,
    metered,
    predicted,
    printf_size,
    size,
    spec_numbers,
    text_size,
    too_large_message,
)
from .fastpath import Plan

Dialect = Literal["plain", "html", "markdown", "social"]
DIALECTS: tuple[Dialect, ...] = ("plain", "html", "markdown", "social")

_MD_SPECIAL = frozenset("\\*_~`|>#[]()-+!.{}<@:")


def escape_markdown(text: str) -> str:
    """Escape Markdown (Discord flavour) so user-derived text renders literally."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


#: Put after an ``@`` in data on social networks (Mastodon): invisible, and no longer a mention.
WORD_JOINER = "\u2060"
_AT_SIGNS = str.maketrans({"@": "@" + WORD_JOINER, "\uff20": "\uff20" + WORD_JOINER})


def defuse_mentions(text: str) -> str:
    """``text`` with every ``@`` made unable to start a mention (``@user``, ``@user@instance``)."""
    return text.translate(_AT_SIGNS) if "@" in text or "\uff20" in text else text


class TemplateRenderError(Exception):
    """A template failed at render time (undefined name, sandbox violation, bad value)."""


def days_since(start: str | date | datetime, now: datetime) -> int:
    """Whole days from ``start`` (an ISO date or datetime) to ``now``."""
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if not isinstance(start, datetime):
        start = datetime(start.year, start.month, start.day, tzinfo=UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return (now - start).days


def _finalize_markdown(value: Any) -> Any:
    # finalize runs on every {{ expression }} output: data gets escaped, literal
    # template text (the author's own markup) does not.
    if isinstance(value, Markup):
        return value
    return escape_markdown(value if isinstance(value, str) else str(value))


def _finalize_social(value: Any) -> Any:
    # Plain text where user-derived data cannot mention (notify) a third party:
    # only literal template text, the persona author's, may.
    if isinstance(value, Markup):
        return value
    return defuse_mentions(value if isinstance(value, str) else str(value))


_FINALIZE: dict[Dialect, Callable[[Any], Any] | None] = {
    "plain": None,
    "html": None,
    "markdown": _finalize_markdown,
    "social": _finalize_social,
}


def too_large(operator: str, left: Any, right: Any) -> bool:
    """Whether ``left operator right`` would build a value past :data:`MAX_SIZE` (``+``, ``*``, ``**``, ``%``)."""
    if operator == "+":
        return isinstance(left, str | bytes | list | tuple) and size(left) + size(right) > MAX_SIZE
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            return left.bit_length() + right.bit_length() > 8 * MAX_SIZE
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int) and size(seq) * n > MAX_SIZE:
                return True
        return False
    if operator == "**":
        return (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and left.bit_length() * right > 8 * MAX_SIZE
        )
    if operator == "%" and isinstance(left, str):
        return printf_size(left, right) > MAX_SIZE
    return False


_LOOP = nodes.EnvironmentAttribute("counted")


def _literal_text(body: list[nodes.Node]) -> int:
    """Characters of template text one pass over ``body`` can write (text of nested loops is theirs)."""
    total = 0
    stack: list[nodes.Node] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif not isinstance(node, nodes.For):
            stack.extend(node.iter_child_nodes())
    return total


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with every loop counted and every ``~`` checked before it joins."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # The iterable goes through counted(): each iteration is metered, with the
        # template text its body writes (a loop in a macro builds its text unseen).
        iterable = nodes.Call(_LOOP, [node.iter, nodes.Const(_literal_text(node.body))], [], None, None)
        iterable.set_lineno(node.iter.lineno)
        loop = nodes.For(node.target, iterable, node.body, node.else_, node.test, node.recursive)
        loop.set_lineno(node.lineno)
        super().visit_For(loop, frame)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # As Jinja's own, but the parts go through the environment, which refuses them if their text is too large.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.concat_checked({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _checked(name: str, value: Any) -> Any:
    """``value`` (just built by ``name``), if it is not too large; accounted to the current render."""
    n = size(value)
    if n > MAX_SIZE:
        raise OperationRefused(too_large_message(name))
    meter = current()
    if meter is not None and n:
        meter.spend(n)
    return value


#: Filters whose bound reads every item of the value.
_MATERIALIZED = frozenset({"join", "sum"})


def _metered_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a filter that checks sizes before and after, and is never run at compile time.

    Jinja folds filters with constant arguments while compiling (so
    ``'%1000000000s'|format('x')`` would allocate gigabytes in ``lint``);
    it never folds a filter that wants the render context, so the wrapper asks for it.
    """
    wants = getattr(fn, "jinja_pass_arg", None)
    sizes = FILTER_SIZES.get(name)
    stringifies = name in STRINGIFYING

    @pass_context
    def metered_filter(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        meter = current()
        if meter is not None:
            meter.check()
        if name in _MATERIALIZED and not isinstance(value, str | list | tuple | Undefined):
            value = list(value)  # measured before use; a generator would be used up
        if stringifies and text_size(value) > MAX_SIZE:
            raise OperationRefused(too_large_message(name))
        if sizes is not None:
            predicted(sizes, name, value, *args, **kwargs)
        if wants is _PASS_CONTEXT:
            result = fn(context, value, *args, **kwargs)
        elif wants is _PASS_EVAL_CONTEXT:
            result = fn(context.eval_ctx, value, *args, **kwargs)
        elif wants is _PASS_ENVIRONMENT:
            result = fn(context.environment, value, *args, **kwargs)
        else:
            result = fn(value, *args, **kwargs)
        return _checked(name, result)

    # Lint evaluates filters on constants with a stand-in context; not those that use it.
    metered_filter.needs_context = wants is _PASS_CONTEXT  # type: ignore[attr-defined]
    return metered_filter


_PASS_CONTEXT = getattr(pass_context(lambda: None), "jinja_pass_arg", None)
_PASS_EVAL_CONTEXT = getattr(pass_eval_context(lambda: None), "jinja_pass_arg", None)
_PASS_ENVIRONMENT = getattr(pass_environment(lambda: None), "jinja_pass_arg", None)


def _range(*args: int) -> range:
    """``range``, no longer than the loop iterations a render may make."""
    r = range(*args)
    if len(r) > MAX_ITERATIONS:
        raise OperationRefused(
            f"range() of {len(r):,} numbers is more than the {MAX_ITERATIONS:,} loop iterations a template may make"
        )
    return r


class _MeteredFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing a field (or a total) past :data:`MAX_SIZE` before building it."""

    def __init__(self, env: Environment, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.total = 0

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion and text_size(value) > MAX_SIZE:
            raise OperationRefused(too_large_message("format"))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.total += text_size(value) + spec_numbers(format_spec)
        if self.total > MAX_SIZE:
            raise OperationRefused(too_large_message("format"))
        return _checked("format", super().format_field(value, format_spec))


class _MeteredEscapeFormatter(_MeteredFormatter, SandboxedEscapeFormatter):
    pass


class _Environment(ImmutableSandboxedEnvironment):
    """Sandboxed, strict, immutable, and on a budget (see :mod:`personae.language.budget`).

    The sandbox guards attributes and calls; it lets ``'a' * 10**9`` allocate a
    gigabyte and ``{% for %}`` loops run forever. Here every operator, filter,
    call, loop iteration, ``~`` and output is checked and metered, and refused
    past the limits.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    code_generator_class = _CodeGenerator
    #: Loops iterate through this (see :class:`_CodeGenerator`).
    counted = staticmethod(counted)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _metered_filter(name, fn) for name, fn in self.filters.items()}
        self.globals["range"] = _range
        # lipsum() draws from an unseeded random generator: a replay would not be repeatable.
        self.globals.pop("lipsum", None)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """``left operator right``, unless the result would be absurdly large."""
        meter = current()
        if meter is not None:
            meter.check()
        if too_large(operator, left, right):
            raise OperationRefused(too_large_message(operator))
        return _checked(operator, super().call_binop(context, operator, left, right))

    def concat_checked(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        """The parts of ``a ~ b ~ ...`` joined, unless their text is too large."""
        total = 0
        for part in parts:
            total += text_size(part)
            if total > MAX_SIZE:
                raise OperationRefused(too_large_message("~"))
        return _checked("~", join(parts))  # type: ignore[no-any-return]

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``__obj`` from the template: counted, nested at most :data:`MAX_DEPTH` deep, sizes checked."""
        if __obj is counted:
            return counted(*args)
        if isinstance(__obj, LoopContext) and args:
            args = (counted(args[0]), *args[1:])  # a recursive loop's next level
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", None) or getattr(__obj, "name", None) or "call"
        sizes = METHOD_SIZES.get(name) if isinstance(owner, str | bytes | int) else None
        if sizes is not None:
            if name == "join" and args and not isinstance(args[0], str | bytes | list | tuple):
                args = (list(args[0]), *args[1:])
            predicted(sizes, name, owner, *args, **kwargs)
        meter = current()
        if meter is None:
            return _checked(name, super().call(__context, __obj, *args, **kwargs))
        meter.enter()
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            meter.leave()
        return _checked(name, result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` / ``format_map`` through a formatter that refuses huge fields before building them."""
        if super().wrap_str_format(value) is None:
            return None
        text: str = value.__self__
        is_map = value.__name__ == "format_map"

        def format_text(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                mapping = args[0]
                args, kwargs = (), mapping
            formatter = (
                _MeteredEscapeFormatter(self, escape=text.escape)
                if isinstance(text, Markup)
                else _MeteredFormatter(self)
            )
            return type(text)(formatter.vformat(text, args, kwargs))

        format_text.__name__ = value.__name__
        return format_text

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one plain dict, not a ``ChainMap`` over the environment's.

        Jinja iterates a template's globals twice per render (to build the
        context and its key set); through a ``ChainMap`` that was a third of
        the cost of rendering a short message. Our globals are fixed before
        any template is compiled, so a snapshot is exact.
        """
        return {**self.globals, **(d or {})}


def _finalize(escape: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """What every ``{{ expression }}`` goes through: its text is measured first, then ``escape`` applies."""

    def finalize(value: Any) -> Any:
        n = len(value) if type(value) is str else text_size(value)
        if n > MAX_SIZE:
            raise OperationRefused(f"an expression's text would be larger than {MAX_SIZE:,} characters")
        meter = current()
        if meter is not None:
            meter.spend(n)
        return escape(value) if escape is not None else value

    return finalize


def _make_env(dialect: Dialect) -> _Environment:
    return _Environment(
        undefined=StrictUndefined,
        autoescape=dialect == "html",
        finalize=_finalize(_FINALIZE[dialect]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
        cache_size=0,
    )


@dataclass
class Templates:
    """Compiles and caches templates for each dialect; one instance per engine/loader."""

    _envs: dict[Dialect, _Environment] = field(default_factory=dict)

    def env(self, dialect: Dialect = "plain") -> _Environment:
        """The sandboxed environment for ``dialect``."""
        env = self._envs.get(dialect)
        if env is None:
            env = self._envs[dialect] = _make_env(dialect)
        return env

    def parse(self, source: str) -> nodes.Template:
        """Parse (for linting); raises ``TemplateSyntaxError``."""
        return self.env().parse(source)

    def text(self, source: str, tree: nodes.Template | None = None) -> Text:
        """A compiled text template (syntax-checked now, compiled per dialect lazily).

        ``tree`` is ``source`` already parsed (the loader parses to lint), so it is not parsed again.
        """
        return Text(source, self, tree)

    def expression(self, source: str) -> Callable[..., Any]:
        """A compiled boolean/value expression for ``if:`` conditions."""
        compiled = self.env().compile_expression(source, undefined_to_none=False)

        def condition(*args: Any, **kwargs: Any) -> Any:
            with metered():
                return compiled(*args, **kwargs)

        return condition


_NEWLINES = re.compile(r"\r\n|\r|\n")


def lex_constant(source: str) -> str:
    """What Jinja renders for ``source`` when it holds no ``{``: the text with every line break
    (CRLF, CR, LF) read as LF and one trailing line break dropped (``keep_trailing_newline`` off)."""
    text = _NEWLINES.sub("\n", source) if "\r" in source else source
    return text[:-1] if text.endswith("\n") else text


class Text:
    """One template string.

    Constant strings skip Jinja entirely, and so do templates that are only
    lookups in plain dicts whenever the lookups succeed (see :mod:`personae.language.fastpath`).
    """

    __slots__ = ("_compiled", "_plan", "_templates", "_text", "constant", "source")

    def __init__(self, source: str, templates: Templates, tree: nodes.Template | None = None) -> None:
        self.source = source
        self._templates = templates
        self.constant = "{" not in source
        self._compiled: dict[Dialect, Any] = {}
        self._plan: Plan | None = None
        if self.constant:
            # Text without "{" holds no tag, so Jinja would only lex it: read it as its lexer
            # does, without building a parse tree per reply (10,000 replies load in a blink).
            self._text = lex_constant(source)
            return
        env = templates.env("plain")
        if tree is None:
            tree = env.parse(source)
        self._text = ""
        self._plan = Plan.compile(tree)
        self._compiled["plain"] = env.from_string(tree)  # compiled from the tree: no third parse

    def render(self, context: Mapping[str, Any], dialect: Dialect = "plain") -> str:
        """Render with ``context``; raise :class:`TemplateRenderError` on failure."""
        if self.constant:
            # The author's own text is markup in every dialect; only data is escaped.
            return self._text
        if self._plan is not None:
            out = self._plan.render(context, _FINALIZE[dialect], dialect == "html")
            if out is not None:
                return out
        return self.render_jinja(context, dialect)

    def render_jinja(self, context: Mapping[str, Any], dialect: Dialect = "plain") -> str:
        """Render through Jinja even when a fast plan exists (the reference the plan must match)."""
        tpl = self._compiled.get(dialect)
        if tpl is None:
            tpl = self._compiled[dialect] = self._templates.env(dialect).from_string(self.source)
        try:
            with metered() as meter:
                return _render(tpl, context, meter)
        except BudgetExceeded as exc:
            raise TemplateRenderError(f"over budget: {exc}") from None
        except SecurityError as exc:
            raise TemplateRenderError(f"blocked by the sandbox: {exc}") from None
        except UndefinedError as exc:
            raise TemplateRenderError(f"undefined: {exc}") from None
        except TemplateError as exc:
            raise TemplateRenderError(str(exc)) from None
        except RecursionError:
            raise TemplateRenderError("over budget: calls nested too deeply (a macro that calls itself?)") from None
        except MemoryError:
            raise TemplateRenderError("over budget: out of memory") from None
        except (ArithmeticError, ValueError, TypeError, LookupError) as exc:
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None


def _render(tpl: Any, context: Mapping[str, Any], meter: Meter) -> str:
    """Render, refusing output past :data:`MAX_OUTPUT`.

    Joined, then measured: every ``{{ expression }}`` is charged to the meter
    as it is written, and so is the template text of each loop iteration, so
    the text is at most the work budget plus the template's own text.
    """
    out = str(tpl.render(context))
    meter.check()  # an earlier budget error that some code swallowed still fails the render
    if len(out) > MAX_OUTPUT:
        meter.fail(BudgetExceeded(f"the template wrote more than {MAX_OUTPUT:,} characters"))
    return out


__all__ = [
    "DIALECTS",
    "MAX_OUTPUT",
    "MAX_SIZE",
    "Dialect",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "Templates",
    "Text",
    "days_since",
    "defuse_mentions",
    "escape_markdown",
    "too_large",
    "too_large_message",
]
