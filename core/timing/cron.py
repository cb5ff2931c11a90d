"""Cron expressions (via croniter), evaluated in UTC on any clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter


class CronError(ValueError):
    """A cron expression that cannot be used."""


def zone(name: str) -> tzinfo:
    """An IANA time zone; :class:`CronError` if unknown."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone '{name}' (use an IANA name like Europe/Paris)") from None


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


def fire_times(expr: str, after: datetime, tz: str = "UTC") -> Iterator[datetime]:
    """Fire times (as UTC) of ``expr`` read in zone ``tz``, strictly after ``after``, forever.

    Reading the fields in a local zone makes "09:00 every day" follow daylight
    saving time, as people expect.
    """
    it = croniter(expr, after.astimezone(zone(tz)))
    while True:
        try:
            nxt = it.get_next(datetime)
        except (CroniterBadDateError, OverflowError, ValueError):
            return  # no date left (or none before year 9999, where datetime ends)
        yield nxt.astimezone(UTC)
