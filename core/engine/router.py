"""Pick the reply rule for a message, without scanning every rule.

Commands, exact phrases and keywords are dictionary look-ups built at load
time. Regex rules are pre-filtered by a literal every match must contain,
the one fewest other patterns share; one Aho-Corasick pass over the message
finds every such literal, so only plausible patterns run, and the work per
message depends on what it says, not on how many rules there are.
Candidates are then tried in file order: the first whose condition holds wins.
Regex rules run in bounded time (see :mod:`.safe_regex`); the pre-filter reads
the pattern as Python parses it.
"""

from __future__ import annotations

import re

# The regex parser is private (3.11+); it only feeds the pre-filter, and any
# failure there falls back to running the pattern on every message.
import re._constants as _sre_c  # type: ignore[import-not-found]
import re._parser as _sre_p  # type: ignore[import-not-found]
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..language.text import fold, squash, words
from .safe_regex import Budget, SafeRegex

_ASCII_FOLDS = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})
_COMMAND = re.compile(r"^\s*([/!])([A-Za-z0-9_]{1,64})(?:@([A-Za-z0-9_]+))?(?:\s+(.*))?$", re.S)


@dataclass(frozen=True, slots=True)
class Trigger:
    """What a rule listens for (exactly one kind is set)."""

    commands: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    regex: SafeRegex | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command message: ``/name@bot args``."""

    name: str
    bot: str | None
    args: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that matched: its index, and what the template can see of the match."""

    index: int
    groups: dict[str, Any]
    args: str


def parse_command(text: str, prefixes: str = "/") -> Command | None:
    """Parse ``/status@Bot arg1 arg2``; ``None`` when ``text`` is not a command."""
    m = _COMMAND.match(text)
    if m is None or m.group(1) not in prefixes:
        return None
    return Command(m.group(2).lower(), m.group(3), (m.group(4) or "").strip())


def required_literals(pattern: re.Pattern[str]) -> list[str]:
    """Every run of three or more literal characters that every match of ``pattern`` contains.

    Only the top-level sequence is inspected: anything optional, repeated or
    alternated breaks a run, so each run is truly required. Under
    ``re.IGNORECASE`` the runs are lower-cased. An empty list when the
    pattern has no such run (or cannot be read).
    """
    try:
        parsed = _sre_p.parse(pattern.pattern, pattern.flags)
    except Exception:
        return []
    runs: list[str] = []
    run: list[str] = []
    for op, arg in [*_flatten(list(parsed)), (None, None)]:
        if op is _sre_c.LITERAL:
            run.append(chr(arg))
        elif op is _sre_c.AT:
            continue  # \b, ^, $ consume nothing: the run goes on
        else:
            if len(run) >= 3:
                runs.append("".join(run))
            run = []
    if pattern.flags & re.IGNORECASE:
        runs = [r.lower() for r in runs]
    return runs


def required_literal(pattern: re.Pattern[str]) -> str | None:
    """The longest of :func:`required_literals`, or ``None``."""
    return max(required_literals(pattern), key=len, default=None)


class _Literals:
    """Which of many required literals occur in a text: one Aho-Corasick pass in C.

    Each pattern is filed under one literal; a text is scanned once for all
    of them, however many there are, and the patterns whose literal occurs
    are only candidates: their regex confirms them.
    """

    def __init__(self) -> None:
        self._rules: dict[str, list[int]] = {}
        self._automaton: Any = None

    def __bool__(self) -> bool:
        return bool(self._rules)

    def add(self, index: int, literal: str) -> None:
        """File rule ``index`` under ``literal``."""
        self._rules.setdefault(literal, []).append(index)

    def build(self) -> None:
        """Compile the automaton (after the last :meth:`add`)."""
        import ahocorasick

        automaton = ahocorasick.Automaton()
        for literal, rules in self._rules.items():
            automaton.add_word(literal, tuple(rules))
        automaton.make_automaton()
        self._automaton = automaton

    def find(self, text: str, found: set[int]) -> None:
        """Add to ``found`` every rule whose literal occurs in ``text``."""
        for _end, rules in self._automaton.iter(text):
            found.update(rules)


