"""Run authors' regexes in bounded time, whatever the pattern and the message.

Python's ``re`` backtracks: ``(a+)+$`` against ``"a" * 28 + "!"`` runs for
seconds, and the event loop with it. Patterns therefore run in RE2 (linear
time, no backtracking), written in RE2's syntax with Python's meaning (see
:mod:`.regex_syntax`). What RE2 cannot express exactly runs in the ``regex``
module under a deadline instead: the constructs RE2 lacks (back-references,
look-around, ...), and, on texts where RE2's reading differs from Python's,
``\\b``/``\\B`` next to non-ASCII letters and ``$`` before a final newline.

A :class:`Budget` is shared by every rule tried on one message: once it is
spent, a pattern that needs the deadline raises :class:`RegexTimeout`, which
the engine treats as "no match" and reports once per rule.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]
import regex

# google-re2's own extension module: its Python wrapper builds match objects in
# Python (about 5x the cost of the search); the router needs only the spans.
from re2 import _re2

from .regex_syntax import Dialect, translate

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED

#: How long one user message may spend in the deadline-bound regexes, in total.
MESSAGE_BUDGET = 0.05


class RegexTimeout(Exception):
    """A pattern ran out of the message's time budget (treat as no match)."""


@dataclass(frozen=True, slots=True)
class Budget:
    """The deadline (``time.monotonic``) shared by the patterns tried on one message."""

    deadline: float

    @classmethod
    def start(cls, seconds: float = MESSAGE_BUDGET) -> Budget:
        """A budget of ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left (may be negative)."""
        return self.deadline - time.monotonic()


