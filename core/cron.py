"""Cron expressions (via croniter), evaluated in UTC on any clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter


class CronError(ValueError):
    """A cron expression that cannot be used."""


def validate_cron(expr: str) -> None:
    """Raise :class:`CronError` with a readable message if ``expr`` is not valid."""
    if not isinstance(expr, str) or not expr.strip():
        raise CronError("empty cron expression")
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CronError(f"invalid cron expression '{expr}': expected 5 fields (minute hour day month weekday)")
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterBadCronError, CroniterNotAlphaError, ValueError, KeyError) as exc:
        raise CronError(f"invalid cron expression '{expr}': {exc}") from None


def fire_times(expr: str, after: datetime) -> Iterator[datetime]:
    """Fire times of ``expr`` strictly after ``after`` (UTC, aware), forever."""
    it = croniter(expr, after.astimezone(UTC))
    while True:
        try:
            nxt = it.get_next(datetime)
        except CroniterBadDateError:
            return
        yield nxt.astimezone(UTC)
