"""personae — give a voice to things that cannot speak.

The public surface is small: load personas (:func:`load_personas`), host them
in an :class:`Engine`, feed it :class:`Incoming` messages and :class:`Event`\\ s,
and deliver the :class:`Outgoing` messages it returns through an adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "Chat",
    "Diagnostic",
    "Engine",
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


#: Where each public name lives. They are imported on first use (PEP 562), so that
#: ``personae --help`` does not pay for pydantic, Jinja and YAML it never uses.
_LAZY = {
    "Chat": "engine.messages",
    "Event": "engine.messages",
    "Incoming": "engine.messages",
    "Outgoing": "engine.messages",
    "User": "engine.messages",
    "Persona": "engine.persona",
    "Diagnostic": "language.errors",
    "PersonaeError": "language.errors",
    "load_persona": "language.loader",
    "load_personas": "language.loader",
    "Engine": "engine.engine",
}


def __getattr__(name: str) -> object:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'personae' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .engine.engine import Engine
    from .engine.messages import Chat, Event, Incoming, Outgoing, User
    from .engine.persona import Persona
    from .language.errors import Diagnostic, PersonaeError
    from .language.loader import load_persona, load_personas
