"""Prometheus metrics of one running bot, in a registry of its own (no process-wide state).

Counters are bumped where things happen (a message in, a message sent, a
reply queued); the dispatchers' own counters (retries, 429s, failures) and the
outbox are read when the metrics are scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..delivery.dispatcher import DispatchStats
    from .screen import Progress

#: Seconds from a message's arrival to its reply in the outbox: most are sub-millisecond.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """What ``GET /metrics`` exposes about one bot."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "personae_messages_in", "Messages received from users", ["persona", "platform"], registry=r
        )
        self.messages_out = Counter(
            "personae_messages_out", "Messages delivered to a platform (each piece of a split message)",
            ["persona", "platform"], registry=r,
        )  # fmt: skip
        self.replies = Counter("personae_replies", "Replies queued, per rule", ["persona", "rule"], registry=r)
        self.reply_latency = Histogram(
            "personae_reply_latency_seconds",
            "From a message's arrival to its reply queued in the outbox",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.events_received = Counter(
            "personae_http_events", "Events accepted by POST /events (stored, not repeats)", registry=r
        )
        self.http_responses = Counter("personae_http_responses", "HTTP intake answers", ["code"], registry=r)
        self.outbox = Gauge("personae_outbox_messages", "Outbox rows, per status", ["status"], registry=r)
        self.replay_done = Gauge("personae_replay_events_done", "Events of the replayed timeline played", registry=r)
        self.replay_total = Gauge("personae_replay_events_total", "Events of the replayed timeline", registry=r)
        self.replay_position = Gauge(
            "personae_replay_mission_time_seconds", "Mission time of the last replayed event (Unix time)", registry=r
        )
        #: The counters bumped once per message, by label values (see :class:`Labelled`).
        self.count_in = Labelled(self.messages_in)
        self.count_out = Labelled(self.messages_out)
        self.count_replies = Labelled(self.replies)

    def watch_delivery(self, stats: Callable[[], Mapping[str, DispatchStats]]) -> None:
        """Expose the dispatchers' counters (read at each scrape): ``stats()`` maps lane to counters."""
        self.registry.register(_DeliveryCollector(stats))

    def set_outbox(self, counts: Mapping[str, int]) -> None:
        """The outbox's rows per status (pending and failed are always shown, 0 when there are none)."""
        for status in ("pending", "failed", "sent"):
            self.outbox.labels(status).set(counts.get(status, 0))

    def track(self, progress: Progress, total: int) -> Progress:
        """``progress``, also counted in the replay gauges."""
        self.replay_total.set(total)
        self.replay_done.set(0)
        return _TrackedProgress(progress, self)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class Labelled:
    """A labelled counter whose child per label values is looked up once, then kept.

    ``Counter.labels()`` validates and normalises the values and takes a lock on
    every call; a replay sends a message per event, and that lookup cost more
    than the increment itself.
    """

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._children: dict[tuple[object, ...], Counter] = {}

    def inc(self, *labels: object) -> None:
        """Add one to the child with ``labels`` (created on first use, as ``labels()`` does)."""
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.counter.labels(*labels)
        child.inc()


class _TrackedProgress:
    """A replay's progress display that also moves the replay gauges."""

    def __init__(self, inner: Progress, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def advance(self, at: datetime) -> None:
        self._metrics.replay_done.inc()
        self._metrics.replay_position.set(at.timestamp())
        self._inner.advance(at)

    def close(self) -> None:
        self._inner.close()


class _DeliveryCollector(Collector):
    """The dispatchers' counters, as Prometheus counters labelled by lane."""

    def __init__(self, stats: Callable[[], Mapping[str, DispatchStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()
        families = (
            ("personae_rate_limited", "Sends the platform refused with 429 (retry after)", "rate_limited"),
            ("personae_retries", "Sends retried after a transient failure (429s included)", "retries"),
            ("personae_delivery_failed", "Messages given up on (permanent errors, chats gone)", "failed"),
        )
        for name, doc, attr in families:
            family = CounterMetricFamily(name, doc, labels=["lane"])
            for lane, s in sorted(stats.items()):
                family.add_metric([lane], float(getattr(s, attr)))
            yield family
