"""Diagnostics that point at a file position, and the exception that carries them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

#: A note says what a check could not look at (``lint`` passes with notes, even ``--strict``).
Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in an input file, located at ``file:line:column`` (1-based)."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        what = f"{self.path}: {self.message}" if self.path else self.message
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{where}: {tag}{what}"

    def as_dict(self) -> dict[str, object]:
        """The diagnostic as a JSON-ready mapping."""
        return asdict(self)


class PersonaeError(Exception):
    """Raised when input cannot be used; carries one or more :class:`Diagnostic`."""

    def __init__(self, diagnostics: Sequence[Diagnostic] | str) -> None:
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic("<input>", 1, 1, "", diagnostics)]
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class ConfigError(Exception):
    """A configuration or environment problem that stops the program with one clear line."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_path(path: Sequence[str | int]) -> str:
    """Render a data path as ``replies[3].when.regex``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
