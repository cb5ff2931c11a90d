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

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

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


#: The longest string or list an expression may build (a message is at most a few thousand characters).
MAX_SIZE = 100_000
_FORMAT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])")


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    return sum(len(x) if isinstance(x, str) else 1 for x in value)


def too_large(operator: str, left: Any, right: Any) -> bool:
    """Whether ``left operator right`` would build a value past :data:`MAX_SIZE` (``*``, ``**``, ``%``)."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(n, int) and _size(seq) * n > MAX_SIZE:
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
        args = right if isinstance(right, tuple) else (right,)
        for m in _FORMAT_SPEC.finditer(left):
            if m.group(3) == "%":
                continue  # a literal percent sign
            for n in m.group(1, 2):
                if n == "*" and any(isinstance(a, int) and abs(a) > MAX_SIZE for a in args):
                    return True
                if n and n != "*" and int(n) > MAX_SIZE:
                    return True
    return False


def too_large_message(operator: str) -> str:
    """What is said when :func:`too_large` refuses ``operator`` (at load or at render)."""
    return f"'{operator}' would build a value larger than {MAX_SIZE:,} characters"


class _Environment(ImmutableSandboxedEnvironment):
    """Sandboxed, strict, and immutable: templates cannot mutate what they are given.

    The sandbox guards attributes and calls; it lets ``'a' * 10**9`` allocate a
    gigabyte (at compile time even, when Jinja folds constants). Repetition,
    powers and ``%`` formatting are checked here, and refused past
    :data:`MAX_SIZE`.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """``left operator right``, unless the result would be absurdly large."""
        if too_large(operator, left, right):
            raise SecurityError(too_large_message(operator))
        return super().call_binop(context, operator, left, right)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one plain dict, not a ``ChainMap`` over the environment's.

        Jinja iterates a template's globals twice per render (to build the
        context and its key set); through a ``ChainMap`` that was a third of
        the cost of rendering a short message. Our globals are fixed before
        any template is compiled, so a snapshot is exact.
        """
        return {**self.globals, **(d or {})}


def _make_env(dialect: Dialect) -> _Environment:
    env = _Environment(
        undefined=StrictUndefined,
        autoescape=dialect == "html",
        finalize=_FINALIZE[dialect],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
        cache_size=0,
    )
    # lipsum() draws from an unseeded random generator: a replay would not be repeatable.
    env.globals.pop("lipsum", None)
    return env


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
        return self.env().compile_expression(source, undefined_to_none=False)


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
        env = templates.env("plain")
        if tree is None:
            tree = env.parse(source)
        plan = Plan.compile(tree)
        if self.constant:
            # The text as Jinja's lexer leaves it (a trailing newline dropped, CRLF as
            # LF), as for text with a {{ }}; parsed, never compiled: replies are many.
            assert plan is not None  # text without "{" is literal text
            self._text = plan.render({}, None, False) or ""
        else:
            self._text = ""
            self._plan = plan
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
            return str(tpl.render(context))
        except SecurityError as exc:
            raise TemplateRenderError(f"blocked by the sandbox: {exc}") from None
        except UndefinedError as exc:
            raise TemplateRenderError(f"undefined: {exc}") from None
        except TemplateError as exc:
            raise TemplateRenderError(str(exc)) from None
        except (ArithmeticError, ValueError, TypeError, LookupError) as exc:
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None


__all__ = [
    "DIALECTS",
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
