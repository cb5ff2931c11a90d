"""What one template render may spend, and how sizes are known before values are built.

A platform message is at most a few thousand characters, so a template that
needs more than the numbers below is a mistake or an attack. Every render
(and every ``if:`` condition) runs under a :class:`Meter`; going over any
limit raises :class:`BudgetExceeded`, which the caller reports as one error at
the template's ``file:line`` while the bot goes on.

The size functions here never build the value they measure: they are used
before an operation runs (so a refused ``'x'|center(10**9)`` allocates
nothing) and by lint on constant operands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from datetime import date, timedelta
from datetime import time as clock_time
from typing import Any, NoReturn

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

#: The longest string, list or bytes value one operation may build, in characters (or items).
MAX_SIZE = 100_000
#: The most text one render may produce, in characters (64 KiB: many platform messages).
MAX_OUTPUT = 64 * 1024
#: The most characters (and items) all the operations of one render may build together.
MAX_WORK = 1_000_000
#: Loop iterations of one render, over all its loops (nested loops multiply).
MAX_ITERATIONS = 10_000
#: Calls one render may make (macros, methods, functions such as ``range``).
MAX_CALLS = 10_000
#: How deeply calls may nest (a macro calling itself, ``caller()``, recursive loops).
MAX_DEPTH = 50
#: CPU seconds one render may use; the other limits bind first, this one catches what they miss.
MAX_CPU_SECONDS = 0.1


class BudgetExceeded(SecurityError):
    """A render went over one of its limits."""


class OperationRefused(BudgetExceeded):
    """One operation would build a value past :data:`MAX_SIZE` (known from its operands alone)."""


def too_large_message(operation: str) -> str:
    """What is said when ``operation`` is refused for building too large a value."""
    return f"'{operation}' would build a value larger than {MAX_SIZE:,} characters"


class Meter:
    """The running account of one render (shared by the renders it nests, such as ``phrase()``).

    Once over budget it stays over: a later check raises again, so an error
    swallowed by some library code still fails the render.
    """

    __slots__ = ("_clock", "_deadline", "_ticks", "calls", "depth", "exceeded", "iterations", "work")

    def __init__(self, clock: Callable[[], float] = time.thread_time, cpu_seconds: float = MAX_CPU_SECONDS) -> None:
        self._clock = clock
        # CPU time of this thread: another process loading the machine does not count.
        self._deadline = clock() + cpu_seconds
        self._ticks = 0
        self.iterations = 0
        self.calls = 0
        self.depth = 0
        self.work = 0
        self.exceeded: BudgetExceeded | None = None

    def fail(self, exc: BudgetExceeded) -> NoReturn:
        """Record ``exc`` as the reason this render is over budget, and raise it."""
        if self.exceeded is None:
            self.exceeded = exc
        raise exc

    def check(self) -> None:
        """Raise if the render went over budget earlier, or is out of CPU time."""
        if self.exceeded is not None:
            raise self.exceeded
        self._ticks += 1
        if self._ticks & 15 == 0 and self._clock() > self._deadline:
            self.fail(BudgetExceeded(f"the template used more than {MAX_CPU_SECONDS * 1000:.0f} ms of CPU time"))

    def iterate(self, literal: int = 0) -> None:
        """One loop iteration, whose body writes ``literal`` characters of template text."""
        self.check()
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            self.fail(BudgetExceeded(f"the template's loops ran more than {MAX_ITERATIONS:,} iterations"))
        if literal:
            self.spend(literal)

    def spend(self, size: int) -> None:
        """Account for a value of ``size`` characters (or items) just built or about to be."""
        self.work += size
        if self.work > MAX_WORK:
            self.fail(BudgetExceeded(f"the template built more than {MAX_WORK:,} characters in all"))

    def enter(self) -> None:
        """A call starts (paired with :meth:`leave`)."""
        self.check()
        self.calls += 1
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(BudgetExceeded(f"calls nested more than {MAX_DEPTH} deep (a macro that calls itself?)"))
        if self.calls > MAX_CALLS:
            self.fail(BudgetExceeded(f"the template made more than {MAX_CALLS:,} calls"))

    def leave(self) -> None:
        """A call ended."""
        self.depth -= 1


# The meter of the render running in this thread or task. A context variable and
# not an argument: Jinja calls filters, finalize and the sandbox hooks without one.
_CURRENT: ContextVar[Meter | None] = ContextVar("personae_template_meter", default=None)


#: The meter of the render in progress, if any (the bound method itself: it runs on every operation).
current: Callable[[], Meter | None] = _CURRENT.get


class _Metered:
    """The context manager :func:`metered` returns (a class: it runs once per render)."""

    __slots__ = ("_meter", "_token")

    def __init__(self, meter: Meter | None) -> None:
        self._meter = meter
        self._token: Token[Meter | None] | None = None

    def __enter__(self) -> Meter:
        running = _CURRENT.get()
        if running is not None and self._meter is None:
            return running
        meter = self._meter or Meter()
        self._token = _CURRENT.set(meter)
        return meter

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None


def metered(meter: Meter | None = None) -> AbstractContextManager[Meter]:
    """Run the block under a meter: the one already running (a nested render shares it), or a new one."""
    return _Metered(meter)


def counted(iterable: Iterable[Any], literal: int = 0) -> Iterator[Any]:
    """``iterable``, counting each item as a loop iteration of the current render."""
    meter = _CURRENT.get()
    for item in iterable:
        if meter is not None:
            meter.iterate(literal)
        yield item


# --------------------------------------------------------------------------- sizes


def size(value: Any, limit: int = MAX_SIZE) -> int:
    """The size of a built value: the characters of a string, the items of a list and all they hold.

    A list holding the same large list many times (``[[0] * 10000] * 10000``
    is a few kilobytes of references) counts every item it shows: that is
    what sorting, summing or printing it would go through. The walk stops
    once past ``limit``.
    """
    kind = type(value)
    if kind is str or kind is bytes or isinstance(value, str | bytes):
        return len(value)
    if not isinstance(value, list | tuple | set | frozenset | dict):
        return 0
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset | dict):
            total += len(item)
            if total <= limit:
                stack.extend(item.values() if isinstance(item, dict) else item)
        if total > limit:
            break
    return total


def text_size(value: Any, limit: int = MAX_SIZE, indent: int = 0) -> int:
    """About ``len(str(value))``, found without building the string; stops counting once past ``limit``.

    Nested containers are walked (iteratively: data may be deep) and every
    visit counts at least one character, so the walk itself is bounded by
    ``limit``. With ``indent``, each item also counts a line indented by its
    depth (what ``tojson(indent=...)`` and ``pprint`` write).
    """
    kind = type(value)
    if kind is str or isinstance(value, str):
        return len(value)
    if kind is int:
        bits: int = value.bit_length()
        return bits * 3 // 10 + 2
    if kind is float or kind is bool or value is None:
        return 40
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        total += 1 + indent * depth if indent else 0
        if isinstance(item, str | bytes):
            total += 4 * len(item) + 3 if isinstance(item, bytes) else len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2
        elif isinstance(item, float | date | clock_time | timedelta):
            total += 40
        elif isinstance(item, Namespace):
            stack.append((object.__getattribute__(item, "_Namespace__attrs"), depth))
            total += 12
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend((x, depth + 1) for pair in item.items() for x in pair)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend((x, depth + 1) for x in item)
        else:
            total += 64  # a range, a date, a function: a short repr
        if total > limit:
            return total
    return total


def _number(digits: str) -> int:
    # int() refuses strings of more than 4,300 digits; anything past 9 digits is huge here anyway.
    digits = digits.lstrip("0")
    return int(digits) if len(digits) <= 9 else 10**9


def spec_numbers(spec: str) -> int:
    """The sum of the decimal numbers in a format spec (its width and precision)."""
    total, run = 0, ""
    for ch in spec:
        if ch.isdigit() and ch.isascii():
            run += ch
            if len(run) > 10:
                return 10**9
        elif run:
            total += _number(run)
            run = ""
    return total + (_number(run) if run else 0)


def printf_size(fmt: str, args: Any, limit: int = MAX_SIZE) -> int:
    """An upper bound of ``len(fmt % args)``, from the widths, precisions and arguments of ``fmt``.

    A linear scan (a regex with ``\\([^)]*\\)`` is quadratic on ``'%(' * n``);
    a malformed format stops the scan, as ``%`` itself then raises.
    """
    values = args if isinstance(args, tuple) else (args,)
    mapping = args if isinstance(args, Mapping) else None
    total, used, pos, n = len(fmt), 0, 0, len(fmt)

    def take() -> Any:
        nonlocal used
        used += 1
        return values[used - 1] if used <= len(values) else None

    while (pos := fmt.find("%", pos)) != -1 and total <= limit:
        pos += 1
        key = None
        if pos < n and fmt[pos] == "(":
            depth, start = 1, pos + 1
            while depth and pos + 1 < n:
                pos += 1
                depth += {"(": 1, ")": -1}.get(fmt[pos], 0)
            if depth:
                break
            key = fmt[start:pos]
            pos += 1
        while pos < n and fmt[pos] in "-+ #0":
            pos += 1
        for _ in range(2):  # width, then precision
            if pos < n and fmt[pos] == "*":
                star = take()
                total += abs(star) if isinstance(star, int) else 0
                pos += 1
            else:
                start = pos
                while pos < n and fmt[pos].isdigit():
                    pos += 1
                total += _number(fmt[start:pos]) if pos > start else 0
            if pos < n and fmt[pos] == ".":
                pos += 1
            else:
                break
        while pos < n and fmt[pos] in "hlL":
            pos += 1
        if pos >= n or fmt[pos] == "%":
            pos += 1
            continue
        pos += 1
        value = mapping.get(key) if mapping is not None and key is not None else take()
        total += text_size(value, limit)
    return total


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else list(value)


def _str_value(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def replace_size(s: Any, old: Any, new: Any, count: Any = -1) -> int:
    """An upper bound of the size of ``s.replace(old, new, count)`` (also the ``replace`` filter)."""
    text = _str_value(s)
    n = len(text) if text is not None else text_size(s)
    old_n, new_n = text_size(old), text_size(new)
    if new_n <= old_n:
        return n
    hits = text.count(old) if text is not None and isinstance(old, str) else n + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return n + hits * (new_n - old_n)


def join_size(items: list[Any], separator: Any) -> int:
    """An upper bound of the size of ``separator.join(items)``."""
    total = text_size(separator) * max(len(items) - 1, 0)
    for item in items:
        total += text_size(item)
        if total > MAX_SIZE:
            break
    return total


def _width(width: Any) -> int:
    return len(width) if isinstance(width, str) else int(width)


def _center(value: Any, width: int = 80, *_: Any) -> int:
    return max(text_size(value), _width(width))


def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    n = text_size(s)
    lines = (s.count("\n") if isinstance(s, str) else n) + 2
    return n + lines * _width(width)


def _wordwrap(
    s: Any, width: int = 79, break_long_words: bool = True, wrapstring: Any = None, break_on_hyphens: bool = True
) -> int:
    n = text_size(s)
    newlines = s.count("\n") if isinstance(s, str) else n
    # A line holds at least half its width, or one word; textwrap is slow per line, so lines are counted too.
    lines = min(n + 1, 2 * n // max(int(width), 1) + newlines + 1)
    if lines > MAX_ITERATIONS:
        raise OperationRefused(f"'wordwrap' would make more than {MAX_ITERATIONS:,} lines")
    return n + lines * (text_size(wrapstring) if wrapstring is not None else 1)


def _format(value: Any, *args: Any, **kwargs: Any) -> int:
    return printf_size(value if isinstance(value, str) else str(value)[: MAX_SIZE + 1], kwargs or args)


def _join(value: Any, d: Any = "", attribute: Any = None) -> int:
    return join_size(_items(value), d)


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> int:
    return int(linecount) if fill_with is not None else 0


def _slice(value: Any, slices: Any, fill_with: Any = None) -> int:
    return int(slices)


def _tojson(value: Any, indent: Any = None) -> int:
    # JSON escapes <, >, & and ' as six characters each.
    return 6 * text_size(value, MAX_SIZE, _width(indent) if indent is not None else 0)


def _pprint(value: Any) -> int:
    return text_size(value, MAX_SIZE, 1)


def _urlize(
    value: Any, trim_url_limit: Any = None, nofollow: bool = False, target: Any = None, rel: Any = None, *_: Any
) -> int:
    n = text_size(value)
    # Each link (a word of a few characters at least) gets an <a> tag with target and rel, escaped.
    return 6 * n + (n // 4 + 1) * (64 + 6 * (text_size(target or "") + text_size(rel or "")))


def _sum(iterable: Any, attribute: Any = None, start: Any = 0) -> int:
    if isinstance(start, int | float) or attribute is not None:
        return 0  # numbers; with an attribute, the items are measured when the sum is built
    items = _items(iterable)
    total = size(start) + sum(size(x) for x in items)
    # Each addition copies the sum so far: n items cost n times the result.
    if len(items) * min(total, MAX_SIZE + 1) > MAX_WORK:
        raise OperationRefused(f"'sum' would copy more than {MAX_WORK:,} items")
    return total


#: Filters whose arguments can make the result much larger than the value, and a bound of that size.
FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": _center,
    "format": _format,
    "indent": _indent,
    "join": _join,
    "replace": replace_size,
    "wordwrap": _wordwrap,
    "batch": _batch,
    "slice": _slice,
    "tojson": _tojson,
    "pprint": _pprint,
    "urlize": _urlize,
    "sum": _sum,
}

#: Filters that turn their value into text: a value whose text would be too large is refused first.
STRINGIFYING = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "lower",
        "replace",
        "safe",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)


def _translate(s: Any, table: Any) -> int:
    widest = 1
    if isinstance(table, Mapping | list | tuple):
        for v in table.values() if isinstance(table, Mapping) else table:
            widest = max(widest, text_size(v))
    return len(s) * widest


def _expandtabs(s: Any, tabsize: Any = 8) -> int:
    tabs: int = s.count("\t" if isinstance(s, str) else b"\t")
    return len(s) + tabs * max(int(tabsize), 0)


#: Methods of ``str`` (and ``bytes``, ``int``) whose arguments can make the result much larger.
METHOD_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda s, width, *_: max(len(s), int(width)),
    "ljust": lambda s, width, *_: max(len(s), int(width)),
    "rjust": lambda s, width, *_: max(len(s), int(width)),
    "zfill": lambda s, width: max(len(s), int(width)),
    "expandtabs": _expandtabs,
    "replace": replace_size,
    "join": lambda s, items: join_size(_items(items), s),
    "translate": _translate,
    "to_bytes": lambda i, length=1, *_, **__: int(length),
}


def predicted(sizes: Callable[..., int], name: str, *args: Any, **kwargs: Any) -> None:
    """Refuse ``name(*args, **kwargs)`` if ``sizes`` bounds its result past :data:`MAX_SIZE`.

    Arguments the bound cannot read (wrong types, missing) are let through:
    the operation itself then raises its own error.
    """
    try:
        bound = sizes(*args, **kwargs)
    except OperationRefused:
        raise
    except Exception:
        return
    if bound > MAX_SIZE:
        raise OperationRefused(too_large_message(name))


__all__ = [
    "FILTER_SIZES",
    "MAX_CALLS",
    "MAX_CPU_SECONDS",
    "MAX_DEPTH",
    "MAX_ITERATIONS",
    "MAX_OUTPUT",
    "MAX_SIZE",
    "MAX_WORK",
    "METHOD_SIZES",
    "STRINGIFYING",
    "BudgetExceeded",
    "Meter",
    "OperationRefused",
    "counted",
    "current",
    "join_size",
    "metered",
    "predicted",
    "printf_size",
    "replace_size",
    "size",
    "spec_numbers",
    "text_size",
    "too_large_message",
]
