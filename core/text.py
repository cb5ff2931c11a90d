"""Text helpers: accent/case folding for matching, and splitting long messages."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")
_INVALID = re.compile("[\x00\ud800-\udfff]")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")


def valid_unicode(text: str) -> str:
    """``text`` with lone surrogates and NUL characters replaced by U+FFFD.

    A platform's JSON may carry ``"\\ud800"``, which Python decodes to a
    string that cannot be encoded as UTF-8 (SQLite, and every later step,
    would refuse it), or ``"\\u0000"``, at which SQLite's JSON functions
    would cut the text short. User text is cleaned once, where it enters.
    """
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _INVALID.sub("\ufffd", text)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def fold(text: str) -> str:
    """Lower-case and strip accents, so ``"Comète"`` and ``"comete"`` compare equal."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """Folded whole words of ``text``."""
    return _WORD.findall(fold(text))


def squash(text: str) -> str:
    """Folded text with runs of whitespace collapsed, for exact matching."""
    return _SPACES.sub(" ", fold(text)).strip()


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters.

    Prefers sentence boundaries, then word boundaries; a single word longer
    than ``limit`` is the only thing ever cut.
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return [text]
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text, limit):
        candidate = f"{current} {piece}" if current else piece
        if len(candidate) <= limit:
            current = candidate
        else:
            if current:
                chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def _pieces(text: str, limit: int) -> list[str]:
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if len(sentence) <= limit:
            out.append(sentence)
            continue
        for word in sentence.split():
            while len(word) > limit:
                out.append(word[:limit])
                word = word[limit:]
            if word:
                out.append(word)
    return out
