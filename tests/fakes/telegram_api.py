"""A fake Telegram Bot API server for tests.

`FakeTelegram` is a small aiohttp server on 127.0.0.1 that speaks enough of the
Bot API for the real, unmodified python-telegram-bot (PTB) to run against it:
point PTB at it with ``ApplicationBuilder().base_url(fake.base_url)
.base_file_url(fake.base_file_url)``. It records what the bot sends, lets a
test inject updates (long polling or webhook delivery), and models the failure
modes a Telegram adapter must survive: flood limits (HTTP 429 with
``retry_after``), server errors, dropped connections, slow answers, blocked and
unknown chats.

Wire facts this relies on (checked against PTB 22.8):

* every call is ``POST {base_url}{token}/{method}``; the body is
  form-urlencoded (multipart when files are attached) and every non-string
  value arrives JSON-encoded as a string (``chat_id='42'``); ``getMe`` may
  come with an empty body;
* PTB maps the HTTP status of an error, not ``error_code``: 401/404 raise
  ``InvalidToken``, 400 ``BadRequest``, 403 ``Forbidden``, 409 ``Conflict``,
  other codes ``NetworkError``; a ``parameters.retry_after`` raises
  ``RetryAfter`` whatever the status.

Everything here is deterministic for a given ``seed`` except wall-clock
timing; tests should assert on behaviour, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias
from urllib.parse import parse_qsl

from aiohttp import ClientSession, ClientTimeout, web

__all__ = [
    "DEFAULT_TOKEN",
    "FakeTelegram",
    "FaultKind",
    "SentMessage",
    "UploadedFile",
    "unused_tcp_port",
]

JSONDict: TypeAlias = dict[str, Any]
FaultKind: TypeAlias = Literal["5xx", "drop", "429", "slow"]

DEFAULT_TOKEN: Final = "123:TEST-TOKEN"
"""A token of the right shape (``<bot id>:<secret>``) that can never be real."""

FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("5xx", "drop", "429", "slow")

# Parameters whose value is a string even when it looks like JSON ("42",
# "true", "[1]"): PTB sends strings unencoded, so decoding them would corrupt
# a message whose text happens to be a number.
_STRING_PARAMS: Final = frozenset(
    {
        "action",
        "address",
        "business_connection_id",
        "callback_query_id",
        "caption",
        "currency",
        "custom_title",
        "description",
        "emoji",
        "explanation",
        "file_id",
        "first_name",
        "game_short_name",
        "inline_message_id",
        "invite_link",
        "ip_address",
        "language_code",
        "last_name",
        "message_effect_id",
        "name",
        "next_offset",
        "parse_mode",
        "payload",
        "phone_number",
        "provider_token",
        "query",
        "question",
        "result_id",
        "secret_token",
        "short_description",
        "start_parameter",
        "switch_pm_text",
        "text",
        "title",
        "url",
    }
)

# Telegram's default when allowed_updates is empty or was never given.
_NOT_DELIVERED_BY_DEFAULT: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

# Update fields that carry a Message, so injected raw updates can be replied to.
_MESSAGE_UPDATE_KEYS: Final = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
)

_SECRET_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_RE: Final = re.compile(r"[a-z0-9_]{1,32}")
# A bot command as Telegram's clients mark it: "/word" or "/word@botname" at
# the start of the text or after whitespace.
_BOT_COMMAND_IN_TEXT_RE: Final = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")

MAX_MESSAGE_LENGTH: Final = 4096
MAX_CAPTION_LENGTH: Final = 1024
#: Largest upload per file parameter (Bot API: photos 10 MB, other files 50 MB).
MAX_UPLOAD: Final = {"photo": 10 * 1000 * 1000, "audio": 50 * 1000 * 1000, "video": 50 * 1000 * 1000}


@dataclass(frozen=True)
class SentMessage:
    """One message the bot sent successfully (faulted or refused calls never appear)."""

    chat_id: int
    text: str
    parse_mode: str | None
    reply_to_message_id: int | None
    time: float
    """When the fake accepted the message, on its clock (``time.monotonic`` unless one was given)."""
    message_id: int = 0
    entities: tuple[Mapping[str, Any], ...] = ()
    reply_markup: Mapping[str, Any] | None = None
    method: str = "sendMessage"
    """The API method; other ``send*`` methods are recorded with their caption as ``text``."""
    files: tuple[UploadedFile, ...] = ()
    """The files uploaded with it (sendPhoto, sendAudio, sendVideo, sendMediaGroup)."""


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request, as received."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)


class _ApiError(Exception):
    """Raised inside a method handler to answer with a Bot API error."""

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def _bad_request(detail: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {detail}")


def unused_tcp_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (for servers that need a port up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _utf16_len(text: str) -> int:
    # Telegram measures entity offsets in UTF-16 code units, not code points.
    return len(text.encode("utf-16-le")) // 2


_HTML_TAGS: Final = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre",
     "blockquote", "tg-emoji"}
)  # fmt: skip
_HTML_TOKEN: Final = re.compile(r"<(/?)([A-Za-z][\w-]*)([^<>]*)>|<|&(#[0-9]+|#[xX][0-9a-fA-F]+|lt|gt|amp|quot);")
_HTML_NAMED: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _parse_html(text: str) -> str:
    """The visible text of an HTML-mode message, refusing what Telegram refuses.

    Telegram's rules: only its own tags, each closed in order; a ``<`` that
    does not start a tag must be written ``&lt;``. Entities count as the
    character they stand for.
    """
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    for m in _HTML_TOKEN.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        token = m.group()
        if m.group(4):
            ref = m.group(4)
            if ref[0] == "#":
                out.append(chr(int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])))
            else:
                out.append(_HTML_NAMED[ref])
            continue
        if token == "<":
            raise _bad_request(f"can't parse entities: Unexpected start of tag at byte offset {m.start()}")
        closing, name = m.group(1), m.group(2).lower()
        if name not in _HTML_TAGS:
            raise _bad_request(f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {m.start()}')
        if not closing:
            stack.append(name)
        elif not stack or stack[-1] != name:
            expected = stack[-1] if stack else ""
            raise _bad_request(
                f"can't parse entities: Unmatched end tag at byte offset {m.start()},"
                f' expected "</{expected}>", found "</{name}>"'
            )
        else:
            stack.pop()
    out.append(text[pos:])
    if stack:
        raise _bad_request(f"can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1]}\"")
    return "".join(out)


def _command_entities(text: str) -> list[JSONDict]:
    """The ``bot_command`` entities a Telegram client would attach to ``text``.

    PTB's CommandHandler looks for such an entity at offset 0, so an injected
    "/start" without it would never reach a command handler.
    """
    entities: list[JSONDict] = []
    for match in _BOT_COMMAND_IN_TEXT_RE.finditer(text):
        entities.append(
            {
                "type": "bot_command",
                "offset": _utf16_len(text[: match.start()]),
                "length": _utf16_len(match.group()),
            }
        )
    return entities


def _decode_params(raw: Mapping[str, Any]) -> JSONDict:
    """Undo the Bot API's "non-strings are JSON-encoded" convention, leaving text alone."""
    params: JSONDict = {}
    for key, value in raw.items():
        if isinstance(value, str) and key not in _STRING_PARAMS:
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
        else:
            params[key] = value
    return params


