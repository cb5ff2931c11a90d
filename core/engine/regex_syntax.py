"""Write an author's Python regex in the syntax of RE2 or of the ``regex`` module, meaning the same.

The pattern is parsed by Python's own parser (so every Python spelling is read
as Python reads it: ``{,3}``, ``\\Z``, ``(?x)``, escapes) and the tree is
written back out for the target engine, with Python's rules made explicit:

* ``\\w``, ``\\d``, ``\\s`` become the sets Python uses: letters and numbers
  (``str.isalnum``) and ``_``; decimal digits; Python's whitespace list (which has
  U+001C..U+001F). The engines' Unicode tables are newer than Python 3.11's, so
  characters Python calls unassigned may differ;
* ``$`` (without ``(?m)``) also matches before a final newline, as in Python;
* under ``(?i)``, ``I i İ ı`` are one letter, as in Python (RE2 and ``regex``
  follow Unicode case folding, which keeps the dotted and dotless i apart).

RE2 has no look-around, so for RE2 ``\\b``, ``\\B`` and Python's ``$`` are
written with RE2's own meaning, which is Python's on ASCII text with no final
newline; :class:`Translation` says when a text needs the ``regex`` dialect.
Constructs RE2 lacks entirely (back-references, look-around, conditionals,
atomic groups, possessive quantifiers) are listed in
:attr:`Translation.needs_fallback`, and so are counted repetitions that unroll
to more than :data:`RE2_MAX_UNROLLED` positions: RE2 stays linear in the text,
but its cost per character grows with them (``[\\w\\W]{1000}`` four times over
spends most of a second on a 4,096-character message), so only a deadline
bounds them.
"""

from __future__ import annotations

import array
import functools

# The parser is private (3.11+) but it is the exact reader of Python's syntax.
import re._constants as _c  # type: ignore[import-not-found]
import re._parser as _p  # type: ignore[import-not-found]
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Dialect = Literal["re2", "regex"]

#: Positions a pattern may unroll to (``x{300}`` is 300) and still run in RE2: above it, each
#: character of a message can cost RE2 that many steps, and only the fallback's deadline bounds it.
RE2_MAX_UNROLLED = 200

_I, _M, _S, _A = _c.SRE_FLAG_IGNORECASE, _c.SRE_FLAG_MULTILINE, _c.SRE_FLAG_DOTALL, _c.SRE_FLAG_ASCII
#: Python folds these four together under (?i); Unicode case folding (RE2, regex) does not.
_DOTTED_I = (0x49, 0x69, 0x130, 0x131)
_FALLBACK_OPS = {
    _c.GROUPREF: "a back-reference",
    _c.GROUPREF_EXISTS: "a conditional group",
    _c.ATOMIC_GROUP: "an atomic group",
    _c.POSSESSIVE_REPEAT: "a possessive quantifier",
}


@dataclass(frozen=True, slots=True)
class Translation:
    """A pattern written for one engine, and what that engine needs to be told."""

    pattern: str
    #: The constructs RE2 cannot run (empty for the ``regex`` dialect's own purposes too).
    needs_fallback: tuple[str, ...]
    #: Uses ``\\b`` or ``\\B`` (RE2 reads them on ASCII only).
    boundary: bool
    #: Uses ``$`` without ``(?m)`` (RE2's does not match before a final newline).
    dollar: bool


@dataclass(frozen=True, slots=True)
class Shape:
    """What lint says about a pattern's structure."""

    needs_fallback: tuple[str, ...]
    #: Descriptions of quantifiers nested under quantifiers, e.g. ``(a+)+``.
    nested: tuple[str, ...]


def parse(source: str) -> Any:
    """Python's parse tree of ``source`` (raises :class:`re.error` like :func:`re.compile`)."""
    return _p.parse(source, 0)


def translate(source: str, dialect: Dialect, *, ascii_text: bool = False) -> Translation:
    """``source`` written for ``dialect`` (see the module docstring).

    With ``ascii_text``, the result is exact only on ASCII texts, where Python's Unicode
    ``\\w``, ``\\d`` and ``\\s`` match ASCII characters alone: RE2 compiles and runs such a
    pattern many times faster than one with Unicode properties, and most messages are ASCII.
    """
    tree = parse(source)
    w = _Writer(dialect, tree.state.groupdict, ascii_text=ascii_text)
    flags = tree.state.flags
    body = w.seq(tree, flags)
    size = _repeated(list(tree))
    if size > RE2_MAX_UNROLLED:
        w.fallback.append(f"counted repetitions unrolling to {size} positions, over {RE2_MAX_UNROLLED}")
    return Translation(body, tuple(dict.fromkeys(w.fallback)), w.boundary, w.dollar)


