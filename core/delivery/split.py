"""Split a long message into pieces a platform accepts, without breaking what it says.

Platforms count length in UTF-16 code units (an emoji outside the Basic
Multilingual Plane counts two), Telegram after parsing HTML: tags do not
count and an entity such as ``&amp;`` counts one. A piece ends at the last
paragraph break, else line break, else sentence end, else space that fits,
preferring the strongest break that still fills half the limit; only a word
longer than the limit is ever cut inside. Line breaks inside a piece are
kept. In HTML no cut falls inside a tag or an entity, and tags open at a cut
are closed at the end of the piece and opened again at the start of the
next, so each piece is valid on its own (a cut ``<b>`` would make Telegram
refuse the message, and the message would be lost).

Mastodon counts differently (``measure="mastodon"``): grapheme clusters, a
URL counts 23 whatever its length, and a mention ``@user@domain`` counts as
``@user``. A URL or a mention is never cut.

Bluesky (``measure="bluesky"``) counts grapheme clusters (at most 300) and
also refuses more than 3,000 bytes of UTF-8: a piece obeys both. A link or
a mention is never cut unless it alone is longer than the limit.
"""

from __future__ import annotations

import html
import re
from typing import Literal, NamedTuple

import regex

from ..language.templates import Dialect

#: How a platform counts length: UTF-16 code units (Telegram, Discord), Mastodon's rule, or Bluesky's graphemes.
Measure = Literal["utf16", "mastodon", "bluesky"]

#: Bluesky's other limit on a post's text: UTF-8 bytes (a post of 300 emoji can exceed it).
BLUESKY_MAX_BYTES = 3000

#: Mastodon counts every URL as this many characters.
MASTODON_URL_LENGTH = 23
# URLs as Mastodon recognises them for counting (with a scheme); trailing punctuation is not part of one.
_MASTODON_URL = r"https?://[^\s<>\"]*[^\s<>\".,;:!?)\]}'\u2019\u201d]"
# A mention: the domain part does not count. Not after a word character or a slash (as on Mastodon).
_MASTODON_MENTION = r"(?<![\w/@])@(?P<user>[A-Za-z0-9_]+(?:[A-Za-z0-9_.-]+[A-Za-z0-9_])?)(?:@[\w.-]+\w)?"
_MASTODON_TOKEN = regex.compile(rf"(?P<url>{_MASTODON_URL})|(?P<mention>{_MASTODON_MENTION})|\X")
# Bluesky: what a facet covers (a link, an @handle) is kept whole; everything else is one grapheme.
_BLUESKY_MENTION = r"(?<![\w/@])@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_BLUESKY_TOKEN = regex.compile(rf"(?P<whole>{_MASTODON_URL}|{_BLUESKY_MENTION})|\X")
_GRAPHEME = regex.compile(r"\X")

