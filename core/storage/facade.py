"""A whole store made of one object per concern: what every backend's store class is built on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .interface import Coordination, EventIntake, LogStore, Outbox, Runs, StateStore, Subscriptions
from .records import LogRow, OutboxItem, OutboxRow


class Composite:
    """Every method of :class:`~personae.storage.interface.Storage` but ``open`` and ``close``, delegated.

    A backend builds its five concern objects over one shared connection and
    passes them here; its own class adds the lifecycle. Keeping the concerns
    apart keeps each one small and testable; keeping one object in front of
    them lets the engine, the dispatcher and the runtime share one store.
    """

    def __init__(
        self,
        *,
        log: LogStore,
        state: StateStore,
        outbox: Outbox,
        subscriptions: Subscriptions,
        runs: Runs,
        coordination: Coordination | None = None,
        intake: EventIntake | None = None,
    ) -> None:
        self._log = log
        self._state = state
        self._outbox = outbox
        self._subscriptions = subscriptions
        self._runs = runs
        #: Work sharing between processes (``None``: one process owns the database).
        self.coordination = coordination
        #: The HTTP intake's queue of posted events.
        self.intake = intake

    async def flush(self) -> None:
        """Write every queued row and state change now; returns once they are committed."""
        await self._log.flush()

    # -- log (queued: these run on the hot path, so each is one call to the concern)

    def log(self, row: LogRow) -> None:
        """Queue a log row (written by the writer task, in batches)."""
        self._log.log(row)

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
        """Queue an ``event`` row or the ``out`` row of an event reaction ."""
        self._log.log_reaction(direction, persona, platform, text, rule, seed, status, event, run, mission_time, key)

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
        self._log.log_exchange(persona, platform, chat, user, user_name, text, status, mission_time, run, reply)

    async def query_log(
        self,
        *,
        persona: str | None = None,
        direction: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Interaction rows, oldest first (the last ``limit`` when given)."""
        return await self._log.query_log(persona=persona, direction=direction, since=since, limit=limit)

    # -- state

    def save_state(self, persona: str, scope: str, chat: str, data: Mapping[str, Any]) -> None:
        """Queue the latest state of ``persona`` (scope ``persona`` or ``chat``)."""
        self._state.save_state(persona, scope, chat, data)

    async def load_states(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """All saved state, keyed by (persona, scope, chat)."""
        return await self._state.load_states()

    # -- outbox

    async def outbox_add(self, items: Sequence[Mapping[str, Any] | OutboxRow]) -> None:
        """Insert messages to send, in one transaction; an existing idempotency ``key`` is left as is."""
        await self._outbox.outbox_add(items)

    async def outbox_pending(
        self, *, adapters: Sequence[str] | None = None, after_id: int = 0, limit: int = 500
    ) -> list[OutboxItem]:
        """Oldest pending messages first (of these adapters, with ``id > after_id``)."""
        return await self._outbox.outbox_pending(adapters=adapters, after_id=after_id, limit=limit)

    async def outbox_receipt(self, key: str) -> str | None:
        """What the platform answered for the message with idempotency ``key`` (``None``: not sent)."""
        return await self._outbox.outbox_receipt(key)

    async def outbox_mark(
        self, item_id: int, status: str, *, error: str | None = None, receipt: str | None = None
    ) -> None:
        """Record a delivery outcome (``sent``/``failed``) or a failed attempt (``pending``)."""
        await self._outbox.outbox_mark(item_id, status, error=error, receipt=receipt)

    async def outbox_mark_many(self, outcomes: Sequence[tuple[int, str, str | None, str | None]]) -> None:
        """Record several outcomes ``(id, status, error, receipt)`` in one transaction (group commit)."""
        await self._outbox.outbox_mark_many(outcomes)

    async def outbox_cancel(self, run: str, reason: str) -> int:
        """Mark every still-pending message of ``run`` failed with ``reason``; returns how many."""
        return await self._outbox.outbox_cancel(run, reason)

    async def outbox_counts(self, run: str | None = None) -> dict[str, int]:
        """Outbox rows per status (for one run, if given)."""
        return await self._outbox.outbox_counts(run)

    async def move_chat(self, adapter: str, old: str, new: str, pending: Sequence[int] = ()) -> None:
        """``old`` is now ``new`` (a group became a supergroup): move its subscription and these outbox rows."""
        await self._outbox.move_chat(adapter, old, new, pending)

    # -- subscriptions

    async def subscribe(self, adapter: str, chat: str, persona: str) -> bool:
        """Subscribe ``chat``; ``False`` if it already was."""
        return await self._subscriptions.subscribe(adapter, chat, persona)

    async def unsubscribe(self, adapter: str, chat: str) -> bool:
        """Unsubscribe ``chat``; ``False`` if it was not subscribed."""
        return await self._subscriptions.unsubscribe(adapter, chat)

    async def subscribers(self, adapter: str) -> list[str]:
        """Chats subscribed to ``adapter``'s broadcasts, oldest first."""
        return await self._subscriptions.subscribers(adapter)

    async def subscribe_many(self, adapter: str, chats: Iterable[str], persona: str) -> None:
        """Bulk subscribe (imports, tests, benchmarks)."""
        await self._subscriptions.subscribe_many(adapter, chats, persona)

    # -- runs

    async def replay_get(self, run: str) -> dict[str, Any] | None:
        """A replay run's record, or ``None``."""
        return await self._runs.replay_get(run)

    async def replay_start(
        self, run: str, timeline: str, options: Mapping[str, Any], *, timeline_hash: str | None = None
    ) -> None:
        """Record a new replay run (``timeline_hash``: what :func:`personae.app.replay.content_hash` gave)."""
        await self._runs.replay_start(run, timeline, options, timeline_hash=timeline_hash)

    async def replay_progress(self, run: str, position: str, status: str | None = None) -> None:
        """Record how far a replay got (the mission time of its last queued message); ``status`` if given."""
        await self._runs.replay_progress(run, position, status)