@dataclass(slots=True)
class _Programs:
    """What RE2 makes of one pattern, worked out when the pattern is first tried."""

    #: Why RE2 cannot run the pattern (empty when it can).
    reasons: tuple[str, ...]
    #: The pattern for RE2, exact on every text (``""`` when RE2 cannot run it).
    source: str
    #: The pattern for RE2, exact on ASCII texts only (``\\w`` as ``[A-Za-z0-9_]``: far cheaper).
    ascii_source: str
    boundary: bool
    dollar: bool
    #: Compiled programs by "is the text ASCII?"; ``None`` when RE2 refused the pattern.
    compiled: dict[bool, Any] = field(default_factory=dict)
    #: Whether :attr:`source` is still to be written (see :meth:`SafeRegex._compile`).
    full_pending: bool = False
    names: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SafeRegex:
    """An author's pattern, compiled for RE2 and, when needed, for ``regex`` with a deadline.

    Only Python's compile runs at load (it validates the pattern and feeds the router's
    pre-filter). RE2 compiles a pattern with Unicode classes in a millisecond or more, so
    10,000 rules would take seconds to load: each pattern is translated and compiled when
    first tried, and lint compiles them all.
    """

    #: The pattern as Python reads it: the router's literal pre-filter and lint use it; it never runs on messages.
    python: re.Pattern[str]
    _lazy: list[Any] = field(default_factory=list, compare=False, repr=False)
    _re2: list[_Programs] = field(default_factory=list, compare=False, repr=False)

    def _programs(self) -> _Programs:
        if not self._re2:
            # The ASCII form says all the full one would (same structure); the full form is
            # written when a message with a non-ASCII character first needs it.
            first = translate(self.pattern, "re2", ascii_text=True)
            usable = not first.needs_fallback
            programs = _Programs(
                first.needs_fallback, "", first.pattern if usable else "", first.boundary, first.dollar
            )
            programs.full_pending = usable
            self._re2.append(programs)
        return self._re2[0]

    def _compile(self, programs: _Programs, ascii_text: bool) -> Any:
        compiled = programs.compiled.get(ascii_text)
        if not ascii_text and programs.full_pending:
            programs.full_pending = False
            programs.source = translate(self.pattern, "re2").pattern
        if compiled is None and ascii_text not in programs.compiled:
            source = programs.ascii_source if ascii_text else programs.source
            compiled = _re2.RE2(source.encode("utf-8"), _re2_options()) if source else None
            if compiled is not None and not compiled.ok():
                # Both forms have the same structure: what RE2 refuses in one it refuses in the other.
                programs.reasons = (f"RE2 refuses it ({compiled.error().decode('utf-8', 'replace')})",)
                programs.source = programs.ascii_source = ""
                programs.full_pending = False
                compiled = None
            elif compiled is not None and not programs.names:
                programs.names = tuple((k.decode("utf-8"), i) for k, i in compiled.NamedCapturingGroups())
            programs.compiled[ascii_text] = compiled
        return compiled

    @property
    def re2(self) -> Any:
        """The compiled RE2 pattern exact on every text; ``None`` when RE2 cannot run it at all."""
        return self._compile(self._programs(), False)

    @property
    def names(self) -> tuple[tuple[str, int], ...]:
        """Named groups of the RE2 pattern: (name, group number)."""
        self.re2  # noqa: B018 -- the names come with a compiled program
        return self._programs().names

    @property
    def fallback_reasons(self) -> tuple[str, ...]:
        """Why RE2 cannot run the pattern (empty when it can); compiles it to know."""
        self.re2  # noqa: B018 -- RE2 may refuse a pattern its syntax allows (too large)
        return self._programs().reasons

    @property
    def boundary(self) -> bool:
        """Whether the pattern has ``\\b``/``\\B``, which RE2 reads as ASCII only."""
        return self._programs().boundary

    @property
    def dollar(self) -> bool:
        """Whether the pattern has a ``$`` that Python lets match before a final newline."""
        return self._programs().dollar

    @property
    def pattern(self) -> str:
        """The source text, as the author wrote it."""
        return self.python.pattern

    @property
    def fallback(self) -> Any:
        """The pattern compiled by the ``regex`` module, for the texts RE2 cannot read as Python would.

        Compiled when first needed: most patterns never need it (``\\b`` does only next to
        non-ASCII letters), and the ``regex`` module's compiler is slow.
        """
        if not self._lazy:
            self._lazy.append(regex.compile(translate(self.pattern, "regex").pattern, regex.V0))
        return self._lazy[0]

    @property
    def engine(self) -> Dialect:
        """Which engine runs the pattern on ASCII text: ``"re2"`` or ``"regex"`` (deadline-bound)."""
        return "re2" if self.re2 is not None else "regex"

    def search(self, text: str, budget: Budget | None = None) -> dict[str, str] | None:
        """The named groups of the first match in ``text`` (unmatched groups left out), or ``None``.

        Raises :class:`RegexTimeout` when a deadline-bound search runs out of ``budget``
        (a fresh :data:`MESSAGE_BUDGET` when not given).
        """
        if not text:
            # Nothing to backtrack over, and Python's own quirks apply (its \\B never matches here).
            m = self.python.search(text)
            return None if m is None else {k: v for k, v in m.groupdict().items() if v is not None}
        programs = self._programs()
        if programs.ascii_source and not self._needs_fallback(programs, text):
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: RE2 reads UTF-8 only
                pass
            else:
                compiled = self._compile(programs, len(data) == len(text))
                if compiled is not None:
                    spans = compiled.Match(_UNANCHORED, data, 0, len(data))
                    if spans[0][0] < 0:
                        return None
                    # RE2 matches whole UTF-8 characters: each group's bytes decode on their own.
                    return {k: data[a:b].decode("utf-8") for k, i in programs.names for a, b in (spans[i],) if a >= 0}
        remaining = (budget or Budget.start()).remaining()
        if remaining <= 0:
            raise RegexTimeout(self.pattern)
        try:
            found = self.fallback.search(text, timeout=remaining)
        except (TimeoutError, regex.error):
            # A pattern Python accepts and the regex module refuses (none is known) is reported
            # like a timeout, once, rather than raised at every message.
            raise RegexTimeout(self.pattern) from None
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}

    @staticmethod
    def _needs_fallback(programs: _Programs, text: str) -> bool:
        return (programs.boundary and not text.isascii()) or (programs.dollar and text.endswith("\n"))


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a pattern RE2 refuses goes to the fallback; nothing on stderr
    options.max_mem = 64 << 20
    return options


def compile_regex(source: str) -> SafeRegex:
    """Compile an author's pattern. Raises :class:`re.error` for what Python would refuse.

    RE2 compiles the pattern when it is first tried (see :class:`SafeRegex`).
    """
    return SafeRegex(re.compile(source))


__all__ = ["MESSAGE_BUDGET", "Budget", "RegexTimeout", "SafeRegex", "compile_regex"]
