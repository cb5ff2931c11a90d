"""A compiled persona: immutable, ready to answer. Built by :mod:`personae.language.loader`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..language.schema import PersonaFile
from ..language.templates import Text
from .messages import Media
from .router import Router


@dataclass(frozen=True, slots=True)
class EmitAction:
    """Raise ``event`` with ``data`` (values may be templates), maybe later; for ``persona`` only, if named."""

    event: str
    data: Mapping[str, Text | Any]
    delay: timedelta | None = None
    persona: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """``set:`` of one key, persona-wide (``scope='persona'``) or per chat (``'chat'``)."""

    scope: str
    key: str
    value: Text | Any


@dataclass(frozen=True, slots=True)
class CooldownRule:
    """After firing, a rule rests for ``duration``, counted ``per`` chat, user or globally.

    While it rests it is skipped, or says one of ``say`` when given.
    """

    duration: timedelta
    per: str
    say: tuple[Text, ...] = ()


@dataclass(frozen=True, slots=True)
class Action:
    """What a rule, event reaction, fallback or schedule entry does when it fires."""

    name: str
    where: str
    say: tuple[Text, ...] = ()
    platforms: Mapping[str, tuple[Text, ...]] = field(default_factory=dict)
    assign: tuple[Assignment, ...] = ()
    emit: tuple[EmitAction, ...] = ()
    condition: Callable[..., Any] | None = None
    delay: timedelta | None = None
    #: Firing needs a template context (a template, ``set`` or ``emit``); computed at load.
    dynamic: bool = True
    media: tuple[Media, ...] = ()
    #: The platforms whose variant has media of its own (an empty tuple: none there).
    platform_media: Mapping[str, tuple[Media, ...]] = field(default_factory=dict)
    cooldown: CooldownRule | None = None
    #: Avoid this many of the latest picks of ``say`` (``None``: the persona's default).
    no_repeat: int | None = None

    def variants(self, platform: str) -> tuple[Text, ...]:
        """The ``say`` options for ``platform`` (its variant, else the default)."""
        return self.platforms.get(platform) or self.say

    def media_for(self, platform: str) -> tuple[Media, ...]:
        """The files sent with a message on ``platform`` (its variant's, else the default)."""
        return self.platform_media.get(platform, self.media)


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A cron entry: fires ``event`` on the clock and runs ``action``."""

    cron: str
    event: str
    action: Action
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``messages`` messages per user in any ``per``; past it ``notice`` is said once."""

    messages: int
    per: timedelta
    notice: Action


@dataclass(frozen=True)
class Persona:
    """A persona ready to run. Immutable: reloading builds a new one."""

    id: str
    name: str
    description: str
    locale: str
    file: str
    state: Mapping[str, Any]
    chat_state: Mapping[str, Any]
    phrases: Mapping[str, tuple[Text, ...]]
    events: Mapping[str, Action]
    replies: tuple[Action, ...]
    router: Router
    fallback: Action | None
    schedule: tuple[Scheduled, ...]
    spec: PersonaFile
    limits: RateLimit | None = None
    #: Say lists and phrase banks avoid their latest this many picks in a chat.
    no_repeat: int = 0
