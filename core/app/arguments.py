"""Argument types for the command line: a bad value is a usage error (exit 2), never a traceback later."""

from __future__ import annotations

import argparse
import os
from typing import Any

#: SQLite stores integers in 64 bits; seeds and counts beyond that cannot be logged.
INT64_MAX = 2**63 - 1


def _readable(text: str, what: str) -> str:
    """``text``, unless it holds bytes that were not valid UTF-8 (they arrive as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise argparse.ArgumentTypeError(f"{what} '{shown}' is not valid UTF-8") from None
    return text


def text(value: str) -> str:
    """Free text (a display name): anything valid UTF-8."""
    return _readable(value, "text")


def identifier(value: str) -> str:
    """A name (persona, event, adapter, run): not empty, valid UTF-8, no control characters."""
    _readable(value, "name")
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty name")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise argparse.ArgumentTypeError(f"name {value!r} has control characters")
    return value


def key_value(value: str) -> tuple[str, Any]:
    """``key=value`` event data (the value typed as in timelines)."""
    from .chat import parse_data

    _readable(value, "data")
    try:
        ((key, parsed),) = parse_data([value]).items()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return key, parsed


def seed_arg(value: str) -> int:
    """A whole number that fits in 64 bits."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{_readable(value, 'seed')}' is not a whole number") from None
    if not -INT64_MAX - 1 <= n <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{value} does not fit in 64 bits")
    return n


def count(value: str) -> int:
    """A whole number, 0 or more, that fits in 64 bits."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{_readable(value, 'number')}' is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative")
    if n > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{value} is too large")
    return n
