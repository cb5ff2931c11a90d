"""An adapter that accepts everything and sends nowhere (benchmarks, dry runs)."""

from __future__ import annotations

from .base import Adapter, Delivery, IncomingHandler, Limits, Receipt


class NullAdapter(Adapter):
    """Counts deliveries; keeps the last few for inspection."""

    platform = "null"
    # Many sends in flight: a sink has no per-chat order to keep, and outcomes are group-committed.
    limits = Limits(max_length=1_000_000, concurrency=64)
    idempotent = True  # sending nowhere twice is still nowhere
    option_names = frozenset({"display_name"})
    lane = "null"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.count = 0
        self.delivered: list[Delivery] = []

    @property
    def channels(self) -> tuple[str, ...]:
        """Broadcasts go to the configured channels, else to one sink chat."""
        return self.config.channels or ("null",)

    async def start(self, on_message: IncomingHandler) -> None:
        """Nothing to connect to."""

    async def send(self, delivery: Delivery) -> Receipt:
        """Accept the message."""
        self.count += 1
        if len(self.delivered) < 10_000:
            self.delivered.append(delivery)
        return Receipt((str(self.count),))

    async def stop(self) -> None:
        """Nothing to close."""
