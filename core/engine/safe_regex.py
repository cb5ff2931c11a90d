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


@dataclass(frozen=True, slots=True)
class SafeRegex:
    """An author's pattern, compiled for RE2 and, when needed, for ``regex`` with a deadline."""

    #: The pattern as Python reads it: the router's literal pre-filter and lint use it; it never runs on messages.
    python: re.Pattern[str]
    #: The pattern in RE2's syntax with Python's meaning (``""`` when RE2 lacks a construct it uses).
    re2_source: str
    #: Why RE2 cannot run the pattern, as known from its syntax alone.
    syntax_reasons: tuple[str, ...]
    boundary: bool
    dollar: bool
    #: The deadline-bound form, compiled on first use (see :attr:`fallback`).
    _lazy: list[Any] = field(default_factory=list, compare=False, repr=False)
    #: ``(compiled or None, names, reasons)`` once RE2 has compiled the pattern (see :meth:`_compile`).
    _re2: list[tuple[Any, tuple[tuple[str, int], ...], tuple[str, ...]]] = field(
        default_factory=list, compare=False, repr=False
    )

    def _compile(self) -> tuple[Any, tuple[tuple[str, int], ...], tuple[str, ...]]:
        # RE2 compiles a pattern with Unicode classes in about a millisecond: 10,000 rules
        # would take seconds to load. Most rules never see a message that holds their
        # literal, so each is compiled when first tried (and lint compiles them all).
        if not self._re2:
            compiled: Any = None
            names: tuple[tuple[str, int], ...] = ()
            reasons = self.syntax_reasons
            if not reasons:
                compiled = _re2.RE2(self.re2_source.encode("utf-8"), _re2_options())
                if compiled.ok():
                    names = tuple((k.decode("utf-8"), i) for k, i in compiled.NamedCapturingGroups())
                else:
                    reasons = (f"RE2 refuses it ({compiled.error().decode('utf-8', 'replace')})",)
                    compiled = None
            self._re2.append((compiled, names, reasons))
        return self._re2[0]

    @property
    def re2(self) -> Any:
        """The compiled RE2 pattern; ``None`` when RE2 cannot run it at all."""
        return self._compile()[0]

    @property
    def names(self) -> tuple[tuple[str, int], ...]:
        """Named groups of the RE2 pattern: (name, group number)."""
        return self._compile()[1]

    @property
    def fallback_reasons(self) -> tuple[str, ...]:
        """Why RE2 cannot run the pattern (empty when it can)."""
        return self._compile()[2]

    @property
    def pattern(self) -> str:
        """The source text, as the author wrote it."""
        return self.python.pattern

    @property
    def fallback(self) -> Any:
        """The pattern compiled by the ``regex`` module, for the texts RE2 cannot read as Python would.

        Compiled when first needed: most patterns never need it (``\\b`` does only next to
        non-ASCII letters), and the ``regex`` module's compiler is slow enough that compiling
        every pattern up front made loading 10,000 rules take several times longer.
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
        compiled, names, _ = self._compile()
        if compiled is not None and not self._needs_fallback(text):
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: RE2 reads UTF-8 only
                pass
            else:
                spans = compiled.Match(_UNANCHORED, data, 0, len(data))
                if spans[0][0] < 0:
                    return None
                # RE2 matches whole UTF-8 characters: each group's bytes decode on their own.
                return {k: data[a:b].decode("utf-8") for k, i in names for a, b in (spans[i],) if a >= 0}
        remaining = (budget or Budget.start()).remaining()
        if remaining <= 0:
            raise RegexTimeout(self.pattern)
        try:
            found = self.fallback.search(text, timeout=remaining)
        except TimeoutError:
            raise RegexTimeout(self.pattern) from None
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}

    def _needs_fallback(self, text: str) -> bool:
        return (self.boundary and not text.isascii()) or (self.dollar and text.endswith("\n"))


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a pattern RE2 refuses goes to the fallback; nothing on stderr
    options.max_mem = 64 << 20
    return options


def compile_regex(source: str) -> SafeRegex:
    """Compile an author's pattern. Raises :class:`re.error` for what Python would refuse.

    RE2 compiles the pattern when it is first tried; what RE2 lacks is known from the syntax now.
    """
    python = re.compile(source)
    for_re2 = translate(source, "re2")
    reasons = for_re2.needs_fallback
    safe = SafeRegex(python, "" if reasons else for_re2.pattern, reasons, for_re2.boundary, for_re2.dollar)
    if reasons:
        safe.fallback  # noqa: B018 -- runs on every text: compile now, so a pattern `regex` refuses fails at load
    return safe


__all__ = ["MESSAGE_BUDGET", "Budget", "RegexTimeout", "SafeRegex", "compile_regex"]
