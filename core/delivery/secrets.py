"""Keep tokens out of every log line, error message and database row."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"


class Redactor:
    """Replaces known secret values (and their URL-encoded forms) with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Register more secret values (ignores short strings that would mask ordinary text)."""
        from urllib.parse import quote

        for s in secrets:
            if s and len(s) >= 6:
                self._secrets.update({s, quote(s, safe=""), quote(s)})
        if self._secrets:
            alternatives = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def __call__(self, text: str) -> str:
        """``text`` with every secret masked."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the formatted message and exception text.

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
