"""The values that flow through the engine: who spoke, where, and what is said back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..language.media import describe
from ..language.text import valid_unicode


@dataclass(frozen=True, slots=True)
class User:
    """Someone who writes to a persona."""

    id: str
    name: str
    username: str | None = None
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class Chat:
    """A conversation: a private chat, a group or a channel."""

    id: str
    type: str = "private"
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message a user sent to ``persona`` on ``platform``."""

    persona: str
    platform: str
    chat: Chat
    user: User
    text: str
    message_id: str | None = None
    #: The bot's own username, so ``/cmd@OtherBot`` is recognised as not ours.
    bot_username: str | None = None
    received_at: datetime | None = None
    #: Name of the adapter instance that received it (several may share a platform).
    adapter: str | None = None
    #: ``"text"`` for messages a persona answers; anything else (``"sticker"``,
    #: ``"photo"``, ``"edited"``, ``"join"``, ``"chatter"``, ``"added"``…) is logged and ignored,
    #: except ``"removed"`` (the bot was removed from the chat, or blocked), which unsubscribes it.
    kind: str = "text"
    #: Whether the persona's fallback may answer. Off for ambient channel talk
    #: that only keyword/regex rules should react to.
    fallback: bool = True

    def cleaned(self) -> Incoming:
        """This message with every user-supplied string made valid Unicode (see ``valid_unicode``)."""
        u, c = self.user, self.chat
        every = f"{self.text}{u.name}{u.username or ''}{c.title or ''}"  # one check, not four: this runs per message
        if every.isascii() and "\x00" not in every:
            return self
        return replace(
            self,
            text=valid_unicode(self.text),
            user=replace(u, name=valid_unicode(u.name), username=u.username and valid_unicode(u.username)),
            chat=replace(c, title=c.title and valid_unicode(c.title)),
        )


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened: a timeline milestone, an emit, a scheduled tick."""

    name: str
    at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    source: str = "event"
    #: Only this persona reacts when set; otherwise every persona of ``cast`` handling ``name``.
    persona: str | None = None
    #: How many ``emit`` hops led here; bounded by the engine.
    depth: int = 0
    #: Stable identity, used for idempotency keys in the outbox.
    key: str = ""
    #: Who this event can reach: a timeline's cast, inherited by the events its reactions emit.
    #: ``None`` (an admin ``/emit``, ``personae emit``, a reply's emit): every persona handling it.
    cast: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """A file sent with a message: its absolute ``path``, MIME type, and alt text (may be empty)."""

    path: str
    mime: str
    alt: str = ""

    @property
    def name(self) -> str:
        """The file name, as shown and uploaded."""
        return Path(self.path).name

    @property
    def kind(self) -> str:
        """``image``, ``audio`` or ``video``."""
        return self.mime.split("/", 1)[0]


def media_json(media: tuple[Media, ...]) -> str | None:
    """``media`` as the outbox stores it (``None`` when there is none)."""
    if not media:
        return None
    return json.dumps([[m.path, m.mime, m.alt] for m in media], ensure_ascii=False)


def shown_lines(text: str, media: tuple[Media, ...]) -> list[str]:
    """What a terminal shows of a message: its text (when there is one), then one line per file."""
    return ([text] if text else []) + [describe(m.name, m.kind, m.alt) for m in media]


def media_from_json(text: str | None) -> tuple[Media, ...]:
    """The media of an outbox row (what :func:`media_json` wrote)."""
    if not text:
        return ()
    return tuple(Media(str(p), str(m), str(a)) for p, m, a in json.loads(text))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message the engine wants delivered.

    ``chat`` is ``None`` for a broadcast: the runtime fans it out to subscribers
    and configured channels of every adapter serving ``persona`` on ``platform``.
    """

    persona: str
    platform: str
    chat: str | None
    text: str
    reply_to: str | None = None
    rule: str = ""
    seed: int = 0
    event: str | None = None
    key: str = ""
    at: datetime | None = None
    #: For replies: the adapter instance that must deliver it.
    adapter: str | None = None
    #: Files sent with the text (the first piece of it, when it is split).
    media: tuple[Media, ...] = ()