def _flatten(items: list[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    for op, arg in items:
        # A plain group with a single alternative is transparent.
        if op is _sre_c.SUBPATTERN and arg[1] == 0 and arg[2] == 0:
            yield from _flatten(list(arg[3]))
        else:
            yield op, arg


class Router:
    """Index of one persona's reply triggers."""

    def __init__(self, triggers: Sequence[Trigger], *, prefixes: str = "/!") -> None:
        self.prefixes = prefixes
        self._commands: dict[str, list[int]] = {}
        self._exact: dict[str, list[int]] = {}
        self._words: dict[str, list[int]] = {}
        self._phrases: dict[str, list[tuple[int, str]]] = {}
        self._regex: dict[int, SafeRegex] = {}
        self._lit_icase = _Literals()
        self._lit_case = _Literals()
        self._regex_always: list[int] = []
        for i, t in enumerate(triggers):
            for c in t.commands:
                self._commands.setdefault(c.lower().lstrip("/!"), []).append(i)
            for e in t.exact:
                self._exact.setdefault(squash(e), []).append(i)
            for k in t.keywords:
                kw = words(k)
                if len(kw) == 1:
                    self._words.setdefault(kw[0], []).append(i)
                elif kw:
                    self._phrases.setdefault(kw[0], []).append((i, " " + " ".join(kw) + " "))
            if t.regex is not None:
                self._regex[i] = t.regex
        self._index_regexes()

    def _index_regexes(self) -> None:
        """File each regex under its most selective required literal.

        Real personas share phrases ("what is the …", "tell me about …"): the
        longest literal of a pattern is often the one most other patterns
        have too, and a message holding it would try them all. So every
        pattern is filed under the literal the fewest patterns require
        (the longest among equals), and the work per message depends on what
        it contains, not on how many rules share a phrase.
        """
        literals: dict[int, list[str]] = {}
        shared: dict[str, int] = {}
        for i, safe in self._regex.items():
            rx = safe.python  # the pre-filter reads Python's parse of the pattern
            runs = required_literals(rx)
            if rx.flags & re.IGNORECASE:
                # Under re.IGNORECASE a few non-ASCII letters match ASCII ones: only ASCII runs are safe keys.
                runs = [r for r in runs if r.isascii()]
            literals[i] = runs
            for r in set(runs):
                shared[r] = shared.get(r, 0) + 1
        for i, runs in literals.items():
            if not runs:
                self._regex_always.append(i)
                continue
            best = min(runs, key=lambda r: (shared[r], -len(r)))
            index = self._lit_icase if self._regex[i].python.flags & re.IGNORECASE else self._lit_case
            index.add(i, best)
        for index in (self._lit_icase, self._lit_case):
            if index:
                index.build()

    def regex_of(self, index: int) -> SafeRegex | None:
        """The compiled pattern of rule ``index``, if it is a regex rule."""
        return self._regex.get(index)

    def candidates(self, text: str, command: Command | None) -> list[int]:
        """Indices of rules that may match ``text``, in file order."""
        found: set[int] = set()
        if command is not None:
            found.update(self._commands.get(command.name, ()))
        if self._exact:
            found.update(self._exact.get(squash(text), ()))
        if self._words or self._phrases:
            toks = words(text)
            lookup = self._words.get
            for w in toks:
                hit = lookup(w)
                if hit:
                    found.update(hit)
            if self._phrases:
                joined = " " + " ".join(toks) + " "
                for w in set(toks):
                    for i, p in self._phrases.get(w, ()):
                        if p in joined:
                            found.add(i)
        if self._regex:
            self._regex_candidates(text, found)
        return sorted(found)

    def _regex_candidates(self, text: str, found: set[int]) -> None:
        found.update(self._regex_always)
        if self._lit_icase:
            # Under re.IGNORECASE exactly four non-ASCII letters match ASCII ones
            # (İ ı ſ K); map them first so the pre-filter never rejects a true match.
            low = (text if text.isascii() else text.translate(_ASCII_FOLDS)).lower()
            self._lit_icase.find(low, found)
        if self._lit_case:
            self._lit_case.find(text, found)

    def hit(self, index: int, text: str, command: Command | None, budget: Budget | None = None) -> Hit | None:
        """Confirm rule ``index`` against ``text``; regex rules run their pattern here.

        Raises :class:`~.safe_regex.RegexTimeout` when the rule's pattern spends the
        rest of ``budget`` (shared by the rules tried on one message).
        """
        rx = self._regex.get(index)
        if rx is None:
            return Hit(index, {}, command.args if command else "")
        groups = rx.search(text, budget)
        if groups is None:
            return None
        return Hit(index, groups, command.args if command else "")


__all__ = ["Command", "Hit", "Router", "Trigger", "fold", "parse_command", "required_literal", "required_literals"]
