"""The adapter contract: a small class per platform.

An adapter turns platform updates into :class:`~personae.engine.messages.Incoming`
values for the runtime, and delivers :class:`Delivery` values, raising
:class:`DeliveryError` with enough detail for the dispatcher to retry, wait
or give up. Flow control and retries live in the dispatcher, not here.
"""

from __future__ import annotations

import abc
import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from personae.engine.messages import Incoming, Media

Dialect = Literal["plain", "html", "markdown", "social"]
Measure = Literal["utf16", "mastodon", "bluesky"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What the platform allows; the dispatcher paces sends to stay under it.

    Rates are messages per second (``None`` = unlimited). ``group_per_minute``
    applies to chats for which :meth:`Adapter.is_group` is true. ``measure``
    says how ``max_length`` is counted (see :mod:`personae.delivery.split`).
    """

    max_length: int = 4096
    dialect: Dialect = "plain"
    measure: Measure = "utf16"
    global_rate: float | None = None
    #: Seconds over which the platform counts ``global_rate``: 1 for Telegram's and Discord's
    #: per-second limits, where network jitter can push one send into the next second (the
    #: dispatcher keeps a whole message of slack there); longer for hourly budgets (Bluesky).
    rate_window: float = 1.0
    per_chat_rate: float | None = None
    group_per_minute: float | None = None
    concurrency: int = 1
    #: Longest text sent in one post with media (Telegram's caption); a longer text follows the
    #: media as messages of its own. ``None``: the text always goes with the media.
    caption_length: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to deliver (one outbox row)."""

    id: int
    chat: str
    text: str
    reply_to: str | None = None
    persona: str = ""
    event: str | None = None
    mission_time: str | None = None
    #: The outbox idempotency key (stable across restarts): platforms with
    #: idempotency tokens (Discord's nonce) derive theirs from it.
    key: str = ""
    #: Which piece of a message split for length this is (0: the first or only one).
    part: int = 0
    #: The platform id of the piece before this one (``part > 0``), once it was sent:
    #: platforms that thread long posts (Mastodon) answer it. Known after a restart too.
    previous: str | None = None
    #: Files to send with the text (``text`` may then be empty).
    media: tuple[Media, ...] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the platform answered: its message id(s)."""

    message_ids: tuple[str, ...] = ()


class DeliveryError(Exception):
    """A send failed.

    :param retry_after: the platform asked to wait this many seconds (429).
    :param permanent: retrying cannot help (bad request, chat gone).
    :param chat_gone: the chat blocked or removed the bot: unsubscribe it.
    :param scope: ``"global"`` when the whole bot must pause, else ``"chat"``.
    :param moved_to: the chat has a new id (a Telegram group became a supergroup): send there.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
        chat_gone: bool = False,
        scope: Literal["chat", "global"] = "chat",
        moved_to: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent or chat_gone
        self.chat_gone = chat_gone
        self.scope = scope
        self.moved_to = moved_to


IncomingHandler = Callable[["Incoming"], Awaitable[None]]


class PlatformUnreachable(Exception):
    """Starting failed for a reason that may pass: network down, a 5xx, a timeout, flood control.

    The runtime retries the start with backoff. Any other exception from
    :meth:`Adapter.start` (a refused token, a bad option) is final.
    The message reads after the adapter's name: ``"cannot reach Telegram (…)"``.
    """


@dataclass
class AdapterConfig:
    """Settings common to every adapter (from one ``[[adapters]]`` table of bot.toml)."""

    name: str
    persona: str
    channels: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


class OptionError(Exception):
    """An adapter option in bot.toml is wrong or its environment variable is unset."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def number_option(options: Mapping[str, Any], key: str, default: float, *, zero: bool = False) -> float:
    """Option ``key`` as a finite number above zero (at least zero with ``zero``).

    Raises :class:`OptionError` naming the option, so a typo in bot.toml (``per_chat_rate = "1/s"``,
    ``nan``, ``-1``) is one line at its position rather than an internal error, or a pace that
    silently does not hold.
    """
    return float(_number(options, key, default, whole=False, zero=zero))


def whole_option(options: Mapping[str, Any], key: str, default: int) -> int:
    """Option ``key`` as a whole number above zero (``concurrency = 0`` would never send)."""
    return int(_number(options, key, default, whole=True, zero=False))


def _number(options: Mapping[str, Any], key: str, default: float, *, whole: bool, zero: bool) -> float:
    value = options.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and whole and value != int(value):
        ok = False
    if not ok or value < 0 or (value == 0 and not zero):
        kind = "a whole number" if whole else "a number"
        raise OptionError(key, f"{key} must be {kind} {'0 or more' if zero else 'above 0'}, not {value!r}")
    return float(value)


class Adapter(abc.ABC):
    """Base class of platform adapters. Subclasses set :attr:`platform` and :attr:`limits`."""

    platform: str = "abstract"
    limits: Limits = Limits()
    #: True when the platform drops a repeated send by itself (a sink, or an API with
    #: idempotency keys). Then outcomes need not be on disk before the next send,
    #: and the dispatcher group-commits them: a crash can only cause harmless repeats.
    idempotent: bool = False
    #: Adapters with the same lane share one dispatcher, so their messages keep one
    #: global order (all consoles write to one terminal). ``None``: a lane of its own.
    lane: str | None = None
    #: Adapter-specific keys accepted in its ``[[adapters]]`` table (``None``: anything).
    option_names: frozenset[str] | None = frozenset()

    def __init__(self, config: AdapterConfig) -> None:
        self.config = config
        self.name = config.name
        self.persona = config.persona
        #: The persona's locale (``en``, ``fr-FR``), set by the runtime before :meth:`start`.
        self.locale: str | None = None
        #: Set by the runtime: call it with the secrets an adapter obtains while running
        #: (session tokens) each time they change; they replace the ones given before.
        self.on_secrets: Callable[..., None] = lambda *secrets: None

    @classmethod
    def create(cls, config: AdapterConfig, environ: Mapping[str, str]) -> Adapter:
        """Build from bot.toml settings; read secrets from ``environ``. Raises :class:`OptionError`."""
        return cls(config)

    @staticmethod
    def token_from(config: AdapterConfig, environ: Mapping[str, str], key: str = "token_env") -> str:
        """The secret named by option ``key`` (an environment variable name)."""
        var = config.options.get(key)
        if not var:
            raise OptionError(key, f"missing '{key}': the name of the environment variable holding the token")
        value = environ.get(str(var), "")
        if not value.strip():
            raise OptionError(key, f"environment variable {var} is not set")
        return value.strip()

    @abc.abstractmethod
    async def start(self, on_message: IncomingHandler) -> None:
        """Connect and begin delivering user messages to ``on_message``. Returns once running."""

    @abc.abstractmethod
    async def send(self, delivery: Delivery) -> Receipt:
        """Deliver one message, or raise :class:`DeliveryError`."""

    async def stop_receiving(self) -> None:
        """Stop taking user messages, but keep sending: the runtime drains the outbox next.

        Messages already received are handed to the runtime before this returns
        (within a bounded time). :meth:`stop` follows. The default does nothing.
        """
        return None

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect. Must be safe to call after a failed or partial start, and more than once."""

    @property
    def channels(self) -> tuple[str, ...]:
        """Chats that receive every broadcast, besides subscribers."""
        return self.config.channels

    def is_group(self, chat: str) -> bool:
        """Whether ``chat`` is a group (for ``Limits.group_per_minute``)."""
        return False

    def reserve(self, chat: str) -> int:
        """Units of every piece to ``chat`` the adapter fills itself (Mastodon's ``@author`` prefix)."""
        return 0

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in logs, errors or the database (tokens).

        Read once, before :meth:`start`; tokens obtained later go to :attr:`on_secrets`.
        """
        return ()


async def read_media(media: Media, limit: int | None = None) -> bytes:
    """The bytes of ``media``, or a permanent :class:`DeliveryError` naming the file.

    ``limit`` is the platform's largest file of that kind: a larger one is refused
    here, before an upload the platform would refuse anyway.
    """
    try:
        data = await asyncio.to_thread(Path(media.path).read_bytes)
    except OSError as exc:
        raise DeliveryError(f"cannot read media file {media.path}: {exc.strerror or exc}", permanent=True) from None
    if limit is not None and len(data) > limit:
        raise DeliveryError(
            f"{media.name} is {len(data):,} bytes; the platform takes {media.kind} files up to {limit:,}",
            permanent=True,
        )
    return data
