"""Pick the reply rule for a message, without scanning every rule.

Commands, exact phrases and keywords are dictionary look-ups built at load
time. Regex rules are pre-filtered by a literal every match must contain
(indexed by its first three characters), so only plausible patterns run.
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


def required_literal(pattern: re.Pattern[str]) -> str | None:
    """The longest run of literal characters every match of ``pattern`` contains.

    Only the top-level sequence is inspected: anything optional, repeated or
    alternated breaks a run, so the literal is truly required. Returns ``None``
    when there is no run of at least three characters.
    """
    try:
        parsed = _sre_p.parse(pattern.pattern, pattern.flags)
    except Exception:
        return None
    best = ""
    run: list[str] = []

    def flush() -> None:
        nonlocal best, run
        if len(run) > len(best):
            best = "".join(run)
        run = []

    for op, arg in _flatten(list(parsed)):
        if op is _sre_c.LITERAL:
            run.append(chr(arg))
        elif op is _sre_c.AT:
            continue  # \b, ^, $ consume nothing: the run goes on
        else:
            flush()
    flush()
    return best if len(best) >= 3 else None


class _Grams:
    """Which of many required literals occur in a text, looking at half of its positions.

    A literal of six characters or more is filed under two of its 5-grams,
    one at an even and one at an odd offset, each the rarest of its kind so
    buckets stay small. The text is then sampled only at even positions:
    wherever the literal occurs, one of its two 5-grams starts at one. Shorter
    literals (three to five characters) are filed under a trigram and need
    every position. Any rule this finds is only a candidate; its regex
    confirms it.
    """

    GRAM = 5

    def __init__(self) -> None:
        self._even: dict[str, list[tuple[int, str]]] = {}
        self._all: dict[str, list[tuple[int, str]]] = {}

    def __bool__(self) -> bool:
        return bool(self._even or self._all)

    def add(self, index: int, literal: str) -> None:
        """File rule ``index`` under ``literal`` (three characters or more)."""
        g = self.GRAM
        if len(literal) > g:
            for offset in (0, 1):
                _file(self._even, index, literal, range(offset, len(literal) - g + 1, 2), g)
        else:
            _file(self._all, index, literal, range(len(literal) - 2), 3)

    def find(self, text: str, found: set[int]) -> None:
        """Add to ``found`` every rule whose literal occurs in ``text``."""
        g = self.GRAM
        for buckets, step, size in ((self._even, 2, g), (self._all, 1, 3)):
            if not buckets:
                continue
            # Filter the text's few grams through the index (``keys() & grams`` would copy every key).
            grams = {text[j : j + size] for j in range(0, len(text) - size + 1, step)}
            for gram in filter(buckets.__contains__, grams):
                for i, lit in buckets[gram]:
                    if lit in text:
                        found.add(i)


def _file(buckets: dict[str, list[tuple[int, str]]], index: int, literal: str, offsets: range, size: int) -> None:
    grams = sorted({literal[j : j + size] for j in offsets})
    rarest = min(grams, key=lambda g: len(buckets.get(g, ())))
    buckets.setdefault(rarest, []).append((index, literal))


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
        self._tri_icase = _Grams()
        self._tri_case = _Grams()
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
                self._add_regex(i, t.regex)

    def _add_regex(self, i: int, safe: SafeRegex) -> None:
        self._regex[i] = safe
        rx = safe.python
        literal = required_literal(rx)
        if literal is None:
            self._regex_always.append(i)
        elif rx.flags & re.IGNORECASE:
            if literal.isascii():
                low = literal.lower()
                self._tri_icase.add(i, low)
            else:
                self._regex_always.append(i)
        else:
            self._tri_case.add(i, literal)

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
        if self._tri_icase:
            # Under re.IGNORECASE exactly four non-ASCII letters match ASCII ones
            # (İ ı ſ K); map them first so the pre-filter never rejects a true match.
            low = (text if text.isascii() else text.translate(_ASCII_FOLDS)).lower()
            self._tri_icase.find(low, found)
        if self._tri_case:
            self._tri_case.find(text, found)

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


__all__ = ["Command", "Hit", "Router", "Trigger", "fold", "parse_command", "required_literal"]
