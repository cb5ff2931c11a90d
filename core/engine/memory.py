"""Small records the engine keeps per persona and key, saved with persona state under a scope of their own.

Cooldowns, per-user limits and the latest picks of say lists all need to
survive a restart. They ride on the existing state storage
(:class:`~personae.storage.interface.StateStore`): each kind is one scope,
each record one row keyed by (persona, scope, key), so no backend needs a
table of its own and the storage contract already covers them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Queues one record for saving: (persona, scope, key, data). The engine decides whether it persists.
Save = Callable[[str, str, str, Mapping[str, Any]], None]


class ScopedMemory:
    """Records of one ``scope`` in memory, each change handed to ``save``."""

    def __init__(self, scope: str, save: Save | None = None) -> None:
        self.scope = scope
        self._save = save
        self._records: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, persona: str, key: str) -> Mapping[str, Any]:
        """The record of ``persona`` under ``key`` (empty if none)."""
        return self._records.get((persona, key), {})

    def put(self, persona: str, key: str, record: dict[str, Any]) -> None:
        """Replace the record and queue it for saving."""
        self._records[(persona, key)] = record
        if self._save is not None:
            self._save(persona, self.scope, key, record)

    def load(self, persona: str, key: str, record: Mapping[str, Any]) -> None:
        """Take a record read back from the store (nothing is saved)."""
        if isinstance(record, Mapping):
            self._records[(persona, key)] = dict(record)
