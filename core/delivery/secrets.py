"""Keep tokens out of every log line, error message, database row and stderr.

A token rarely leaks as itself. Client libraries and servers transform the
text around it before it reaches us: python-telegram-bot capitalises the first
letter of an error description, so a server that echoes the request path puts
the token there lower-cased; URLs carry it percent-encoded (``%3A`` for
``:``), sometimes twice; a message may be cut short in the middle of it. The
:class:`Redactor` therefore matches each secret

* in any letter case (``re.IGNORECASE``);
* with any of its characters written as ``%XX``, ``\\xXX``, ``\\u00XX`` or an
  HTML character reference, in as many as four layers (``%253A``);
* in pieces: any run of at least :data:`MIN_PIECE` of its characters (a
  message cut short, the secret half of ``123:SECRET`` without the bot id).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from typing import TextIO

MASK = "***"

#: Shorter values are not registered: they would mask ordinary words.
MIN_SECRET = 6
#: A piece of a secret (cut short, or its part after the bot id) this long is masked.
MIN_PIECE = 10


#: How a library may write one character: ``%XX``, ``\\xXX``, ``\\uXXXX``, an HTML character reference.
_ESCAPED = re.compile(r"%([0-9a-f]{2})|\\x([0-9a-f]{2})|\\u([0-9a-f]{4})|&#x([0-9a-f]{1,6});|&#([0-9]{1,7});", re.I)
#: Text encoded more often than this (``%2525...``) is not decoded further.
_MAX_DECODE = 4


def _decode_once(text: str, raw: bool) -> tuple[str, list[int]]:
    """Decode one layer of escapes, to UTF-8 bytes written as latin-1 characters.

    ``raw`` says that ``text`` already is such bytes (a layer decoded before).
    Returns the decoded text and, for each of its characters, the index of the
    character or escape of ``text`` it came from.
    """
    out: list[str] = []
    starts: list[int] = []

    def literal(begin: int, end: int) -> None:
        for i in range(begin, end):
            data = text[i] if raw else text[i].encode("utf-8", "surrogatepass").decode("latin-1")
            out.append(data)
            starts.extend([i] * len(data))

    pos = 0
    for m in _ESCAPED.finditer(text):
        literal(pos, m.start())
        hexa = m.group(1) or m.group(2)
        if hexa is not None:
            data = chr(int(hexa, 16))
        else:
            number = m.group(3) or m.group(4)
            code = int(number, 16) if number else int(m.group(5))
            data = chr(min(code, 0x10FFFF)).encode("utf-8", "surrogatepass").decode("latin-1")
        out.append(data)
        starts.extend([m.start()] * len(data))
        pos = m.end()
    literal(pos, len(text))
    starts.append(len(text))
    return "".join(out), starts


def _canonical(text: str) -> tuple[str, list[int]]:
    """``text`` with every layer of escapes decoded, and where each decoded character came from.

    ``starts[i]`` is the index in ``text`` of what produced character ``i``;
    ``starts[-1]`` is ``len(text)``.
    """
    canon, starts = _decode_once(text, raw=False)
    for _ in range(_MAX_DECODE - 1):
        if _ESCAPED.search(canon) is None:
            break
        canon, inner = _decode_once(canon, raw=True)
        starts = [starts[i] for i in inner]
    return canon, starts


def _pieces(secret: str) -> set[str]:
    """Every run of ``MIN_PIECE`` characters of ``secret`` (all of it if shorter), as UTF-8 bytes in latin-1."""
    raw = secret.encode("utf-8", "surrogatepass").decode("latin-1")
    size = min(len(raw), MIN_PIECE)
    return {raw[i : i + size] for i in range(len(raw) - size + 1)}


class Redactor:
    """Replaces known secret values, however a library wrote them, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._pieces: set[str] = set()
        #: Secrets that change while running (session tokens), by owner: the newest replace the older.
        self._tracked: dict[str, set[str]] = {}
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Register more secret values (ignores short strings that would mask ordinary text)."""
        for s in secrets:
            if s and len(s) >= MIN_SECRET:
                self._pieces |= _pieces(s)
        self._compile()

    def track(self, owner: str, *secrets: str) -> None:
        """Set ``owner``'s current short-lived secrets (a session's tokens), replacing its previous ones.

        Tokens renewed every hour would otherwise pile up for as long as the bot runs;
        an expired or revoked one is worth nothing.
        """
        self._tracked[owner] = set().union(*(_pieces(s) for s in secrets if s and len(s) >= MIN_SECRET))
        self._compile()

    def _compile(self) -> None:
        pieces = self._pieces.union(*self._tracked.values())
        if pieces:
            # A lookahead finds overlapping pieces: their union is what gets masked.
            alternatives = "|".join(re.escape(p) for p in sorted(pieces))
            self._pattern = re.compile(f"(?=({alternatives}))", re.IGNORECASE)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        """``text`` with every secret masked."""
        if self._pattern is None or not text:
            return text
        starts: list[int] | None = None
        if text.isascii() and _ESCAPED.search(text) is None:
            canon = text  # the usual case: nothing to decode, indices are the text's own
        else:
            canon, starts = _canonical(text)
        spans: list[list[int]] = []
        for m in self._pattern.finditer(canon):
            begin, end = m.start(), m.start() + len(m.group(1))
            if starts is not None:
                begin, end = starts[begin], starts[end]
            if spans and begin <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([begin, end])
        if not spans:
            return text
        pieces, pos = [], 0
        for begin, end in spans:
            pieces += [text[pos:begin], MASK]
            pos = end
        pieces.append(text[pos:])
        return "".join(pieces)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message, exception and stack text.

    Installed on the root logger's handlers, it also covers third-party
    libraries (HTTP clients log request URLs, which carry Telegram tokens).
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        if record.exc_info:
            formatter = logging.Formatter()
            message = f"{message}\n{formatter.formatException(record.exc_info)}"
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        record.msg = self.redactor(message)
        record.args = None
        return True


def install_log_redaction(redactor: Redactor) -> None:
    """Mask secrets in every log record this process creates, whichever library logs it.

    Logging is process-wide by nature, so this wraps the record factory (which
    sees records of every logger, propagated or not) rather than one handler.
    Installing it twice with the same redactor is harmless.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redactor", None) is redactor:
        return
    flt = RedactingFilter(redactor)

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            flt.filter(record)
        except Exception:  # a malformed log call must not break the caller
            record.msg, record.args = redactor(str(record.msg)), None
        return record

    factory.redactor = redactor  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class RedactingStream(io.TextIOBase):
    """A text stream that masks secrets in what is written to ``target``.

    Writes are held until the end of their line, so a secret written in two
    pieces is still seen whole. For stderr: warnings, tracebacks of threads
    and anything else a library prints go through it.
    """

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self.target = target
        self.redactor = redactor
        self._pending = ""

    def writable(self) -> bool:
        """Always."""
        return True

    def write(self, text: str) -> int:
        """Write every complete line (masked); keep the rest for later."""
        self._pending += text
        head, newline, rest = self._pending.rpartition("\n")
        if newline:
            self._pending = rest
            self.target.write(self.redactor(head + newline))
        return len(text)

    def flush(self) -> None:
        """Write what is held (masked) and flush the target."""
        if self._pending:
            pending, self._pending = self._pending, ""
            self.target.write(self.redactor(pending))
        self.target.flush()

    def isatty(self) -> bool:
        """Whether the target is a terminal."""
        return self.target.isatty()

    def fileno(self) -> int:
        """The target's file descriptor."""
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The target's encoding."""
        return str(getattr(self.target, "encoding", "utf-8"))
