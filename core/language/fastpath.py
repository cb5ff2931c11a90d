"""Render the simplest templates without entering Jinja, with Jinja's exact result.

Most persona templates are literal text with a few lookups in plain dicts:
``"Touchdown at {{ event.site }}!"``, ``"{{ state.count + 1 }}"``. Jinja
spends most of a render of those building its context and going through the
sandbox's attribute checks. A :class:`Plan` is compiled from the template's
own parse tree (so whitespace control and comments are already applied) and
accepts only what it can evaluate exactly as Jinja would:

* literal text;
* a context name, then ``.key`` or ``['key']`` steps through values whose
  type is exactly ``dict`` (for a key that is not also a ``dict`` attribute:
  Jinja's ``.items`` means the method, not the key);
* number and string constants, and ``+`` / ``-`` on ``int`` and ``float``.

Anything else (a missing key, a value of another type, a failing ``str()``,
a value that is not a string, number, boolean or ``None``, an output past the
render budget's :data:`~personae.language.budget.MAX_OUTPUT`) makes
:meth:`Plan.render` return ``None`` and the caller renders with Jinja, which
gives the real result or the real error (the budget is Jinja's to enforce). The sandbox is not bypassed:
it guards attribute access and calls, and a plan makes neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes
from markupsafe import escape

from .budget import MAX_OUTPUT

Getter = Callable[[Mapping[str, Any]], Any]

#: Returned by a getter that cannot give Jinja's answer.
MISSING: Any = object()

_NUMBERS = (int, float)
#: Values whose text is their own size or a number's: a list or dict is measured by Jinja first.
_SCALARS = (str, int, float, bool, type(None))
#: Names Jinja binds itself whatever the context holds.
_SPECIAL_NAMES = frozenset({"self", "loop", "super", "caller", "varargs", "kwargs"})


def _lookup(name: str, keys: tuple[str, ...]) -> Getter:
    def get(ctx: Mapping[str, Any]) -> Any:
        value = ctx.get(name, MISSING)
        for key in keys:
            if type(value) is not dict:
                return MISSING
            value = value.get(key, MISSING)
        return value

    return get


def _constant(value: Any) -> Getter:
    return lambda ctx: value


def _arithmetic(subtract: bool, left: Getter, right: Getter) -> Getter:
    def get(ctx: Mapping[str, Any]) -> Any:
        a, b = left(ctx), right(ctx)
        if type(a) not in _NUMBERS or type(b) not in _NUMBERS:
            return MISSING  # bools, strings, None: Jinja's own rules apply
        return a - b if subtract else a + b

    return get


def _getter(node: nodes.Node) -> Getter | None:
    keys: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node.arg, nodes.Const) and type(node.arg.value) is str:
            key = node.arg.value
        else:
            return None
        if isinstance(node, nodes.Getattr) and hasattr(dict, key):
            return None
        keys.append(key)
        node = node.node
    if isinstance(node, nodes.Name):
        if node.name in _SPECIAL_NAMES:
            return None
        return _lookup(node.name, tuple(reversed(keys)))
    if keys:
        return None
    if isinstance(node, nodes.Const) and type(node.value) in (int, float, str):
        return _constant(node.value)
    if isinstance(node, nodes.Add | nodes.Sub):
        left, right = _getter(node.left), _getter(node.right)
        if left is None or right is None:
            return None
        return _arithmetic(isinstance(node, nodes.Sub), left, right)
    return None


class Plan:
    """A template reduced to literal strings and getters."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[str | Getter, ...]) -> None:
        self.parts = parts

    @classmethod
    def compile(cls, tree: nodes.Template) -> Plan | None:
        """The plan for a parsed template, or ``None`` when it needs Jinja."""
        parts: list[str | Getter] = []
        for output in tree.body:
            if not isinstance(output, nodes.Output):
                return None
            for node in output.nodes:
                if isinstance(node, nodes.TemplateData):
                    parts.append(node.data)
                    continue
                getter = _getter(node)
                if getter is None:
                    return None
                parts.append(getter)
        return cls(tuple(parts))

    def render(self, ctx: Mapping[str, Any], finalize: Callable[[Any], Any] | None, autoescape: bool) -> str | None:
        """The rendered text, or ``None`` when only Jinja can say."""
        out: list[str] = []
        try:
            for part in self.parts:
                if type(part) is str:
                    out.append(part)
                    continue
                value = part(ctx)  # type: ignore[operator]
                if value is MISSING or not isinstance(value, _SCALARS):
                    return None
                # The conversions Jinja's generated code applies to an {{ expression }}.
                if autoescape:
                    out.append(str(escape(value)))
                elif finalize is not None:
                    out.append(str(finalize(value)))
                else:
                    out.append(str(value))
        except Exception:  # a value whose str() fails: Jinja reports it
            return None
        text = "".join(out)
        return text if len(text) <= MAX_OUTPUT else None


__all__ = ["MISSING", "Plan"]
