"""What goes in and out of storage, whatever the backend: log rows, outbox items, errors.

These are plain values with no tie to a database, so the engine, the
dispatcher and the runtime can build and read them without importing a
backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class StoreError(Exception):
    """The database cannot be used (not SQLite, read-only, unreachable)."""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One row of the interaction log."""

    direction: str
    persona: str | None = None
    platform: str | None = None
    chat: str | None = None
    user: str | None = None
    user_name: str | None = None
    text: str | None = None
    rule: str | None = None
    seed: int | None = None
    latency_ms: float | None = None
    status: str | None = None
    event: str | None = None
    run: str | None = None
    mission_time: datetime | None = None
    ts: datetime | None = None
    #: Identity of a row that may be logged again (a resumed replay): written once, later copies ignored.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message waiting in (or delivered from) the outbox."""

    id: int
    key: str
    run: str | None
    persona: str
    adapter: str
    chat: str
    text: str
    reply_to: str | None
    event: str | None
    rule: str | None
    mission_time: str | None
    status: str
    attempts: int
    #: The files sent with it, as JSON (see :func:`personae.engine.messages.media_from_json`).
    media: str | None = None


#: The fields of an outbox message, in :data:`OutboxRow` order.
OUTBOX_FIELDS = (
    "key", "run", "persona", "adapter", "chat", "text", "reply_to", "event", "rule", "mission_time", "media",
)  # fmt: skip
#: A message for :meth:`~personae.storage.interface.Outbox.outbox_add`, in ``OUTBOX_FIELDS`` order:
#: ``(key, run, persona, adapter, chat, text, reply_to, event, rule, mission_time, media)``.
#: A row without its last field (``media``, added later) is read as having none.
OutboxRow = (
    tuple[str, str | None, str, str, str, str, str | None, str | None, str | None, str | None, str | None]
    | tuple[str, str | None, str, str, str, str, str | None, str | None, str | None, str | None]
)


def full_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with every field of :data:`OUTBOX_FIELDS` (the ones it lacks as ``None``)."""
    missing = len(OUTBOX_FIELDS) - len(row)
    return (*row, *(None,) * missing) if missing > 0 else row


def utcnow() -> str:
    """Current UTC time as ISO 8601 text."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class IntakeRequest:
    """An event posted over HTTP, to store: ``data`` is JSON text; ``fingerprint`` identifies the request's content."""

    id: str
    event: str
    persona: str | None
    data: str
    fingerprint: str
    idempotency_key: str | None = None
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class IntakeStored:
    """The stored event that answers a request: the request's own (``new``), or an earlier one's."""

    id: str
    fingerprint: str
    new: bool


@dataclass(frozen=True, slots=True)
class IntakeEvent:
    """A stored event waiting to be played."""

    id: str
    event: str
    persona: str | None
    data: dict[str, Any]
