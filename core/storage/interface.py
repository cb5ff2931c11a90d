"""The storage interface: one small protocol per concern, and :class:`Storage` for all of them.

The engine, the dispatcher and the runtime are typed against these
protocols and never import a backend: which database they talk to is the
caller's choice (:class:`~personae.storage.store.Store`, SQLite, is the
embedded default). Each protocol states the contract every backend keeps;
``tests/test_storage_contract.py`` checks it for each backend.

Two kinds of method: the log and state writers (``log``, ``log_exchange``,
``log_reaction``, ``save_state``) are plain functions that only queue, because
they run on the hot path of every message and a backend writes them in
batches; everything else is a coroutine that returns once the database has
committed it, because delivery guarantees depend on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, Self

from .records import IntakeEvent, IntakeRequest, IntakeStored, LogRow, OutboxItem, OutboxRow


class LogStore(Protocol):
    """The interaction log: every message in and out, every event, in order."""

    def log(self, row: LogRow) -> None:
        """Queue a log row. A row with a ``key`` is written once: logging it again changes nothing."""

    def log_reaction(
        self,
        direction: str,
        persona: str | None,
        platform: str | None,
        text: str | Mapping[str, Any] | None,
        rule: str | None,
        seed: int | None,
        status: str,
        event: str,
        run: str | None,
        mission_time: float,
        key: str | None = None,
    ) -> None:
        """Queue an ``event`` row or the ``out`` row of an event reaction (``mission_time`` in epoch seconds).

        A mapping as ``text`` (an event's data) is stored as its JSON text.
        """

    def log_exchange(
        self,
        persona: str,
        platform: str,
        chat: str,
        user: str,
        user_name: str,
        text: str,
        status: str,
        mission_time: float,
        run: str | None,
        reply: tuple[str, str, int | None, float] | None = None,
    ) -> None:
        """Queue the ``in`` row of a message and, with ``reply = (text, rule, seed, latency_ms)``, its ``out`` row."""

    async def flush(self) -> None:
        """Write everything queued (log rows and state); returns once it is committed."""

    async def query_log(
        self,
        *,
        persona: str | None = None,
        direction: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Interaction rows as dicts, oldest first (the last ``limit`` when given)."""


class StateStore(Protocol):
    """Persona state (``set:``), persona-wide or per chat, kept across restarts."""

    def save_state(self, persona: str, scope: str, chat: str, data: Mapping[str, Any]) -> None:
        """Queue the latest state of ``persona`` (scope ``persona`` or ``chat``); the last one queued wins."""

    async def load_states(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """All saved state, keyed by (persona, scope, chat), including what is still queued."""


class Outbox(Protocol):
    """Messages to send, written before they are sent, and what became of them."""

    async def outbox_add(self, items: Sequence[Mapping[str, Any] | OutboxRow]) -> None:
        """Insert messages to send, all or none; an existing idempotency ``key`` is left as is."""

    async def outbox_pending(
        self, *, adapters: Sequence[str] | None = None, after_id: int = 0, limit: int = 500
    ) -> list[OutboxItem]:
        """Oldest pending messages first (of these adapters, with ``id > after_id``)."""

    async def outbox_receipt(self, key: str) -> str | None:
        """What the platform answered for the message with idempotency ``key`` (``None``: not sent)."""

    async def outbox_mark(
        self, item_id: int, status: str, *, error: str | None = None, receipt: str | None = None
    ) -> None:
        """Record a delivery outcome (``sent``/``failed``) or a failed attempt (``pending``)."""

    async def outbox_mark_many(self, outcomes: Sequence[tuple[int, str, str | None, str | None]]) -> None:
        """Record several outcomes ``(id, status, error, receipt)`` at once, folded in order per row."""

    async def outbox_cancel(self, run: str, reason: str) -> int:
        """Mark every still-pending message of ``run`` failed with ``reason``; returns how many."""

    async def outbox_counts(self, run: str | None = None) -> dict[str, int]:
        """Outbox rows per status (for one run, if given)."""

    async def move_chat(self, adapter: str, old: str, new: str, pending: Sequence[int] = ()) -> None:
        """``old`` is now ``new`` (a group became a supergroup): move its subscription and these outbox rows.

        Both move together or not at all.
        """


class Subscriptions(Protocol):
    """Which chats receive an adapter's broadcasts."""

    async def subscribe(self, adapter: str, chat: str, persona: str) -> bool:
        """Subscribe ``chat``; ``False`` if it already was."""

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Unsubscribe ``chat``; ``False`` if it was not subscribed."""

    async def subscribers(self, adapter: str) -> list[str]:
        """Chats subscribed to ``adapter``'s broadcasts, oldest first."""

    async def subscribe_many(self, adapter: str, chats: Iterable[str], persona: str) -> None:
        """Bulk subscribe (imports, tests, benchmarks); chats already subscribed are left as they are."""


class Runs(Protocol):
    """Replay and live runs of a timeline: where each got to, so it can resume."""

    async def replay_get(self, run: str) -> dict[str, Any] | None:
        """A run's record (``run``, ``timeline``, ``options``, ``started``, ``position``, ``status``,
        ``timeline_hash``), or ``None``."""

    async def replay_start(
        self, run: str, timeline: str, options: Mapping[str, Any], *, timeline_hash: str | None = None
    ) -> None:
        """Record a new run, ``running``."""

    async def replay_progress(self, run: str, position: str, status: str | None = None) -> None:
        """Record how far a run got (the mission time of its last queued message); ``status`` if given."""


class Coordination(Protocol):
    """How the processes that share one database share its work (PostgreSQL with several workers).

    A backend that one process owns (SQLite) has none: that process sends
    everything itself. With one, each lane is sent by one process at a time
    (:meth:`exclusive`), and that process leases the rows it loads, so a
    process that dies leaves its rows to another once their lease expires.
    """

    #: Who this process is in the database (it owns the rows it leased).
    owner: str

    def exclusive(self, name: str, *, retry: float) -> AbstractAsyncContextManager[asyncio.Event]:
        """Wait until this process alone holds ``name`` (trying every ``retry`` seconds).

        Held until the block exits; the event is set if the hold is lost (the
        connection that holds it broke): the holder must then stop at once.
        When a holder dies, its hold ends with it.
        """

    async def outbox_lease(self, adapters: Sequence[str], limit: int, seconds: float) -> list[OutboxItem]:
        """Lease up to ``limit`` pending rows of ``adapters`` for ``seconds``, oldest first.

        Skips rows another process holds a live lease on, and every later row of
        the same chat (so each chat's messages go in order), and rows this process
        leased already.
        """

    async def outbox_renew(self, adapters: Sequence[str], seconds: float) -> int:
        """Extend this process's leases on pending rows of ``adapters`` to ``seconds`` from now; returns how many."""

    async def outbox_release(self, adapters: Sequence[str]) -> int:
        """Give up this process's leases on pending rows of ``adapters``; returns how many."""

    async def outbox_last_sent(self, adapters: Sequence[str]) -> float | None:
        """Seconds since a row of ``adapters`` was last marked sent (by any process), ``None`` if never."""


class EventIntake(Protocol):
    """Events posted over HTTP: stored before the 202, played after it (a crash in between plays them later)."""

    async def intake_add(self, requests: Sequence[IntakeRequest]) -> list[IntakeStored]:
        """Store posted events in one transaction, durable before returning.

        A request whose idempotency key or signature is already stored (or comes
        earlier in ``requests``) is not stored again: its answer is the stored
        event's id and fingerprint, with ``new`` false.
        """

    async def intake_pending(self, limit: int = 100) -> list[IntakeEvent]:
        """Stored events not yet played, oldest first."""

    async def intake_played(self, event_ids: Sequence[str]) -> None:
        """Record that these events' reactions are in the outbox: they are not played again."""

    async def writable(self) -> None:
        """Write to the database, or raise :class:`~personae.storage.records.StoreError` (readiness checks)."""


class Journal(LogStore, StateStore, Protocol):
    """What the engine writes and reads back: the log and persona state."""


class Storage(Journal, Outbox, Subscriptions, Runs, Protocol):
    """Every concern of one database, opened and closed as one."""

    #: Work sharing between processes (``None``: this process owns the database, e.g. SQLite).
    coordination: Coordination | None
    #: The HTTP intake's queue of posted events (``None``: this backend has none).
    intake: EventIntake | None

    async def open(self) -> Self:
        """Connect, check the database and migrate its schema; returns the store itself."""

    async def close(self) -> None:
        """Flush everything queued and disconnect. Safe to call twice."""

    async def __aenter__(self) -> Self:
        """:meth:`open`."""

    async def __aexit__(self, *exc: object) -> None:
        """:meth:`close`."""
