"""Text helpers: accent/case folding for matching, and cleaning text that enters from outside."""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s+")
_INVALID = re.compile("[\x00\ud800-\udfff]")


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