_HTML_TOKEN = re.compile(r"<[^<>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_TAG_NAME = re.compile(r"</?\s*([A-Za-z][\w-]*)")
_SENTENCE_END = frozenset(".!?…")

# Break strengths: a cut after the atom at that position.
_PARAGRAPH, _LINE, _SENTENCE, _WORD = 4, 3, 2, 1


class _Atom(NamedTuple):
    text: str
    units: int  # length as the platform counts it
    tag: bool
    size: int = 0  # UTF-8 bytes, where the platform also limits those (Bluesky)


def units(text: str) -> int:
    """Length in UTF-16 code units, as Telegram and Discord count it."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def mastodon_length(text: str) -> int:
    """Length as Mastodon counts it: graphemes, a URL as 23, ``@user@domain`` as ``@user``."""
    return sum(a.units for a in _mastodon_atoms(text))


def graphemes(text: str) -> int:
    """Length in grapheme clusters (what a reader sees as one character), as Bluesky counts it."""
    return len(_GRAPHEME.findall(text))


def measure_length(text: str, measure: Measure = "utf16") -> int:
    """Length of plain ``text`` as the platform with ``measure`` counts it."""
    if measure == "mastodon":
        return mastodon_length(text)
    if measure == "bluesky":
        return graphemes(text)
    return units(text)


def split_message(text: str, limit: int, dialect: Dialect = "plain", measure: Measure = "utf16") -> list[str]:
    """``text`` in pieces of at most ``limit`` units (visible units for ``html``), counted by ``measure``."""
    byte_limit = 1 << 62  # only Bluesky limits bytes too
    if measure == "mastodon":
        if limit < MASTODON_URL_LENGTH + 1:
            raise ValueError(f"limit must be more than {MASTODON_URL_LENGTH} (one URL counts {MASTODON_URL_LENGTH})")
        atoms = _mastodon_atoms(text)
    elif measure == "bluesky":
        if limit < 2:
            raise ValueError("limit must be at least 2")
        atoms = _bluesky_atoms(text, limit)
        byte_limit = BLUESKY_MAX_BYTES
    else:
        if limit < 2:
            raise ValueError("limit must be at least 2 (one emoji is two units)")
        if len(text) <= limit // 2 or units(text) <= limit:
            return [text]
        atoms = _atoms(text, dialect)
    if sum(a.units for a in atoms) <= limit and sum(a.size for a in atoms) <= byte_limit:
        return [text]
    pieces: list[str] = []
    stack: list[tuple[str, str]] = []  # open HTML tags: (name, the opening tag as written)
    start, n = 0, len(atoms)
    while start < n:
        # Blank lines at a cut go; a line's indentation stays (code in <pre>, poems).
        while start < n and atoms[start].text in ("\n", "\r"):
            start += 1
        if start >= n:
            break
        end = _cut(atoms, start, limit, byte_limit)
        last = end
        while last > start and atoms[last - 1].text.isspace():
            last -= 1
        opening = "".join(tag for _, tag in stack)
        body = atoms[start:last]
        for atom in body:
            if atom.tag:
                _track(stack, atom.text)
        closing = "".join(f"</{name}>" for name, _ in reversed(stack))
        if any(not a.tag and not a.text.isspace() for a in body):
            pieces.append(opening + "".join(a.text for a in body) + closing)
        start = end
    return pieces


def _atoms(text: str, dialect: Dialect) -> list[_Atom]:
    atoms: list[_Atom] = []
    pos = 0
    if dialect == "html":
        for m in _HTML_TOKEN.finditer(text):
            atoms.extend(_Atom(c, 2 if ord(c) > 0xFFFF else 1, False) for c in text[pos : m.start()])
            token = m.group()
            is_tag = token[0] == "<"
            # An entity counts as the character it stands for (&#128512; is an emoji: two units).
            atoms.append(_Atom(token, 0 if is_tag else units(html.unescape(token)), is_tag))
            pos = m.end()
    atoms.extend(_Atom(c, 2 if ord(c) > 0xFFFF else 1, False) for c in text[pos:])
    return atoms


def _mastodon_atoms(text: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    for m in _MASTODON_TOKEN.finditer(text):
        token = m.group()
        if m.group("url"):
            atoms.append(_Atom(token, MASTODON_URL_LENGTH, False))
        elif m.group("mention"):
            atoms.append(_Atom(token, 1 + len(m.group("user")), False))
        elif token == "\r\n":  # one grapheme, but a line break to the splitter
            atoms.extend((_Atom("\r", 0, False), _Atom("\n", 1, False)))
        else:
            atoms.append(_Atom(token, 1, False))
    return atoms


def _bluesky_atoms(text: str, limit: int) -> list[_Atom]:
    atoms: list[_Atom] = []
    for m in _BLUESKY_TOKEN.finditer(text):
        token = m.group()
        if m.group("whole"):
            clusters = _GRAPHEME.findall(token)
            size = len(token.encode())
            if len(clusters) <= limit and size <= BLUESKY_MAX_BYTES:
                atoms.append(_Atom(token, len(clusters), False, size))
            else:  # longer than a whole post: it has to be cut somewhere
                atoms.extend(_Atom(c, 1, False, len(c.encode())) for c in clusters)
        elif token == "\r\n":
            atoms.extend((_Atom("\r", 0, False, 1), _Atom("\n", 1, False, 1)))
        else:
            atoms.append(_Atom(token, 1, False, len(token.encode())))
    return atoms


def _strength(atoms: list[_Atom], i: int) -> int:
    """How good a cut right after ``atoms[i]`` is (0: only if nothing else fits)."""
    c = atoms[i].text
    if c == "\n":
        return _PARAGRAPH if i > 0 and atoms[i - 1].text == "\n" else _LINE
    if c.isspace():
        return _SENTENCE if i > 0 and atoms[i - 1].text in _SENTENCE_END else _WORD
    return 0


def _cut(atoms: list[_Atom], start: int, limit: int, byte_limit: int) -> int:
    """Where the piece starting at ``start`` ends (exclusive)."""
    used = size = 0
    latest: dict[int, tuple[int, int]] = {}  # strength -> (cut position, units before it)
    i = start
    while i < len(atoms) and used + atoms[i].units <= limit and size + atoms[i].size <= byte_limit:
        used += atoms[i].units
        size += atoms[i].size
        strength = _strength(atoms, i)
        if strength:
            latest[strength] = (i + 1, used)
        i += 1
    if i >= len(atoms):
        return i
    for strength in (_PARAGRAPH, _LINE, _SENTENCE, _WORD):
        found = latest.get(strength)
        if found is not None and found[1] >= limit / 2:
            return found[0]
    if latest:
        return max(pos for pos, _ in latest.values())
    return max(i, start + 1)  # a word longer than the limit: cut it here


def _track(stack: list[tuple[str, str]], tag: str) -> None:
    m = _TAG_NAME.match(tag)
    if m is None or tag.endswith("/>"):
        return
    name = m.group(1).lower()
    if tag.startswith("</"):
        for k in range(len(stack) - 1, -1, -1):
            if stack[k][0] == name:
                del stack[k:]
                break
    else:
        stack.append((name, tag))


__all__ = [
    "BLUESKY_MAX_BYTES",
    "MASTODON_URL_LENGTH",
    "Measure",
    "graphemes",
    "mastodon_length",
    "measure_length",
    "split_message",
    "units",
]