def shape(source: str) -> Shape:
    """Which RE2-less constructs and which nested quantifiers ``source`` has."""
    tree = parse(source)
    w = _Writer("regex", tree.state.groupdict)
    w.seq(tree, tree.state.flags)
    nested: list[str] = []
    _nested(list(tree), source, False, nested)
    return Shape(tuple(dict.fromkeys(w.fallback)), tuple(dict.fromkeys(nested)))


# --------------------------------------------------------------------------- character sets


@functools.cache
def _all_chars() -> str:
    # Every code point but the surrogates, built in C (a join of 1.1 million chr() takes 0.4 s).
    points = array.array("I", range(0xD800))
    points.extend(range(0xE000, 0x110000))
    return points.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be")


@functools.cache
def _category(name: str, ascii_only: bool) -> tuple[tuple[int, int], ...]:
    """The code point ranges Python's ``\\w`` / ``\\d`` / ``\\s`` (``name``) match, computed by Python."""
    import re

    flags = re.ASCII if ascii_only else 0
    return tuple((m.start(), m.end() - 1) for m in re.finditer(f"\\{name}+", _all_chars(), flags))


def _complement(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= 0x10FFFF:
        out.append((nxt, 0x10FFFF))
    return tuple(out)


_CATEGORIES = {
    _c.CATEGORY_DIGIT: ("d", False),
    _c.CATEGORY_NOT_DIGIT: ("d", True),
    _c.CATEGORY_SPACE: ("s", False),
    _c.CATEGORY_NOT_SPACE: ("s", True),
    _c.CATEGORY_WORD: ("w", False),
    _c.CATEGORY_NOT_WORD: ("w", True),
}


#: Python's whitespace (all below U+3001): few enough to list.
_SPACES = tuple(cp for cp in range(0x3001) if chr(cp).isspace())


def _property(name: str, ascii_only: bool, dialect: Dialect, ascii_text: bool = False) -> str:
    """Class text (without brackets) for Python's ``\\w``, ``\\d`` or ``\\s``.

    ``\\w`` is ``str.isalnum()`` or ``_``, which is exactly Unicode's letters and numbers;
    ``\\d`` is ``str.isdecimal()``, Unicode's decimal digits. The engines' Unicode tables are
    newer than Python's: they differ only on characters Python still calls unassigned.
    """
    if name == "w":
        return "A-Za-z0-9_" if ascii_only or ascii_text else "\\p{L}\\p{N}_"
    if name == "d":
        return "0-9" if ascii_only or ascii_text else "\\p{Nd}"
    if ascii_only:  # re.ASCII's \\s leaves out the separators U+001C..U+001F
        spaces = tuple(cp for cp in _SPACES if cp < 0x80 and cp not in range(0x1C, 0x20))
    else:
        spaces = tuple(cp for cp in _SPACES if cp < 0x80) if ascii_text else _SPACES
    return "".join(_char(cp, dialect) for cp in spaces)


def _category_ranges(code: Any, flags: int) -> tuple[tuple[int, int], ...]:
    name, negated = _CATEGORIES[code]
    ranges = _category(name, bool(flags & _A))
    return _complement(ranges) if negated else ranges


def _char(cp: int, dialect: Dialect) -> str:
    ch = chr(cp)
    if ch.isascii() and ch.isalnum():
        return ch
    return f"\\x{{{cp:x}}}" if dialect == "re2" else f"\\U{cp:08x}"


def _ranges_text(ranges: Iterable[tuple[int, int]], dialect: Dialect) -> str:
    return "".join(
        _char(lo, dialect) if lo == hi else f"{_char(lo, dialect)}-{_char(hi, dialect)}" for lo, hi in ranges
    )


# --------------------------------------------------------------------------- writer


class _Writer:
    def __init__(self, dialect: Dialect, names: dict[str, int], *, ascii_text: bool = False) -> None:
        self.dialect = dialect
        self.ascii_text = ascii_text
        self.names = {n: k for k, n in names.items()}
        self.fallback: list[str] = []
        self.boundary = False
        self.dollar = False

    def seq(self, items: Iterable[tuple[Any, Any]], flags: int) -> str:
        return "".join(self.item(op, arg, flags) for op, arg in items)

    def item(self, op: Any, arg: Any, flags: int) -> str:
        if op is _c.LITERAL:
            return self.literal(arg, flags)
        if op is _c.NOT_LITERAL:
            return self.charset([(_c.NEGATE, None), (_c.LITERAL, arg)], flags)
        if op is _c.ANY:
            return "(?s:.)" if flags & _S else "[^\\n]"
        if op is _c.IN:
            return self.charset(arg, flags)
        if op is _c.CATEGORY:
            return self.charset([(op, arg)], flags)
        if op is _c.AT:
            return self.at(arg, flags)
        if op is _c.BRANCH:
            return "(?:" + "|".join(self.seq(alt, flags) for alt in arg[1]) + ")"
        if op is _c.SUBPATTERN:
            group, add, remove, body = arg
            inner = self.seq(body, (flags | add) & ~remove)
            if group is None:
                return f"(?:{inner})"
            name = self.names.get(group)
            return f"(?P<{name}>{inner})" if name else f"({inner})"
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            lo, hi, body = arg
            if op is _c.POSSESSIVE_REPEAT:
                self.fallback.append(_FALLBACK_OPS[op])
            count = self.count(lo, hi)
            lazy = "?" if op is _c.MIN_REPEAT else "+" if op is _c.POSSESSIVE_REPEAT else ""
            return f"(?:{self.seq(body, flags)}){count}{lazy}"
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            direction, body = arg
            self.fallback.append("a lookbehind" if direction < 0 else "a lookahead")
            kind = ("<" if direction < 0 else "") + ("=" if op is _c.ASSERT else "!")
            return f"(?{kind}{self.seq(body, flags)})"
        if op is _c.GROUPREF:
            self.fallback.append(_FALLBACK_OPS[op])
            return f"(?:\\g<{arg}>)"
        if op is _c.GROUPREF_EXISTS:
            self.fallback.append(_FALLBACK_OPS[op])
            cond, yes, no = arg
            return f"(?({cond}){self.seq(yes, flags)}|{self.seq(no or [], flags)})"
        if op is _c.ATOMIC_GROUP:
            self.fallback.append(_FALLBACK_OPS[op])
            return f"(?>{self.seq(arg, flags)})"
        raise ValueError(f"unsupported regex construct {op}")  # pragma: no cover - every op of 3.11 is above

    @staticmethod
    def count(lo: int, hi: int) -> str:
        if hi is _c.MAXREPEAT or hi == _c.MAXREPEAT:
            return "*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}"
        if (lo, hi) == (0, 1):
            return "?"
        return f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"

    def literal(self, cp: int, flags: int) -> str:
        if flags & _I:
            if cp in _DOTTED_I and not flags & _A:
                return "[Ii" + _char(0x130, self.dialect) + _char(0x131, self.dialect) + "]"
            return f"(?i:{_char(cp, self.dialect)})"
        return _char(cp, self.dialect)

    def charset(self, items: Iterable[tuple[Any, Any]], flags: int) -> str:
        negate = False
        folded: list[tuple[int, int]] = []  # literals and ranges: folded under (?i)
        cats: list[Any] = []  # categories: never folded, as in Python
        for op, arg in items:
            if op is _c.NEGATE:
                negate = True
            elif op is _c.LITERAL:
                folded.append((arg, arg))
            elif op is _c.RANGE:
                folded.append(arg)
            elif op is _c.CATEGORY:
                cats.append(arg)
            else:  # pragma: no cover - the parser puts nothing else in a set
                raise ValueError(f"unsupported set item {op}")
        ascii_only = bool(flags & _A)
        negated_cats = [c for c in cats if _CATEGORIES[c][1]]
        if len(cats) == 1 and negated_cats and not folded:
            # [\W] is [^\w]: written with Unicode properties, cheap to compile.
            negate = not negate
            exact = _property(_CATEGORIES[cats[0]][0], ascii_only, self.dialect, self.ascii_text)
        elif negated_cats:
            # A complement inside a union: spell the exact sets out (computed once, rarely needed).
            exact = _ranges_text(_merge(r for c in cats for r in _category_ranges(c, flags)), self.dialect)
        else:
            exact = "".join(_property(_CATEGORIES[c][0], ascii_only, self.dialect, self.ascii_text) for c in cats)
        icase = bool(flags & _I)
        if icase and not ascii_only and any(lo <= cp <= hi for lo, hi in folded for cp in _DOTTED_I):
            folded.extend((cp, cp) for cp in _DOTTED_I)
        letters = _ranges_text(_merge(folded), self.dialect)
        caret = "^" if negate else ""
        if not icase or not folded:
            if letters or exact:
                return f"[{caret}{letters}{exact}]"
            return "(?s:.)" if negate else "(?!)" if self.dialect == "regex" else "[^\\x00-\\x{10ffff}]"
        if not exact:
            return f"(?i:[{caret}{letters}])"
        if not negate:
            return f"(?:[{exact}]|(?i:[{letters}]))"
        # A negated set mixing both: (?i) applies to the whole class (RE2 has no set difference);
        # the categories are closed under case but for a few combining marks (documented).
        return f"(?i:[^{letters}{exact}])"

    def at(self, code: Any, flags: int) -> str:
        if code is _c.AT_BEGINNING:
            return "(?m:^)" if flags & _M else "\\A"
        if code is _c.AT_BEGINNING_STRING:
            return "\\A"
        if code is _c.AT_END_STRING:
            return "\\z" if self.dialect == "re2" else "\\Z"
        if code is _c.AT_END:
            if flags & _M:
                return "(?m:$)"
            self.dollar = True
            return "\\z" if self.dialect == "re2" else "(?=\\n?\\Z)"
        if code in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY):
            self.boundary = True
            if self.dialect == "re2":
                return "\\b" if code is _c.AT_BOUNDARY else "\\B"
            word = f"[{_property('w', bool(flags & _A), self.dialect)}]"
            if code is _c.AT_BOUNDARY:
                return f"(?:(?<={word})(?!{word})|(?<!{word})(?={word}))"
            return f"(?:(?<={word})(?={word})|(?<!{word})(?!{word}))"
        raise ValueError(f"unsupported anchor {code}")  # pragma: no cover


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