def _opt_int(params: Mapping[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _bad_request(f"invalid {key} specified")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad_request(f"invalid {key} specified") from None


def _opt_float(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _bad_request(f"invalid {key} specified") from None


def _opt_str(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _opt_json(params: Mapping[str, Any], key: str) -> Any:
    """A structured parameter, whether it came decoded (JSON body) or as a JSON string."""
    value = params.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _bad_request(f"can't parse {key} JSON object") from None
    return value


def _opt_bool(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _update_type(update: Mapping[str, Any]) -> str:
    return next((key for key in update if key != "update_id"), "")


class _SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds.

    A sliding window lets a short burst through at once and then throttles,
    which is the simplest model of Telegram's "about N per second, short bursts
    are tolerated" flood control.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._stamps: deque[float] = deque()

    def wait_needed(self, now: float) -> float:
        """Seconds until one more event would fit (0 when it fits now)."""
        while self._stamps and self._stamps[0] <= now - self.window:
            self._stamps.popleft()
        if len(self._stamps) < self.limit:
            return 0.0
        return self._stamps[0] + self.window - now

    def add(self, now: float) -> None:
        self._stamps.append(now)


class _Unset:
    """Marker type for "argument not given" where None is a meaningful value."""


_UNSET: Final = _Unset()


class FakeTelegram:
    """A fake Telegram Bot API server on 127.0.0.1 for tests.

    Use as ``async with FakeTelegram() as fake:`` (or ``await fake.start()`` /
    ``await fake.stop()``), then build the bot with ``base_url(fake.base_url)``
    and ``base_file_url(fake.base_file_url)``.

    Rate limits are off unless given: ``global_rate`` messages per second for
    the whole bot, ``per_chat_rate`` messages per second per chat (both as a
    sliding one-second window), ``group_per_minute`` messages per minute for a
    group (negative chat id). Telegram's published values are 30, 1 and 20;
    see `REAL_LIMITS`. ``clock`` (``time.monotonic`` by default) drives the
    limits; a test can pass a hand-moved clock to make them independent of
    how fast the machine runs.

    Faults hit only ``fault_methods`` (``sendMessage`` by default): each call
    is faulted with probability ``fault_ratio``, the kind drawn from
    ``faults`` by a ``random.Random(seed)``; `fail_next` forces the next ones.
    A faulted call never records a message, so a retry that succeeds delivers
    exactly once. "slow" holds the answer ``slow_delay`` seconds, then answers
    normally if the client is still waiting (and discards the call if it gave up).
    """

    REAL_LIMITS: Final[Mapping[str, int]] = {"global_rate": 30, "per_chat_rate": 1, "group_per_minute": 20}
    """Telegram's published flood limits, as keyword arguments for the constructor."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        global_rate: int | None = None,
        per_chat_rate: int | None = None,
        group_per_minute: int | None = None,
        seed: int = 0,
        fault_ratio: float = 0.0,
        faults: Sequence[FaultKind] = FAULT_KINDS,
        fault_methods: Iterable[str] = ("sendMessage",),
        slow_delay: float = 1.0,
        fault_retry_after: int = 1,
        strict_chats: bool = False,
        echo_path: Callable[[str], str] | None = None,
        bot_username: str = "fake_test_bot",
        bot_first_name: str = "Fake Bot",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = [kind for kind in faults if kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {FAULT_KINDS}")
        if not 0.0 <= fault_ratio <= 1.0:
            raise ValueError("fault_ratio must be between 0 and 1")
        self.token = token
        bot_id, _, _ = token.partition(":")
        self.bot_id = int(bot_id) if bot_id.isdigit() else 1
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.fault_ratio = fault_ratio
        """Probability that a call to one of `fault_methods` is faulted; may be changed at any time."""
        self.faults: tuple[FaultKind, ...] = tuple(faults)
        self.fault_methods: frozenset[str] = frozenset(m.lower() for m in fault_methods)
        self.slow_delay = slow_delay
        self.fault_retry_after = max(1, int(fault_retry_after))
        self.strict_chats = strict_chats
        """When true, sending to a chat never seen in an injected update answers "chat not found"."""
        self.echo_path = echo_path
        """When set, every error description ends with ``echo_path(request path)``, as some
        servers and proxies do: the path carries the token, transformed as ``echo_path`` writes it."""

        self._host = host
        self._port = port
        self._clock = clock
        self._rng = random.Random(seed)
        self._forced_faults: deque[FaultKind] = deque()

        self._global_window = _SlidingWindow(global_rate, 1.0) if global_rate else None
        self._per_chat_rate = per_chat_rate
        self._group_per_minute = group_per_minute
        self._chat_windows: dict[int, _SlidingWindow] = {}
        self._group_windows: dict[int, _SlidingWindow] = {}

        # Records, public for assertions.
        self.sent: list[SentMessage] = []
        """Messages the bot sent successfully, in order."""
        self.calls: list[tuple[str, JSONDict]] = []
        """Every authorised call as (method, decoded params), faulted ones included."""
        self.chat_actions: list[tuple[int, str]] = []
        """(chat_id, action) of every accepted sendChatAction."""
        self.count_429 = 0
        self.count_5xx = 0
        self.count_dropped = 0
        self.count_slow = 0

        # Bot state.
        self._updates: list[JSONDict] = []
        self._next_update_id = 1
        self._allowed_updates: list[str] | None = None
        self._chats: dict[int, JSONDict] = {}
        self._messages: dict[tuple[int, int], JSONDict] = {}
        self._last_message_id: dict[int, int] = {}
        self._blocked: set[int] = set()
        self._unknown: set[int] = set()
        self._migrated: dict[int, int] = {}
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}
        self._responses: dict[str, Any] = {}
        self._files: dict[str, tuple[str, bytes]] = {}
        self.webhook_url = ""
        """The URL registered with setWebhook ("" when none)."""
        self.webhook_secret: str | None = None
        """The secret_token registered with setWebhook."""
        self._webhook_max_connections = 40
        self._webhook_ip: str | None = None
        self._webhook_last_error: tuple[int, str] | None = None

        # Wake-ups: each is replaced after being set, so a waiter takes the
        # current one before checking its condition and can never miss a change.
        self._updates_changed = asyncio.Event()
        self._records_changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._poll_generation = 0

        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None
        self._bound_port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start serving on ``host`` (a random free port unless one was given)."""
        if self._runner is not None:
            raise RuntimeError("FakeTelegram is already running")
        self._closing = asyncio.Event()
        # Multipart uploads may be larger than aiohttp's 1 MiB default.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # A short shutdown_timeout: stop() releases held requests itself, so
        # anything still running after that is a stuck client, not work to wait for.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        self._client = ClientSession(timeout=ClientTimeout(total=10))

    async def stop(self) -> None:
        """Stop serving; held getUpdates and slow answers are released at once."""
        if self._runner is None:
            return
        self._closing.set()
        self._notify_updates()
        if self._client is not None:
            await self._client.close()
            self._client = None
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._bound_port is None:
            raise RuntimeError("FakeTelegram is not started")
        return self._bound_port

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Value for PTB's ``base_url``: the token and method are appended to it."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for PTB's ``base_file_url``."""
        return f"{self.url}/file/bot"

    # -------------------------------------------------------------- test control

    def message_update(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        first_name: str = "Test",
        last_name: str | None = None,
        username: str | None = "tester",
        language_code: str | None = "en",
        chat_type: Literal["private", "group", "supergroup"] = "private",
        chat_title: str | None = None,
        reply_to: int | None = None,
        entities: Sequence[Mapping[str, Any]] | None = None,
    ) -> JSONDict:
        """Build (without queuing) an update carrying a user's text message.

        ``user_id`` defaults to ``chat_id`` in a private chat and 1000 elsewhere.
        ``reply_to`` is the message_id of an earlier message in the same chat.
        Bot commands in ``text`` get their ``bot_command`` entities unless
        ``entities`` is given. Use with `deliver_via_webhook`.
        """
        if chat_type == "private" and chat_id <= 0:
            raise ValueError("a private chat has a positive id (the user's id)")
        if chat_type != "private" and chat_id >= 0:
            raise ValueError("group and supergroup chats have negative ids")
        uid = user_id if user_id is not None else (chat_id if chat_type == "private" else 1000)
        user: JSONDict = {"id": uid, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        if chat_type == "private":
            chat: JSONDict = {"id": chat_id, "type": "private", "first_name": first_name}
            if last_name:
                chat["last_name"] = last_name
            if username:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": chat_title or "Test group"}
        message: JSONDict = {
            "message_id": self._new_message_id(chat_id),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
            "text": text,
        }
        found = list(entities) if entities is not None else _command_entities(text)
        if found:
            message["entities"] = [dict(e) for e in found]
        if reply_to is not None:
            target = self._messages.get((chat_id, reply_to))
            if target is None:
                raise ValueError(f"no message {reply_to} in chat {chat_id} to reply to")
            message["reply_to_message"] = self._embeddable(target)
        self._remember_message(message)
        return {"update_id": self._take_update_id(), "message": message}

    def inject_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        first_name: str = "Test",
        last_name: str | None = None,
        username: str | None = "tester",
        chat_type: Literal["private", "group", "supergroup"] = "private",
        chat_title: str | None = None,
        reply_to: int | None = None,
        entities: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Queue a user's text message for getUpdates and return its update_id."""
        update = self.message_update(
            chat_id,
            text,
            user_id=user_id,
            first_name=first_name,
            last_name=last_name,
            username=username,
            chat_type=chat_type,
            chat_title=chat_title,
            reply_to=reply_to,
            entities=entities,
        )
        self._queue(update)
        return int(update["update_id"])

    def inject_update(self, update: Mapping[str, Any]) -> int:
        """Queue a raw update (edited_message, photos, new_chat_members, ...); return its update_id.

        An ``update_id`` is assigned when missing; messages inside are
        remembered so later sends can reply to them.
        """
        raw = dict(update)
        if "update_id" in raw:
            self._next_update_id = max(self._next_update_id, int(raw["update_id"]) + 1)
        else:
            raw["update_id"] = self._take_update_id()
        for key in _MESSAGE_UPDATE_KEYS:
            message = raw.get(key)
            if isinstance(message, dict):
                self._remember_message(message)
        self._queue(raw)
        return int(raw["update_id"])

    async def wait_for_sent(self, n: int, timeout: float = 5.0) -> list[SentMessage]:
        """Return the sent messages once at least ``n`` are recorded.

        Raises TimeoutError naming what did arrive if fewer came in ``timeout`` seconds.
        """
        await self._wait_until(
            lambda: len(self.sent) >= n,
            timeout,
            lambda: (
                f"expected {n} sent message(s) within {timeout}s, got {len(self.sent)}: "
                f"{[(m.chat_id, m.text) for m in self.sent]!r}"
            ),
        )
        return list(self.sent)

    async def wait_for_call(self, method: str, n: int = 1, timeout: float = 5.0) -> list[JSONDict]:
        """Return the params of calls to ``method`` once at least ``n`` arrived (TimeoutError otherwise)."""
        await self._wait_until(
            lambda: len(self.calls_to(method)) >= n,
            timeout,
            lambda: (
                f"expected {n} call(s) to {method} within {timeout}s, got "
                f"{len(self.calls_to(method))}; calls seen: {[m for m, _ in self.calls]!r}"
            ),
        )
        return self.calls_to(method)

    def calls_to(self, method: str) -> list[JSONDict]:
        """Params of every recorded call to ``method`` (case-insensitive, like Telegram)."""
        wanted = method.lower()
        return [params for name, params in self.calls if name.lower() == wanted]

    def texts(self, chat_id: int | None = None) -> list[str]:
        """Texts of the sent messages, optionally for one chat."""
        return [m.text for m in self.sent if chat_id is None or m.chat_id == chat_id]

    def block_chat(self, chat_id: int) -> None:
        """Make sends to ``chat_id`` answer 403 (the user blocked the bot / it was kicked)."""
        self._blocked.add(chat_id)

    def unblock_chat(self, chat_id: int) -> None:
        """Undo `block_chat`."""
        self._blocked.discard(chat_id)

    def forget_chat(self, chat_id: int) -> None:
        """Make sends to ``chat_id`` answer 400 "Bad Request: chat not found"."""
        self._unknown.add(chat_id)
        self._chats.pop(chat_id, None)

    def migrate_chat(self, old_chat_id: int, new_chat_id: int) -> None:
        """Make sends to a group answer 400 with ``migrate_to_chat_id`` (PTB raises ChatMigrated)."""
        self._migrated[old_chat_id] = new_chat_id

    def fail_next(self, kind: FaultKind, n: int = 1) -> None:
        """Fault the next ``n`` calls to the `fault_methods` with ``kind``, whatever `fault_ratio` is."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {FAULT_KINDS}")
        self._forced_faults.extend([kind] * n)

    def set_response(self, method: str, result: Any) -> None:
        """Answer ``method`` with ``{"ok": true, "result": result}`` instead of the built-in handling."""
        self._responses[method.lower()] = result

    def add_file(self, content: bytes, *, file_path: str | None = None) -> str:
        """Store a file for getFile and downloads under `base_file_url`; return its file_id."""
        file_id = f"FILE{len(self._files) + 1}-{secrets.token_hex(4)}"
        self._files[file_id] = (file_path or f"documents/file_{len(self._files) + 1}", content)
        return file_id

    def my_commands(self, *, scope: Mapping[str, Any] | None = None, language_code: str = "") -> list[JSONDict]:
        """The commands registered with setMyCommands for a scope and language."""
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def pending_updates(self) -> list[JSONDict]:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        return list(self._updates)

    async def deliver_via_webhook(
        self,
        update: Mapping[str, Any],
        *,
        secret: str | _Unset | None = _UNSET,
    ) -> int:
        """POST ``update`` to the registered webhook and return the HTTP status.

        ``secret`` is sent as ``X-Telegram-Bot-Api-Secret-Token``; it defaults
        to the registered secret_token, ``None`` omits the header. An
        ``update_id`` is assigned when missing.
        """
        if not self.webhook_url:
            raise RuntimeError("no webhook is set (the bot has not called setWebhook with a url)")
        if self._client is None:
            raise RuntimeError("FakeTelegram is not started")
        body = dict(update)
        body.setdefault("update_id", self._take_update_id())
        token = self.webhook_secret if isinstance(secret, _Unset) else secret
        # PTB's webhook handler refuses anything but exactly "application/json".
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        async with self._client.post(self.webhook_url, data=json.dumps(body), headers=headers) as response:
            await response.read()
            status = response.status
            if not 200 <= status <= 299:
                self._webhook_last_error = (
                    int(time.time()),
                    f"Wrong response from the webhook: {status} {response.reason}",
                )
        return status

    async def flush_webhook(self) -> list[int]:
        """Deliver the queued updates to the webhook in order; return their HTTP statuses.

        Updates answered with a 2xx status are removed from the queue, as
        Telegram does; the others stay pending.
        """
        statuses: list[int] = []
        for update in list(self._updates):
            status = await self.deliver_via_webhook(update)
            statuses.append(status)
            if 200 <= status <= 299:
                self._updates.remove(update)
        return statuses

    # ------------------------------------------------------------ internal state

    def _take_update_id(self) -> int:
        update_id = self._next_update_id
        self._next_update_id += 1
        return update_id

    def _new_message_id(self, chat_id: int) -> int:
        message_id = self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = message_id
        return message_id

    def _remember_message(self, message: Mapping[str, Any]) -> None:
        chat = message.get("chat")
        if not isinstance(chat, dict) or "id" not in chat or "message_id" not in message:
            return
        chat_id = int(chat["id"])
        message_id = int(message["message_id"])
        self._chats.setdefault(chat_id, dict(chat))
        self._unknown.discard(chat_id)
        self._messages[(chat_id, message_id)] = dict(message)
        # Keep ids unique when a raw update brought its own message_id.
        self._last_message_id[chat_id] = max(self._last_message_id.get(chat_id, 0), message_id)

    @staticmethod
    def _embeddable(message: Mapping[str, Any]) -> JSONDict:
        # Telegram does not nest replies: a replied-to message comes without its own reply_to_message.
        return {k: v for k, v in message.items() if k != "reply_to_message"}

    def _queue(self, update: JSONDict) -> None:
        self._updates.append(update)
        self._updates.sort(key=lambda u: int(u["update_id"]))
        self._notify_updates()

    def _notify_updates(self) -> None:
        self._updates_changed.set()
        self._updates_changed = asyncio.Event()

    def _notify_records(self) -> None:
        self._records_changed.set()
        self._records_changed = asyncio.Event()

    async def _wait_until(self, condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(describe())
            changed = self._records_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _chat_object(self, chat_id: int) -> JSONDict:
        known = self._chats.get(chat_id)
        if known is not None:
            return dict(known)
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Test"}
        # Supergroup ids are -100 followed by the channel id.
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": "Test group"}

    def _bot_user(self) -> JSONDict:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_first_name, "username": self.bot_username}

    @staticmethod
    def _commands_key(scope: Any, language_code: str | None) -> tuple[str, str]:
        scope_key = json.dumps(scope, sort_keys=True) if scope else '{"type": "default"}'
        return scope_key, language_code or ""

    # ---------------------------------------------------------------- HTTP layer

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        if self.echo_path is None or not isinstance(response, web.Response) or response.status < 400:
            return response
        if request.transport is None or request.transport.is_closing() or not response.body:
            return response
        body = json.loads(bytes(response.body))  # type: ignore[arg-type]
        body["description"] = f"{body.get('description', 'Error')}: {self.echo_path(request.raw_path)}"
        return web.json_response(body, status=response.status)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        if path.startswith("file/bot"):
            return await self._serve_file(path.removeprefix("file/bot"))
        if not path.startswith("bot"):
            return self._error_response(_ApiError(404, "Not Found"))
        token, _, method = path.removeprefix("bot").partition("/")
        if token != self.token:
            return self._error_response(_ApiError(401, "Unauthorized"))
        if not method or "/" in method:
            return self._error_response(_ApiError(404, "Not Found"))
        try:
            params = _decode_params(await self._read_params(request))
        except _ApiError as exc:
            return self._error_response(exc)
        self.calls.append((method, params))
        self._notify_records()

        try:
            if method.lower() in self.fault_methods:
                fault = self._pick_fault()
                if fault is not None:
                    faulted = await self._apply_fault(fault, request)
                    if faulted is not None:
                        return faulted
            result = await self._call(method, params)
        except _ApiError as exc:
            if exc.status == 429:
                self.count_429 += 1
            return self._error_response(exc)
        return self._ok_response(result)

    @staticmethod
    async def _read_params(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if not request.body_exists:
            return params
        ctype = request.content_type
        if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    params[key] = UploadedFile(value.filename, value.content_type, value.file.read())
                else:
                    params[key] = value
            return params
        raw = await request.read()
        if not raw.strip():
            return params
        # Telegram accepts JSON bodies too; unknown content types get a best guess.
        try:
            body = json.loads(raw)
        except ValueError:
            if ctype == "application/json":
                raise _bad_request("can't parse JSON object") from None
            params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            return params
        if not isinstance(body, dict):
            raise _bad_request("can't parse JSON object")
        params.update(body)
        return params

    @staticmethod
    def _ok_response(result: Any, description: str | None = None) -> web.Response:
        body: JSONDict = {"ok": True, "result": result}
        if description:
            body["description"] = description
        return web.json_response(body)

    @staticmethod
    def _error_response(error: _ApiError) -> web.Response:
        body: JSONDict = {"ok": False, "error_code": error.status, "description": error.description}
        if error.parameters:
            body["parameters"] = error.parameters
        return web.json_response(body, status=error.status)

    async def _serve_file(self, rest: str) -> web.StreamResponse:
        token, _, file_path = rest.partition("/")
        if token != self.token:
            return self._error_response(_ApiError(401, "Unauthorized"))
        for stored_path, content in self._files.values():
            if stored_path == file_path:
                return web.Response(body=content, content_type="application/octet-stream")
        return self._error_response(_ApiError(404, "Not Found"))

    # -------------------------------------------------------------------- faults

    def _pick_fault(self) -> FaultKind | None:
        if self._forced_faults:
            return self._forced_faults.popleft()
        # Draw only when faults are on, so a zero ratio leaves the seeded sequence untouched.
        if self.fault_ratio > 0 and self.faults and self._rng.random() < self.fault_ratio:
            return self._rng.choice(self.faults)
        return None

    async def _apply_fault(self, fault: FaultKind, request: web.Request) -> web.StreamResponse | None:
        """Answer with ``fault``; None means "go on and handle the call normally"."""
        if fault == "5xx":
            self.count_5xx += 1
            status = self._rng.choice((500, 502))
            description = "Internal Server Error" if status == 500 else "Bad Gateway"
            return self._error_response(_ApiError(status, description))
        if fault == "429":
            self.count_429 += 1
            retry = self.fault_retry_after
            return self._error_response(
                _ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
            )
        if fault == "drop":
            self.count_dropped += 1
            transport = request.transport
            if transport is not None:
                # abort() discards anything buffered: the client reads EOF with
                # no status line, as when a proxy or the network cuts the call.
                transport.abort()
            # The handler must still return something; aiohttp drops it on the closed socket.
            return web.Response(status=500)
        self.count_slow += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.slow_delay)
        if request.transport is None or request.transport.is_closing() or self._closing.is_set():
            # The client gave up (timed out) or we are shutting down: the call
            # had no effect, so its retry will not be a duplicate.
            return web.Response(status=504)
        return None

    def _check_rate(self, chat_id: int) -> None:
        """Raise a 429 if one more message to ``chat_id`` would exceed a limit."""
        now = self._clock()
        waits = [0.0]
        if self._global_window is not None:
            waits.append(self._global_window.wait_needed(now))
        if self._per_chat_rate:
            window = self._chat_windows.setdefault(chat_id, _SlidingWindow(self._per_chat_rate, 1.0))
            waits.append(window.wait_needed(now))
        if self._group_per_minute and chat_id < 0:
            window = self._group_windows.setdefault(chat_id, _SlidingWindow(self._group_per_minute, 60.0))
            waits.append(window.wait_needed(now))
        wait = max(waits)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise _ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})

    def _consume_rate(self, chat_id: int) -> None:
        now = self._clock()
        if self._global_window is not None:
            self._global_window.add(now)
        if chat_id in self._chat_windows:
            self._chat_windows[chat_id].add(now)
        if chat_id in self._group_windows:
            self._group_windows[chat_id].add(now)

    # ------------------------------------------------------------------- methods

    async def _call(self, method: str, params: JSONDict) -> Any:
        name = method.lower()
        if name in self._responses:
            return self._responses[name]
        if name == "getme":
            return {
                **self._bot_user(),
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        if name == "getupdates":
            return await self._get_updates(params)
        if name == "sendmessage":
            return self._send(method, params, text_key="text")
        if name == "sendchataction":
            chat_id = self._target_chat(params)
            action = _opt_str(params, "action")
            if not action:
                raise _bad_request("action is empty")
            self.chat_actions.append((chat_id, action))
            return True
        if name == "setwebhook":
            return self._set_webhook(params)
        if name == "deletewebhook":
            self._clear_webhook(drop_pending=_opt_bool(params, "drop_pending_updates"))
            return True
        if name == "getwebhookinfo":
            return self._webhook_info()
        if name == "setmycommands":
            return self._set_my_commands(params)
        if name == "getmycommands":
            return self.my_commands(
                scope=_opt_json(params, "scope"), language_code=_opt_str(params, "language_code") or ""
            )
        if name == "deletemycommands":
            self._commands.pop(self._commands_key(_opt_json(params, "scope"), _opt_str(params, "language_code")), None)
            return True
        if name == "getfile":
            return self._get_file(params)
        if name == "sendmediagroup":
            return self._send_media_group(params)
        if name.startswith("send") and name != "sendmediagroup":
            # Photos, stickers, documents...: a Message carrying the caption.
            return self._send(method, params, text_key="caption")
        # close, logOut, answerCallbackQuery, deleteMessage, editMessageText, ...:
        # recorded in `calls`, answered with the plain success Telegram gives them.
        return True

    def _target_chat(self, params: Mapping[str, Any]) -> int:
        """Resolve chat_id and apply the chat's state (blocked, unknown, migrated)."""
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad_request("chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            wanted = raw[1:].lower()
            for known_id, chat in self._chats.items():
                if str(chat.get("username", "")).lower() == wanted:
                    return self._check_chat(known_id)
            raise _bad_request("chat not found")
        chat_id = _opt_int(params, "chat_id")
        if chat_id is None:
            raise _bad_request("chat_id is empty")
        return self._check_chat(chat_id)

    def _check_chat(self, chat_id: int) -> int:
        if chat_id in self._migrated:
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self._migrated[chat_id]},
            )
        if chat_id in self._unknown or (self.strict_chats and chat_id not in self._chats):
            raise _bad_request("chat not found")
        if chat_id in self._blocked:
            if chat_id > 0:
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            raise _ApiError(403, "Forbidden: bot was kicked from the group chat")
        return chat_id

    def _reply_target(self, chat_id: int, params: Mapping[str, Any]) -> JSONDict | None:
        reply = _opt_json(params, "reply_parameters")
        if isinstance(reply, dict) and reply.get("message_id") is not None:
            target_id = int(reply["message_id"])
            # A reply may quote a message of another chat; "@name" chats are not modelled.
            other_chat = reply.get("chat_id")
            target_chat = other_chat if isinstance(other_chat, int) and not isinstance(other_chat, bool) else chat_id
            lenient = bool(reply.get("allow_sending_without_reply"))
        else:
            legacy = _opt_int(params, "reply_to_message_id")
            if legacy is None:
                return None
            target_id, target_chat = legacy, chat_id
            lenient = _opt_bool(params, "allow_sending_without_reply")
        target = self._messages.get((target_chat, target_id))
        if target is None:
            if lenient:
                return None
            raise _bad_request("message to be replied not found")
        return self._embeddable(target)

    def _send(self, method: str, params: JSONDict, *, text_key: str, paced: bool = True) -> JSONDict:
        chat_id = self._target_chat(params)
        text = _opt_str(params, text_key) or ""
        parse_mode = _opt_str(params, "parse_mode")
        # Telegram parses the markup first and measures what is left.
        visible = _parse_html(text) if (parse_mode or "").upper() == "HTML" else text
        if text_key == "text":
            if not visible.strip():
                raise _bad_request("message text is empty")
            if _utf16_len(visible) > MAX_MESSAGE_LENGTH:
                raise _bad_request("message is too long")
        elif _utf16_len(visible) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        files = self._uploads(params)
        reply_to = self._reply_target(chat_id, params)
        # Flood control last: a refused message is not counted against the limits (an album counts once).
        if paced:
            self._check_rate(chat_id)
            self._consume_rate(chat_id)

        raw_entities = _opt_json(params, "entities" if text_key == "text" else "caption_entities")
        entities = tuple(dict(e) for e in raw_entities) if isinstance(raw_entities, list) else ()
        reply_markup = _opt_json(params, "reply_markup")
        message: JSONDict = {
            "message_id": self._new_message_id(chat_id),
            "from": self._bot_user(),
            "chat": self._chat_object(chat_id),
            "date": int(time.time()),
        }
        if text_key == "text":
            message["text"] = text
        elif text:
            message["caption"] = text
        if entities:
            message["entities" if text_key == "text" else "caption_entities"] = list(entities)
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if isinstance(reply_markup, dict) and "inline_keyboard" in reply_markup:
            # Only inline keyboards are echoed back in the Message, as Telegram does.
            message["reply_markup"] = reply_markup
        thread_id = _opt_int(params, "message_thread_id")
        if thread_id is not None:
            message["message_thread_id"] = thread_id
        self._remember_message(message)
        self.sent.append(
            SentMessage(
                chat_id=chat_id,
                text=text,
                parse_mode=parse_mode,
                reply_to_message_id=int(reply_to["message_id"]) if reply_to else None,
                time=self._clock(),
                message_id=int(message["message_id"]),
                entities=entities,
                reply_markup=reply_markup if isinstance(reply_markup, dict) else None,
                method=method,
                files=files,
            )
        )
        self._notify_records()
        return message

    @staticmethod
    def _uploads(params: Mapping[str, Any]) -> tuple[UploadedFile, ...]:
        """The files of a send call, each within its size limit (else the Bot API's 400 or 413)."""
        files = []
        for key, value in params.items():
            if isinstance(value, UploadedFile):
                if not value.data:
                    raise _bad_request(f"file must be non-empty ({key})")
                if len(value.data) > MAX_UPLOAD.get(key, MAX_UPLOAD["audio"]):
                    raise _ApiError(413, "Request Entity Too Large")
                files.append(value)
        return tuple(files)

    def _send_media_group(self, params: JSONDict) -> list[JSONDict]:
        """sendMediaGroup: 2-10 items, each ``attach://<part>`` naming an uploaded file; one message each."""
        items = _opt_json(params, "media")
        if not isinstance(items, list) or not 2 <= len(items) <= 10:
            raise _bad_request("media must include 2-10 items")
        kinds = {str(i.get("type")) for i in items}
        if "audio" in kinds and kinds != {"audio"}:
            raise _bad_request("audio can't be mixed with other media types")
        uploads = []
        for n, item in enumerate(items):  # all checked before any is sent: an album is one message
            ref = str(item.get("media", ""))
            upload = params.get(ref.removeprefix("attach://"))
            if not ref.startswith("attach://") or not isinstance(upload, UploadedFile):
                raise _bad_request(f"wrong file identifier/HTTP URL specified (item {n})")
            kind = str(item.get("type"))
            self._uploads({kind: upload})
            if _utf16_len(str(item.get("caption") or "")) > MAX_CAPTION_LENGTH:
                raise _bad_request("message caption is too long")
            uploads.append(upload)
        messages = []
        for n, (item, upload) in enumerate(zip(items, uploads, strict=True)):
            one = {k: v for k, v in params.items() if k in ("chat_id", "reply_parameters")}
            one[{"photo": "photo", "video": "video", "audio": "audio"}.get(str(item["type"]), "document")] = upload
            if item.get("caption"):
                one["caption"] = item["caption"]
                if item.get("parse_mode"):
                    one["parse_mode"] = item["parse_mode"]
            messages.append(self._send("sendMediaGroup", one, text_key="caption", paced=n == 0))
        return messages

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        if self.webhook_url:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _opt_int(params, "offset") or 0
        limit = min(100, max(1, _opt_int(params, "limit") or 100))
        timeout = max(0.0, _opt_float(params, "timeout") or 0.0)
        allowed = _opt_json(params, "allowed_updates")
        if isinstance(allowed, list):
            # Like Telegram, the setting sticks until changed; an empty list means "the default".
            self._allowed_updates = [str(a) for a in allowed] or None

        # A newer getUpdates ends an older held one with 409, as Telegram does
        # when two instances poll the same bot.
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify_updates()
        self._confirm(offset)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                )
            batch = self._deliverable(limit)
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing.is_set():
                return batch
            changed = self._updates_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            self._updates = [u for u in self._updates if int(u["update_id"]) >= offset]
        elif offset < 0:
            # A negative offset counts from the end and forgets everything before.
            self._updates = self._updates[offset:]

    def _deliverable(self, limit: int) -> list[JSONDict]:
        allowed = self._allowed_updates

        def wanted(update: Mapping[str, Any]) -> bool:
            kind = _update_type(update)
            return kind in allowed if allowed is not None else kind not in _NOT_DELIVERED_BY_DEFAULT

        # Telegram never creates updates of a type the bot did not ask for, so drop them for good.
        self._updates = [u for u in self._updates if wanted(u)]
        return [dict(u) for u in self._updates[:limit]]

    def _set_webhook(self, params: JSONDict) -> bool:
        url = _opt_str(params, "url") or ""
        secret = _opt_str(params, "secret_token")
        if secret is not None and not _SECRET_TOKEN_RE.fullmatch(secret):
            raise _bad_request("secret token contains unallowed characters")
        if _opt_bool(params, "drop_pending_updates"):
            self._updates.clear()
        if not url:
            self._clear_webhook(drop_pending=False)
            return True
        allowed = _opt_json(params, "allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(a) for a in allowed] or None
        self.webhook_url = url
        self.webhook_secret = secret
        self._webhook_max_connections = _opt_int(params, "max_connections") or 40
        self._webhook_ip = _opt_str(params, "ip_address")
        self._webhook_last_error = None
        # Wake a held getUpdates so it answers 409 like the real server.
        self._notify_updates()
        return True

    def _clear_webhook(self, *, drop_pending: bool) -> None:
        self.webhook_url = ""
        self.webhook_secret = None
        self._webhook_last_error = None
        if drop_pending:
            self._updates.clear()

    def _webhook_info(self) -> JSONDict:
        info: JSONDict = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook_url:
            info["max_connections"] = self._webhook_max_connections
            if self._webhook_ip:
                info["ip_address"] = self._webhook_ip
            if self._allowed_updates is not None:
                info["allowed_updates"] = list(self._allowed_updates)
            if self._webhook_last_error is not None:
                info["last_error_date"], info["last_error_message"] = self._webhook_last_error
        return info

    def _set_my_commands(self, params: JSONDict) -> bool:
        commands = _opt_json(params, "commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        cleaned: list[JSONDict] = []
        for entry in commands:
            if not isinstance(entry, dict):
                raise _bad_request("can't parse BotCommand JSON object")
            command = str(entry.get("command", ""))
            description = str(entry.get("description", ""))
            # Telegram's rules: lower-case latin letters, digits and underscores.
            if not _COMMAND_RE.fullmatch(command):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": command, "description": description})
        key = self._commands_key(_opt_json(params, "scope"), _opt_str(params, "language_code"))
        self._commands[key] = cleaned
        return True

    def _get_file(self, params: JSONDict) -> JSONDict:
        file_id = _opt_str(params, "file_id") or ""
        stored = self._files.get(file_id)
        if stored is None:
            raise _bad_request("invalid file_id")
        file_path, content = stored
        return {
            "file_id": file_id,
            "file_unique_id": file_id.split("-")[-1],
            "file_size": len(content),
            "file_path": file_path,
        }
