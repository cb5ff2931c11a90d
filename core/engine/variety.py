"""``no_repeat``: a say list or phrase bank avoids its latest picks in a chat.

The pick stays a pure function of the seed and what came before: of the
options not among the latest ``n`` picks, the seed chooses one. The same
seed and the same messages give the same picks, run after run, and the
history is saved (a :class:`~personae.engine.memory.ScopedMemory`) so a
restart does not repeat what was just said.
"""

from __future__ import annotations

from .memory import ScopedMemory

#: The state scope the latest picks are saved under.
SCOPE = "recent"


class Variety:
    """The latest picks of each say list and phrase bank, per persona and chat."""

    def __init__(self, memory: ScopedMemory) -> None:
        self.memory = memory

    def pick(self, persona: str, chat: str, key: str, count: int, seed: int, n: int) -> int:
        """Index of the option to say among ``count``, avoiding the latest ``n`` picks of ``key`` in ``chat``.

        Of ``count`` options at most ``count - 1`` can be avoided; ``n <= 0`` is a plain seeded pick.
        """
        if n <= 0 or count <= 1:
            return seed % count if count else 0
        keep = min(n, count - 1)
        record = self.memory.get(persona, chat)
        saved = record.get(key)
        # A saved record in another shape (edited by hand, another version) is no history.
        saved = saved if isinstance(saved, list) else []
        latest = [i for i in saved if type(i) is int and 0 <= i < count][-keep:]
        allowed = [i for i in range(count) if i not in latest]
        choice = allowed[seed % len(allowed)]
        self.memory.put(persona, chat, {**record, key: [*latest, choice][-keep:]})
        return choice