# --------------------------------------------------------------------------- lint


def _is_repeat(op: Any, arg: Any) -> bool:
    return op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT) and (
        arg[1] is _c.MAXREPEAT or arg[1] == _c.MAXREPEAT or arg[1] > 1
    )


def _children(op: Any, arg: Any) -> list[list[tuple[Any, Any]]]:
    if op is _c.BRANCH:
        return [list(a) for a in arg[1]]
    if op is _c.SUBPATTERN:
        return [list(arg[3])]
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        return [list(arg[2])]
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [list(arg[1])]
    if op is _c.ATOMIC_GROUP:
        return [list(arg)]
    if op is _c.GROUPREF_EXISTS:
        return [list(arg[1]), list(arg[2] or [])]
    return []


def _repeated(items: list[tuple[Any, Any]]) -> int:
    """How many positions the repetitions in ``items`` unroll to (``x{300}`` is 300, ``(a{20}b)+`` 21).

    Text outside any repetition does not count: a long literal or a long list of words is cheap for RE2.
    """
    total = 0
    for op, arg in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            lo, hi, body = arg
            times = max(lo, 1) if hi is _c.MAXREPEAT or hi == _c.MAXREPEAT else max(hi, 1)
            total += times * _positions(list(body))
        else:
            total += sum(_repeated(child) for child in _children(op, arg))
    return total


