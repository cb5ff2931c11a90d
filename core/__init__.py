"""personae — give a voice to things that cannot speak.

The public surface is small: load personas (:func:`load_personas`), host them
in an :class:`Engine`, feed it :class:`Incoming` messages and :class:`Event`\\ s,
and deliver the :class:`Outgoing` messages it returns through an adapter.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .engine.messages import Chat, Event, Incoming, Outgoing, User
from .engine.persona import Persona
from .language.errors import Diagnostic, PersonaeError
from .language.loader import load_persona, load_personas

__all__ = [
    "Chat",
    "Diagnostic",
    "Event",
    "Incoming",
    "Outgoing",
    "Persona",
    "PersonaeError",
    "User",
    "__version__",
    "load_persona",
    "load_personas",
]


def __getattr__(name: str) -> object:
    # The engine pulls in the store (aiosqlite); import it lazily so `personae lint`
    # and `personae schema` start fast.
    if name == "Engine":
        from .engine.engine import Engine

        return Engine
    raise AttributeError(name)
