"""The batched writer every backend shares: log rows and state changes queue in memory and are written in batches.

Logging never limits throughput: the hot path only appends a tuple to a
list, and a writer task hands the queue to the backend's sink every
``flush_interval`` seconds, or as soon as ``batch_size`` rows are waiting.
:meth:`BatchWriter.stop` flushes everything that was queued.

The queue holds two shapes of row, told apart by their length: a whole log
row (:data:`LOG_COLUMNS`, ``ROW_WIDTH`` fields, times in epoch seconds), or
an "exchange" — a message and its reply as one 14-field record
(:data:`EXCHANGE_FIELDS`; 10 without a reply), which the sink turns into two
rows. Building one tuple per message, and nothing else, is what keeps the
engine's hot path cheap; the sink does the rest off the event loop where it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .records import LogRow

log = logging.getLogger("personae.storage.store")

LOG_COLUMNS = (
    "ts", "direction", "persona", "platform", "chat", "user", "user_name", "text", "rule",
    "seed", "latency_ms", "status", "event", "run", "mission_time", "key",
)  # fmt: skip
EXCHANGE_FIELDS = (
    "ts", "persona", "platform", "chat", "user", "user_name", "in_text", "status", "mt", "run",
    "out_text", "rule", "seed", "latency",
)  # fmt: skip
ROW_WIDTH = 16  # a single row; anything shorter is an exchange (10 fields, or 14 with its reply)

#: Queued state: the latest JSON text per (persona, scope, chat).
States = dict[tuple[str, str, str], str]
#: Writes one batch, all or nothing: ``(rows, states)``.
Sink = Callable[[list[tuple[Any, ...]], States], Awaitable[None]]


def json_text(value: Any) -> str:
    """JSON text every backend accepts: a lone surrogate (invalid UTF-8) becomes U+FFFD."""
    from ..language.text import valid_unicode

    return valid_unicode(json.dumps(value, ensure_ascii=False, default=str))


class BatchWriter:
    """The queues of log rows and state changes, and the task that hands them to ``sink``.

    ``rows`` and ``states`` are public so the log and state classes append
    to them directly: one list append per message is the whole cost of
    logging on the event loop. A producer that fills ``rows`` to
    ``batch_size`` calls :meth:`wake`.
    """

    def __init__(self, sink: Sink, *, batch_size: int, flush_interval: float) -> None:
        self._sink = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.rows: list[tuple[Any, ...]] = []
        #: Only the last change per key reaches the disk.
        self.states: States = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._flushing = asyncio.Lock()
        self._on_cancel: Callable[[], Awaitable[None]] | None = None

    def wake(self) -> None:
        """Write the queue now rather than at the next tick (a full batch is waiting)."""
        self._wake.set()

    def start(self, on_cancel: Callable[[], Awaitable[None]]) -> None:
        """Start the writer task; ``on_cancel`` closes the store if the event loop cancels it."""
        self._on_cancel = on_cancel
        self._task = asyncio.create_task(self._write_loop(), name="personae-store-writer")

    async def stop(self) -> None:
        """Stop the writer task, then write what is still queued."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await asyncio.shield(self._task)
            self._task = None
        await self.flush()

    async def _write_loop(self) -> None:
        try:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._wake.clear()
                try:
                    await self.flush()
                except Exception as exc:
                    # Keep the writer alive; the rows stay queued and are retried next tick.
                    log.error("could not write the log: %s", exc)
                    await asyncio.sleep(self.flush_interval)
        except asyncio.CancelledError:
            if not self._closing and self._on_cancel is not None:
                # Cancelled by the event loop shutting down (``asyncio.run`` after an
                # error left the store open): write what is queued and close, or the
                # connection's non-daemon thread keeps the process alive for ever.
                self._task = None
                with contextlib.suppress(Exception):
                    await self._on_cancel()
            raise

    async def flush(self) -> None:
        """Write every queued row and state change now; returns once they are committed.

        Flushes run one at a time: a flush that finds the queue empty while the
        writer task's flush is still in flight waits for it, so "flushed" means
        on disk.
        """
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        if not self.rows and not self.states:
            return
        rows, self.rows = self.rows, []
        states, self.states = self.states, {}
        try:
            await self._sink(rows, states)
        except Exception:
            # The sink commits all or nothing: queue it all again.
            self.rows[:0] = rows
            for k, v in states.items():
                self.states.setdefault(k, v)
            raise


class LogQueue:
    """The writing half of :class:`~personae.storage.interface.LogStore`: rows queue on a :class:`BatchWriter`.

    A backend's log class adds ``query_log``.
    """

    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    def log(self, row: LogRow) -> None:
        """Queue a log row (written by the writer task, in batches)."""
        writer = self._writer
        writer.rows.append(
            (
                row.ts.timestamp() if row.ts else time.time(),
                row.direction,
                row.persona,
                row.platform,
                row.chat,
                row.user,
                row.user_name,
                row.text,
                row.rule,
                row.seed,
                row.latency_ms,
                row.status,
                row.event,
                row.run,
                row.mission_time.timestamp() if row.mission_time else None,
                row.key,
            )
        )
        if len(writer.rows) >= writer.batch_size:
            writer.wake()

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
        """Queue an ``event`` row or the ``out`` row of an event reaction, without a :class:`LogRow`.

        Same row as :meth:`log`; this runs once or twice per replayed event.
        ``mission_time`` is in epoch seconds. A mapping as ``text`` (an
        event's data) is stored as its JSON text. A row with a ``key`` is
        written once: logging it again (a resumed replay) changes nothing.
        """
        writer = self._writer
        writer.rows.append(
            (time.time(), direction, persona, platform, None, None, None, text, rule, seed, None, status, event, run,
             mission_time, key)
        )  # fmt: skip
        if len(writer.rows) >= writer.batch_size:
            writer.wake()

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
        """Queue the ``in`` row of a message and, with ``reply = (text, rule, seed, latency_ms)``, its ``out`` row.

        The same rows as two :meth:`log` calls, built without the
        intermediate :class:`LogRow`s: this runs once per message on the hot path.
        ``mission_time`` is in epoch seconds.
        """
        exchange: tuple[Any, ...]
        if reply is None:
            exchange = (time.time(), persona, platform, chat, user, user_name, text, status, mission_time, run)
        else:
            exchange = (time.time(), persona, platform, chat, user, user_name, text, status, mission_time, run, *reply)
        writer = self._writer
        rows = writer.rows
        rows.append(exchange)
        if len(rows) >= writer.batch_size:
            writer.wake()

    async def flush(self) -> None:
        """Write every queued row and state change now (see :meth:`BatchWriter.flush`)."""
        await self._writer.flush()