def _positions(items: list[tuple[Any, Any]]) -> int:
    """How many positions ``items`` unroll to when every counted repetition is written out."""
    total = 0
    for op, arg in items:
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            total += _repeated([(op, arg)])
        else:
            children = _children(op, arg)
            total += sum(_positions(child) for child in children) if children else 1
    return total


def _nested(items: list[tuple[Any, Any]], source: str, under_repeat: bool, out: list[str]) -> None:
    for op, arg in items:
        repeat = _is_repeat(op, arg)
        if repeat and under_repeat:
            out.append("a quantifier inside a quantified group")
        if repeat and _overlapping_branch(list(arg[2])):
            out.append("a repeated alternation whose alternatives can match the same text")
        for child in _children(op, arg):
            _nested(child, source, under_repeat or repeat, out)


def _overlapping_branch(items: list[tuple[Any, Any]]) -> bool:
    """Whether a repeated body holds an alternation with two alternatives that can start alike.

    Python's parser factors common prefixes out (``(a|a)`` becomes ``a(?:|)``) and turns
    single characters into a set (no ambiguity there), so two empty alternatives count too.
    """
    for op, arg in items:
        if op is _c.BRANCH:
            seen: set[int] = set()
            empty = unknown = 0
            for alt in arg[1]:
                f = _first(list(alt)) if alt else set()
                empty += not alt
                unknown += f is None
                if f and f & seen:
                    return True
                seen |= f or set()
            # Two empty alternatives, or one that may start with anything next to another non-empty one.
            if empty > 1 or (unknown and len(arg[1]) - empty > 1):
                return True
        if any(_overlapping_branch(child) for child in _children(op, arg)):
            return True
    return False


def _first(items: list[tuple[Any, Any]]) -> set[int] | None:
    """The characters a match of ``items`` can start with; ``None`` when it can be many or nothing."""
    for op, arg in items:
        if op is _c.AT:
            continue
        if op is _c.LITERAL:
            return {arg, *(ord(c) for c in (chr(arg).lower(), chr(arg).upper()) if len(c) == 1)}
        if op is _c.SUBPATTERN:
            return _first(list(arg[3]))
        return None
    return None


__all__ = ["RE2_MAX_UNROLLED", "Dialect", "Shape", "Translation", "parse", "shape", "translate"]
