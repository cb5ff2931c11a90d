"""A fake Discord (REST API and gateway websocket) for driving the real discord.py offline.

One aiohttp server on 127.0.0.1 with a random free port serves both halves:

* REST under ``/api/v10`` (the routes a bot needs to log in, read channels and
  send messages), with Discord's rate-limit headers, 429 bodies and error codes;
* the gateway at ``/gateway`` (and ``/gateway-resume``, announced as
  ``resume_gateway_url``): HELLO, heartbeats, IDENTIFY → READY + GUILD_CREATE,
  RESUME with replay of missed dispatches, INVALID_SESSION, RECONNECT.

Usage::

    async with FakeDiscord("TEST.DISCORD.TOKEN") as fake:
        with fake.patch_discord():
            client = discord.Client(intents=..., guild_ready_timeout=0.1)
            ...

Where the fake knowingly differs from Discord it says so in the docstring of
the method concerned.  Read against discord.py 2.7.1; see
``shared/notes/platform-fakes.md`` for the traps this works around.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal, Self, get_args

from aiohttp import WSMsgType, web

__all__ = [
    "DEFAULT_AUTHOR_ID",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_GUILD",
    "FORBIDDEN_CHANNEL_ID",
    "GENERAL_CHANNEL_ID",
    "GUILD_ID",
    "ROUTE_SEND",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeRole",
    "FakeUser",
    "FaultKind",
    "RestCall",
    "SentMessage",
]

# ---------------------------------------------------------------------------
# Constants

DISCORD_EPOCH_MS: Final = 1_420_070_400_000
API_PREFIX: Final = "/api/v10"

#: Route key of "send a message"; the default target of fault injection.
ROUTE_SEND: Final = "POST /channels/{channel_id}/messages"

#: Ids of the default guild, so tests need not build their own.
GUILD_ID: Final = 1_100_000_000_000_000_001
GENERAL_CHANNEL_ID: Final = 1_100_000_000_000_000_010
FORBIDDEN_CHANNEL_ID: Final = 1_100_000_000_000_000_011
DEFAULT_BOT_USER_ID: Final = 1_200_000_000_000_000_001
DEFAULT_AUTHOR_ID: Final = 1_200_000_000_000_000_002

FaultKind = Literal["500", "502", "503", "504", "500_committed", "429", "429_global", "slow", "disconnect"]
_FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(FaultKind))

# Gateway opcodes.
OP_DISPATCH: Final = 0
OP_HEARTBEAT: Final = 1
OP_IDENTIFY: Final = 2
OP_PRESENCE: Final = 3
OP_RESUME: Final = 6
OP_RECONNECT: Final = 7
OP_REQUEST_MEMBERS: Final = 8
OP_INVALID_SESSION: Final = 9
OP_HELLO: Final = 10
OP_HEARTBEAT_ACK: Final = 11

# Gateway intents the fake looks at.
INTENT_GUILDS: Final = 1 << 0
INTENT_GUILD_MEMBERS: Final = 1 << 1
INTENT_GUILD_PRESENCES: Final = 1 << 8
INTENT_GUILD_MESSAGES: Final = 1 << 9
INTENT_DIRECT_MESSAGES: Final = 1 << 12
INTENT_MESSAGE_CONTENT: Final = 1 << 15
_PRIVILEGED: Final[Mapping[str, int]] = {
    "members": INTENT_GUILD_MEMBERS,
    "presences": INTENT_GUILD_PRESENCES,
    "message_content": INTENT_MESSAGE_CONTENT,
}
# Application flags that say a privileged intent is switched on in the developer portal.
_APP_FLAG_FOR: Final[Mapping[str, int]] = {
    "presences": 1 << 12,
    "members": 1 << 14,
    "message_content": 1 << 18,
}

# Permission bits used to build the @everyone role and channel overwrites.
_PERM_ADD_REACTIONS: Final = 1 << 6
_PERM_VIEW_CHANNEL: Final = 1 << 10
_PERM_SEND_MESSAGES: Final = 1 << 11
_PERM_EMBED_LINKS: Final = 1 << 14
_PERM_ATTACH_FILES: Final = 1 << 15
_PERM_READ_HISTORY: Final = 1 << 16
_PERM_MENTION_EVERYONE: Final = 1 << 17
_EVERYONE_PERMS: Final = (
    _PERM_ADD_REACTIONS
    | _PERM_VIEW_CHANNEL
    | _PERM_SEND_MESSAGES
    | _PERM_EMBED_LINKS
    | _PERM_ATTACH_FILES
    | _PERM_READ_HISTORY
    | _PERM_MENTION_EVERYONE
)

_USER_MENTION: Final = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION: Final = re.compile(r"<@&(\d+)>")
_EVERYONE_MENTION: Final = re.compile(r"@(?:everyone|here)\b")

MAX_CONTENT_LENGTH: Final = 2000
# Discord keeps a session's missed events for a while; a bounded buffer is enough here.
_REPLAY_BUFFER: Final = 1000


# ---------------------------------------------------------------------------
# Configuration and records


@dataclass(frozen=True)
class FakeUser:
    """A Discord user known to the fake (a guild member or a message author)."""

    id: int
    name: str
    bot: bool = False
    global_name: str | None = None


@dataclass(frozen=True)
class FakeRole:
    """A mentionable guild role (the @everyone role is added by the fake)."""

    id: int
    name: str


@dataclass(frozen=True)
class FakeChannel:
    """A guild text channel; ``forbidden`` makes the bot lack View Channel there (403 Missing Access)."""

    id: int
    name: str
    forbidden: bool = False
    topic: str | None = None


@dataclass(frozen=True)
class FakeGuild:
    """A guild the bot is in: its channels, human members (the bot is added) and roles."""

    id: int
    name: str
    channels: tuple[FakeChannel, ...] = ()
    members: tuple[FakeUser, ...] = ()
    roles: tuple[FakeRole, ...] = ()


DEFAULT_GUILD: Final = FakeGuild(
    id=GUILD_ID,
    name="Mission Control",
    channels=(
        FakeChannel(GENERAL_CHANNEL_ID, "general", topic="Anything goes"),
        FakeChannel(FORBIDDEN_CHANNEL_ID, "flight-directors", forbidden=True),
    ),
    members=(FakeUser(DEFAULT_AUTHOR_ID, "earthling"),),
)


@dataclass(frozen=True)
class SentMessage:
    """One message the bot created through ``POST /channels/{id}/messages``.

    ``mention_everyone``, ``pinged`` and ``pinged_roles`` are what Discord would
    have notified after applying ``allowed_mentions`` to the content (and to the
    replied-to author), so a test can check that ``@everyone`` pinged nobody.
    """

    id: int
    channel_id: int
    content: str | None
    nonce: str | None
    allowed_mentions: dict[str, Any] | None = field(hash=False)
    reference_id: int | None
    mention_everyone: bool
    pinged: frozenset[int]
    pinged_roles: frozenset[int]
    tts: bool = False
    flags: int = 0
    attachments: tuple[str, ...] = ()
    #: Each attachment's ``description`` (its alt text) and size in bytes, in ``attachments`` order.
    attachment_alts: tuple[str | None, ...] = ()
    attachment_sizes: tuple[int, ...] = ()
    embeds: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    raw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    time: float = field(default=0.0, compare=False)
    """When the fake created the message (``time.monotonic()``): pacing tests read the gaps."""


@dataclass(frozen=True)
class RestCall:
    """One REST request the fake answered: route key (``"POST /channels/{channel_id}/messages"``) and status."""

    method: str
    path: str
    route: str | None
    status: int


# ---------------------------------------------------------------------------
# Internal state


@dataclass
class _Bucket:
    route: str
    major: str
    hash: str
    limit: int
    window: float
    remaining: int = 0
    reset_at: float = 0.0  # time.monotonic()
    last_was_429: bool = False


@dataclass
class _ChannelInfo:
    id: int
    name: str
    guild_id: int | None  # None: a DM channel
    forbidden: bool = False
    topic: str | None = None
    recipient_id: int | None = None
    position: int = 0


@dataclass
class _Fault:
    kind: str
    route: str | None
    retry_after: float


class _Conn:
    """One gateway websocket; sends are serialised so frames never interleave."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.session: _Session | None = None
        self.closed_by_fake = False
        self._lock = asyncio.Lock()

    async def send(self, frame: Mapping[str, Any]) -> bool:
        """Send one frame; False when the socket is already going away (the event stays buffered)."""
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                await self.ws.send_str(json.dumps(frame))
            except (ConnectionError, RuntimeError):
                return False
            return True


@dataclass
class _Session:
    id: str
    intents: int
    seq: int = 0
    resumable: bool = True
    conn: _Conn | None = None
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_REPLAY_BUFFER))
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py decodes JSON only for a Content-Type of exactly "application/json";
    # web.json_response would append "; charset=utf-8" and break login.
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, message: str, code: int) -> web.Response:
    return _json(status, {"message": message, "code": code})


def _form_error(field_name: str, code: str, message: str) -> web.Response:
    return _json(
        400,
        {
            "message": "Invalid Form Body",
            "code": 50035,
            "errors": {field_name: {"_errors": [{"code": code, "message": message}]}},
        },
    )


def _ceil_ms(seconds: float) -> float:
    # Rounded up like Discord's own values: a client that sleeps this long never arrives early.
    return math.ceil(max(seconds, 0.001) * 1000) / 1000


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _snowflake_time(snowflake: int) -> float:
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


# ---------------------------------------------------------------------------
# The fake


class FakeDiscord:
    """Fake Discord REST API and gateway for one bot token.

    Args:
        token: the bot token; REST wants ``Authorization: Bot <token>``, IDENTIFY wants it verbatim.
        bot_user_id: the bot's user id (also the application id unless ``application_id`` is given).
        bot_name: the bot's username.
        application_id: the application id reported by ``/oauth2/applications/@me`` and READY.
        guilds: guilds the bot is in; ``None`` gives :data:`DEFAULT_GUILD`.
        route_limit: ``(requests, seconds)`` of every per-route bucket; per channel for channel routes.
        global_rate: requests per second across all routes before a global 429.
        heartbeat_interval: seconds announced in HELLO (small, so tests exercise heartbeats).
        fault_ratio: share of ``POST /channels/{id}/messages`` requests that meet a random fault.
        fault_kinds: the faults ``fault_ratio`` picks from (see :data:`FaultKind`).
        slow_delay: seconds a ``"slow"`` fault holds the request before answering normally.
        privileged_intents: privileged intents "enabled in the developer portal"; asking for
            any other closes the gateway with 4014 like Discord.
        seed: seeds the random faults, session ids and bucket hashes, for repeatable runs.
        port: the port to listen on (0: a free one); a test can start the fake late on a known port.

    Records a test reads (plain attributes, newest last):
        sent: :class:`SentMessage` for every message created (a nonce-deduplicated retry adds none).
        requests: :class:`RestCall` for every REST request answered, faults and 429s included.
        count_429_by_bucket: 429s per bucket, keyed ``"POST /channels/{channel_id}/messages:<id>"``
            (route, then the major parameter) or ``"global"``; :attr:`count_429` is their sum.
        count_repeated_429: 429s answered to a bucket whose previous answer was already a 429,
            i.e. a client that came back before ``retry_after``; a well-behaved client keeps it 0.
        identifies, resumes, ready_count, invalid_sessions: gateway session counters.
        replayed: dispatches re-sent on RESUME; heartbeats: op 1 frames received.
        gateway_connects: websocket connections per path (``/gateway``, ``/gateway-resume``).
        presence_updates: the ``d`` of every op 3 the client sent.
    """

    def __init__(
        self,
        token: str = "TEST.DISCORD.TOKEN",
        *,
        bot_user_id: int = DEFAULT_BOT_USER_ID,
        bot_name: str = "personae-bot",
        application_id: int | None = None,
        guilds: Sequence[FakeGuild] | None = None,
        route_limit: tuple[int, float] = (5, 5.0),
        global_rate: int = 50,
        heartbeat_interval: float = 1.0,
        fault_ratio: float = 0.0,
        fault_kinds: Sequence[FaultKind] = ("500", "502", "slow"),
        slow_delay: float = 0.3,
        privileged_intents: Collection[str] = ("members", "presences", "message_content"),
        seed: int = 0,
        port: int = 0,
    ) -> None:
        unknown = set(privileged_intents) - set(_PRIVILEGED)
        if unknown:
            raise ValueError(f"unknown privileged intents: {sorted(unknown)}")
        bad_kinds = set(fault_kinds) - _FAULT_KINDS
        if bad_kinds:
            raise ValueError(f"unknown fault kinds: {sorted(bad_kinds)}")
        self.token = token
        self.bot_user = FakeUser(bot_user_id, bot_name, bot=True)
        self.application_id = application_id if application_id is not None else bot_user_id
        self.guilds: tuple[FakeGuild, ...] = tuple(guilds) if guilds is not None else (DEFAULT_GUILD,)
        self.route_limit = route_limit
        self.global_rate = global_rate
        self.heartbeat_interval = heartbeat_interval
        self.fault_ratio = fault_ratio
        self.fault_kinds: tuple[FaultKind, ...] = tuple(fault_kinds)
        self.slow_delay = slow_delay
        self.privileged_intents = frozenset(privileged_intents)
        self.seed = seed
        #: Answer gateway heartbeats; set False to simulate a zombie connection.
        self.ack_heartbeats = True
        #: Largest attachment accepted (Discord: 10 MiB without boosts); larger ones get a 413.
        self.max_attachment_size = 10 * 1024 * 1024

        # Records a test reads.
        self.sent: list[SentMessage] = []
        self.requests: list[RestCall] = []
        self.count_429_by_bucket: Counter[str] = Counter()
        self.count_repeated_429 = 0
        self.identifies = 0
        self.resumes = 0
        self.ready_count = 0
        self.invalid_sessions = 0
        self.replayed = 0
        self.heartbeats = 0
        self.gateway_connects: Counter[str] = Counter()
        self.presence_updates: list[dict[str, Any]] = []

        self._rng = random.Random(seed)
        self._app = web.Application(client_max_size=64 * 1024 * 1024)  # the fake enforces its own limit
        self._app.router.add_get("/gateway", self._gateway)
        self._app.router.add_get("/gateway-resume", self._gateway)
        self._app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._wanted_port = port

        self._routes: list[tuple[str, re.Pattern[str], str, _Handler]] = [
            ("GET", re.compile(r"/gateway"), "/gateway", self._h_gateway),
            ("GET", re.compile(r"/gateway/bot"), "/gateway/bot", self._h_gateway_bot),
            ("GET", re.compile(r"/users/@me"), "/users/@me", self._h_me),
            ("POST", re.compile(r"/users/@me/channels"), "/users/@me/channels", self._h_open_dm),
            ("GET", re.compile(r"/users/(?P<user_id>\d+)"), "/users/{user_id}", self._h_user),
            ("GET", re.compile(r"/oauth2/applications/@me"), "/oauth2/applications/@me", self._h_application),
            ("GET", re.compile(r"/channels/(?P<channel_id>\d+)"), "/channels/{channel_id}", self._h_channel),
            (
                "GET",
                re.compile(r"/channels/(?P<channel_id>\d+)/messages"),
                "/channels/{channel_id}/messages",
                self._h_history,
            ),
            (
                "POST",
                re.compile(r"/channels/(?P<channel_id>\d+)/messages"),
                "/channels/{channel_id}/messages",
                self._h_send,
            ),
            (
                "GET",
                re.compile(r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)"),
                "/channels/{channel_id}/messages/{message_id}",
                self._h_get_message,
            ),
            (
                "POST",
                re.compile(r"/channels/(?P<channel_id>\d+)/typing"),
                "/channels/{channel_id}/typing",
                self._h_typing,
            ),
        ]
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._global_window_start = 0.0
        self._global_count = 0
        self._global_blocked_until = 0.0
        self._global_last_was_429 = False
        self._faults: deque[_Fault] = deque()

        self._users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}
        self._channels: dict[int, _ChannelInfo] = {}
        self._guild_by_id: dict[int, FakeGuild] = {}
        for guild in self.guilds:
            self._guild_by_id[guild.id] = guild
            for user in guild.members:
                self._users[user.id] = user
            for position, channel in enumerate(guild.channels):
                self._channels[channel.id] = _ChannelInfo(
                    channel.id, channel.name, guild.id, channel.forbidden, channel.topic, position=position
                )
        self._messages: dict[int, dict[str, Any]] = {}
        self._message_guild: dict[int, int | None] = {}
        self._channel_messages: dict[int, list[int]] = {}
        self._nonces: dict[str, int] = {}
        self._last_snowflake = 0

        self._conns: set[_Conn] = set()
        self._sessions: dict[str, _Session] = {}
        # Dispatches made while no resumable session exists, delivered after the next READY.
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[bool]] = set()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 (on a free port unless one was given)."""
        if self._runner is not None:
            raise RuntimeError("FakeDiscord already started")
        # A short shutdown timeout: cleanup must not wait a minute for a client's socket.
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._wanted_port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Close every gateway socket and the server. Close discord.py clients first, or they reconnect."""
        for conn in list(self._conns):
            conn.closed_by_fake = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()

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
        """The TCP port the fake listens on."""
        if self._port is None:
            raise RuntimeError("FakeDiscord not started")
        return self._port

    @property
    def rest_base(self) -> str:
        """Value for ``discord.http.Route.BASE``."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Value for ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (as a ``yarl.URL``)."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """The ``resume_gateway_url`` READY announces; a distinct path so tests can see it used."""
        return f"ws://127.0.0.1:{self.port}/gateway-resume"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this fake, restoring them on exit."""
        # Imported here so the fake itself can be used (raw HTTP tests) without discord.py.
        import discord.gateway
        import discord.http
        import yarl

        route_cls = discord.http.Route
        ws_cls = discord.gateway.DiscordWebSocket
        old_base, old_gateway = route_cls.BASE, ws_cls.DEFAULT_GATEWAY
        route_cls.BASE = self.rest_base
        ws_cls.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            route_cls.BASE = old_base
            ws_cls.DEFAULT_GATEWAY = old_gateway

    # -- counters and waiting ------------------------------------------------

    @property
    def count_429(self) -> int:
        """All 429s answered, route and global."""
        return sum(self.count_429_by_bucket.values())

    @property
    def connected(self) -> bool:
        """Whether some gateway socket is attached to a live (identified or resumed) session."""
        return any(s.conn is not None for s in self._sessions.values())

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever the fake's state changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"FakeDiscord: timed out after {timeout}s waiting for {what}")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                self._waiters.remove(waiter)

    async def wait_for_sent(self, n: int, timeout: float = 5.0) -> list[SentMessage]:
        """Wait until at least ``n`` messages were sent; return all of them."""
        await self.wait_until(lambda: len(self.sent) >= n, timeout, f"{n} sent message(s)")
        return list(self.sent)

    async def wait_ready(self, n_identifies: int = 1, timeout: float = 5.0) -> None:
        """Wait until READY (and the GUILD_CREATEs) went out for ``n_identifies`` IDENTIFYs."""
        await self.wait_until(lambda: self.ready_count >= n_identifies, timeout, f"{n_identifies} READY")

    async def wait_resumed(self, n_resumes: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``n_resumes`` RESUMEs were accepted (missed events replayed, RESUMED sent)."""
        await self.wait_until(lambda: self.resumes >= n_resumes, timeout, f"{n_resumes} RESUMED")

    # -- fault injection -----------------------------------------------------

    def fail_next(
        self,
        kind: FaultKind,
        n: int = 1,
        *,
        route: str | None = ROUTE_SEND,
        retry_after: float = 0.25,
    ) -> None:
        """Make the next ``n`` requests to ``route`` (``None``: any route) meet ``kind``.

        Kinds: ``"500"``/``"502"``/``"503"``/``"504"`` answer that status without acting;
        ``"500_committed"`` creates the message and then answers 500 (a retry with the
        same nonce gets the existing message back, as ``enforce_nonce`` promises);
        ``"429"`` is a per-route 429 with bucket headers that empties the bucket for
        ``retry_after`` seconds; ``"429_global"`` blocks every route for ``retry_after``;
        ``"slow"`` waits ``slow_delay`` and answers normally; ``"disconnect"`` drops
        the TCP connection without an answer.
        """
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        for _ in range(n):
            self._faults.append(_Fault(kind, route, retry_after))

    async def drop_gateway(self, resumable: bool = True, *, code: int = 4000, abrupt: bool = False) -> None:
        """Close every gateway socket.

        ``resumable``: the session survives and a RESUME replays what was missed;
        otherwise a RESUME gets INVALID_SESSION (``d: false``) and the client must
        IDENTIFY again.  ``abrupt`` cuts the TCP connection instead of sending a close frame.
        """
        for conn in list(self._conns):
            conn.closed_by_fake = True
            session = conn.session
            if session is not None:
                if session.conn is conn:
                    session.conn = None
                if not resumable:
                    session.resumable = False
            if abrupt:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=code, message=b"dropped by fake")
        self._notify()

    async def request_reconnect(self) -> None:
        """Send RECONNECT (op 7) on every socket: the client should close and RESUME."""
        for conn in list(self._conns):
            await conn.send({"op": OP_RECONNECT, "d": None, "s": None, "t": None})

    async def invalidate_session(self, resumable: bool = False) -> None:
        """Send INVALID_SESSION (op 9) with ``d: resumable`` on every socket."""
        for conn in list(self._conns):
            session = conn.session
            if session is not None and not resumable:
                session.resumable = False
                self._sessions.pop(session.id, None)
            self.invalid_sessions += 1
            await conn.send({"op": OP_INVALID_SESSION, "d": resumable, "s": None, "t": None})
        self._notify()

    # -- injecting traffic -----------------------------------------------------

    async def inject_message(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int = DEFAULT_AUTHOR_ID,
        author_name: str | None = None,
        guild_id: int | None = None,
        mentions: Sequence[int] | None = None,
        reference_id: int | None = None,
        author_bot: bool = False,
    ) -> int:
        """Dispatch MESSAGE_CREATE as if a user wrote ``content`` in ``channel_id``; return the message id.

        A channel of a configured guild is a guild message whatever ``guild_id`` says;
        any other channel id with ``guild_id=None`` becomes a DM channel with the author.
        ``mentions=None`` takes the mentions from ``<@id>`` in the content.

        With no connected client the event waits: a dropped but resumable session gets
        it on RESUME (as Discord would); with no resumable session it is delivered after
        the next READY (Discord would lose it; tests find that more useful).
        """
        info = self._channels.get(channel_id)
        if info is None:
            if guild_id is not None:
                raise ValueError(f"channel {channel_id} is not a channel of guild {guild_id}")
            info = _ChannelInfo(channel_id, "", None, recipient_id=author_id)
            self._channels[channel_id] = info
        elif guild_id is not None and info.guild_id != guild_id:
            raise ValueError(f"channel {channel_id} belongs to guild {info.guild_id}, not {guild_id}")

        known = self._users.get(author_id)
        author = FakeUser(author_id, author_name or (known.name if known else f"user{author_id}"), bot=author_bot)
        self._users.setdefault(author_id, author)

        mention_ids = list(mentions) if mentions is not None else [int(m) for m in _USER_MENTION.findall(content)]
        everyone = info.guild_id is not None and bool(_EVERYONE_MENTION.search(content))
        role_ids = [int(r) for r in _ROLE_MENTION.findall(content)] if info.guild_id is not None else []
        reference = None
        if reference_id is not None:
            reference = {"message_id": str(reference_id), "channel_id": str(channel_id)}
        payload = self._build_message(
            channel_id=channel_id,
            author=author,
            content=content,
            mention_ids=mention_ids,
            role_ids=role_ids,
            mention_everyone=everyone,
            reference=reference,
        )
        self._store(payload, info.guild_id)
        await self._broadcast("MESSAGE_CREATE", self._gateway_message(payload, info.guild_id), buffer=True)
        return int(payload["id"])

    # -- messages ------------------------------------------------------------

    def _next_snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        # Worker 1, process 0; bumping the last id keeps ids strictly increasing within a millisecond.
        candidate = (ms << 22) | (1 << 17)
        self._last_snowflake = max(candidate, self._last_snowflake + 1)
        return self._last_snowflake

    def _user_payload(self, user: FakeUser) -> dict[str, Any]:
        return {
            "id": str(user.id),
            "username": user.name,
            "discriminator": "0",
            "global_name": user.global_name,
            "avatar": None,
            "bot": user.bot,
            "public_flags": 0,
        }

    def _member_payload(self, user: FakeUser | None, joined: float) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [],
            "joined_at": _iso(joined),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "pending": False,
        }
        if user is not None:
            data["user"] = self._user_payload(user)
        return data

    def _build_message(
        self,
        *,
        channel_id: int,
        author: FakeUser,
        content: str,
        mention_ids: Sequence[int],
        role_ids: Sequence[int],
        mention_everyone: bool,
        reference: dict[str, Any] | None,
        nonce: str | None = None,
        tts: bool = False,
        flags: int = 0,
        embeds: Sequence[Any] = (),
        attachments: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        msg_id = self._next_snowflake()
        payload: dict[str, Any] = {
            "id": str(msg_id),
            "channel_id": str(channel_id),
            # 19 is REPLY: Discord gives replies their own message type.
            "type": 19 if reference is not None else 0,
            "content": content,
            "author": self._user_payload(author),
            "timestamp": _iso(_snowflake_time(msg_id)),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": mention_everyone,
            "mentions": [self._user_payload(self._users[u]) for u in mention_ids if u in self._users],
            "mention_roles": [str(r) for r in role_ids],
            "attachments": list(attachments),
            "embeds": list(embeds),
            "pinned": False,
            "flags": flags,
            "components": [],
        }
        if nonce is not None:
            payload["nonce"] = nonce
        if reference is not None:
            payload["message_reference"] = {"type": 0, **reference}
            referenced = self._messages.get(int(reference["message_id"]))
            if referenced is not None:
                payload["referenced_message"] = referenced
        return payload

    def _store(self, payload: dict[str, Any], guild_id: int | None) -> None:
        msg_id = int(payload["id"])
        self._messages[msg_id] = payload
        self._message_guild[msg_id] = guild_id
        self._channel_messages.setdefault(int(payload["channel_id"]), []).append(msg_id)

    def _gateway_message(self, payload: dict[str, Any], guild_id: int | None) -> dict[str, Any]:
        """The MESSAGE_CREATE form of a stored message: REST form plus guild_id and the author's member."""
        data = dict(payload)
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            data["member"] = self._member_payload(None, time.time())
        return data

    # -- gateway -------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, request)
        self._conns.add(conn)
        self.gateway_connects[request.path] += 1
        await conn.send(
            {"op": OP_HELLO, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)}, "s": None, "t": None}
        )
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue  # discord.py sends text JSON only
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                await self._on_op(conn, frame)
        finally:
            self._conns.discard(conn)
            session = conn.session
            if session is not None:
                if session.conn is conn:
                    session.conn = None
                # Like Discord: a client that closes with 1000/1001 ends its session for good.
                if not conn.closed_by_fake and ws.close_code in (1000, 1001):
                    session.resumable = False
                    self._sessions.pop(session.id, None)
            self._notify()
        return ws

    async def _on_op(self, conn: _Conn, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        data = frame.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeats += 1
            if self.ack_heartbeats:
                await conn.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data if isinstance(data, dict) else {})
        elif op == OP_RESUME:
            await self._resume(conn, data if isinstance(data, dict) else {})
        elif op == OP_REQUEST_MEMBERS:
            await self._request_members(conn, data if isinstance(data, dict) else {})
        elif op == OP_PRESENCE:
            self.presence_updates.append(data if isinstance(data, dict) else {})
        # Voice state and other ops are accepted and ignored.

    async def _identify(self, conn: _Conn, data: dict[str, Any]) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents") or 0)
        enabled = sum(_PRIVILEGED[name] for name in self.privileged_intents)
        if intents & sum(_PRIVILEGED.values()) & ~enabled:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = _Session(id=f"{self._rng.getrandbits(128):032x}", intents=intents)
        self._sessions[session.id] = session
        self.identifies += 1
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**self._user_payload(self.bot_user), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "_trace": ["fake-discord"],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        async with session.lock:
            session.conn = conn
            conn.session = session
            await self._emit(session, "READY", ready)
            if intents & INTENT_GUILDS:
                for guild in self.guilds:
                    await self._emit(session, "GUILD_CREATE", self._guild_create(guild, intents))
            pending, self._pending = self._pending, []
            for event, payload in pending:
                visible = self._visible(session, event, payload)
                if visible is not None:
                    await self._emit(session, event, visible)
        self.ready_count += 1
        self._notify()

    async def _resume(self, conn: _Conn, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        session = self._sessions.get(str(data.get("session_id")))
        seq = int(data.get("seq") or 0)
        too_old = session is not None and bool(session.events) and session.events[0]["s"] > seq + 1
        if session is None or not session.resumable or too_old:
            if session is not None:
                self._sessions.pop(session.id, None)
            self.invalid_sessions += 1
            await conn.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            self._notify()
            return
        async with session.lock:
            old = session.conn
            if old is not None and old is not conn:
                # Discord closes the superseded socket; detach first so its close keeps the session.
                old.session = None
                old.closed_by_fake = True
                task = asyncio.get_running_loop().create_task(old.ws.close(code=4000))
                # Keep a reference: the loop holds tasks only weakly.
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            session.conn = conn
            conn.session = session
            for frame in list(session.events):
                if frame["s"] > seq:
                    self.replayed += 1
                    await conn.send(frame)
            await self._emit(session, "RESUMED", {"_trace": ["fake-discord"]})
        self.resumes += 1
        self._notify()

    async def _request_members(self, conn: _Conn, data: dict[str, Any]) -> None:
        session = conn.session
        guild = self._guild_by_id.get(int(data.get("guild_id") or 0))
        if session is None or guild is None:
            return
        query = str(data.get("query") or "").lower()
        user_ids = {int(u) for u in data.get("user_ids") or []}
        limit = int(data.get("limit") or 0)
        members = [
            u
            for u in self._guild_members(guild)
            if (not user_ids or u.id in user_ids) and u.name.lower().startswith(query)
        ]
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [self._member_payload(u, time.time()) for u in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        async with session.lock:
            await self._emit(session, "GUILD_MEMBERS_CHUNK", chunk)

    async def _emit(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        """Number, buffer and (if connected) send one dispatch; the caller holds ``session.lock``."""
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if session.conn is not None:
            await session.conn.send(frame)

    async def _broadcast(self, event: str, data: dict[str, Any], *, buffer: bool) -> None:
        targets = [s for s in self._sessions.values() if s.resumable]
        if not targets:
            if buffer:
                self._pending.append((event, data))
            return
        for session in targets:
            visible = self._visible(session, event, data)
            if visible is None:
                continue
            async with session.lock:
                await self._emit(session, event, visible)

    def _visible(self, session: _Session, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """What a session with these intents receives of an event (None: nothing)."""
        if event != "MESSAGE_CREATE":
            return data
        intents = session.intents
        if "guild_id" not in data:
            return data if intents & INTENT_DIRECT_MESSAGES else None
        if not intents & INTENT_GUILD_MESSAGES:
            return None
        bot_id = str(self.bot_user.id)
        if (
            intents & INTENT_MESSAGE_CONTENT
            or data["author"]["id"] == bot_id
            or any(m["id"] == bot_id for m in data.get("mentions", []))
        ):
            return data
        # Without the message_content intent Discord blanks these fields of others' guild messages.
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    def _application_flags(self) -> int:
        return sum(_APP_FLAG_FOR[name] for name in self.privileged_intents)

    def _guild_members(self, guild: FakeGuild) -> list[FakeUser]:
        return [self.bot_user, *(m for m in guild.members if m.id != self.bot_user.id)]

    def _channel_payload(self, info: _ChannelInfo) -> dict[str, Any]:
        last = self._channel_messages.get(info.id)
        last_id = str(last[-1]) if last else None
        if info.guild_id is None:
            recipients = []
            if info.recipient_id is not None and info.recipient_id in self._users:
                recipients.append(self._user_payload(self._users[info.recipient_id]))
            return {"id": str(info.id), "type": 1, "last_message_id": last_id, "recipients": recipients, "flags": 0}
        overwrites = []
        if info.forbidden:
            deny = _PERM_VIEW_CHANNEL | _PERM_SEND_MESSAGES
            overwrites.append({"id": str(info.guild_id), "type": 0, "allow": "0", "deny": str(deny)})
        return {
            "id": str(info.id),
            "type": 0,
            "guild_id": str(info.guild_id),
            "name": info.name,
            "position": info.position,
            "parent_id": None,
            "topic": info.topic,
            "nsfw": False,
            "rate_limit_per_user": 0,
            "last_message_id": last_id,
            "permission_overwrites": overwrites,
            "flags": 0,
        }

    def _guild_create(self, guild: FakeGuild, intents: int) -> dict[str, Any]:
        members = self._guild_members(guild)
        # Without GUILD_PRESENCES Discord lists only the bot itself (and voice users) in GUILD_CREATE;
        # discord.py then asks for the rest with op 8 if it has the members intent.
        listed = members if intents & INTENT_GUILD_PRESENCES else [self.bot_user]
        joined = time.time()
        roles = [
            {
                "id": str(guild.id),
                "name": "@everyone",
                "permissions": str(_EVERYONE_PERMS),
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            },
            *(
                {
                    "id": str(r.id),
                    "name": r.name,
                    "permissions": "0",
                    "position": i + 1,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": True,
                    "flags": 0,
                }
                for i, r in enumerate(guild.roles)
            ),
        ]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(members[-1].id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": roles,
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "nsfw_level": 0,
            "joined_at": _iso(joined),
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "members": [self._member_payload(u, joined) for u in listed],
            "channels": [self._channel_payload(self._channels[c.id]) for c in guild.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # -- REST pipeline -------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len(API_PREFIX) :]
        path_known = False
        for method, pattern, template, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            path_known = True
            if method == request.method:
                route = f"{method} {template}"
                response = await self._run_route(request, route, match.groupdict(), handler)
                self.requests.append(RestCall(request.method, request.path, route, response.status))
                self._notify()
                return response
        status = 405 if path_known else 404
        self.requests.append(RestCall(request.method, request.path, None, status))
        if path_known:
            return _error(405, "405: Method Not Allowed", 0)
        return _error(404, "404: Not Found", 0)

    async def _run_route(
        self, request: web.Request, route: str, params: dict[str, str], handler: _Handler
    ) -> web.StreamResponse:
        if route != "GET /gateway" and request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, "401: Unauthorized", 0)

        now = time.monotonic()
        limited = self._check_global(now)
        if limited is not None:
            return limited

        major = params.get("channel_id") or params.get("guild_id") or ""
        bucket = self._bucket(route, major)
        if bucket.reset_at <= now:
            bucket.remaining, bucket.reset_at = bucket.limit, now + bucket.window
        if bucket.remaining <= 0:
            return self._route_429(bucket, bucket.reset_at - now)
        bucket.remaining -= 1

        fault = self._take_fault(route)
        if fault is not None:
            if fault.kind == "429":
                bucket.remaining, bucket.reset_at = 0, now + fault.retry_after
                return self._route_429(bucket, fault.retry_after)
            if fault.kind == "429_global":
                self._global_blocked_until = now + fault.retry_after
                return self._global_429(fault.retry_after)
            if fault.kind == "slow":
                await asyncio.sleep(self.slow_delay)
            elif fault.kind == "disconnect":
                if request.transport is not None:
                    request.transport.abort()
                # Nobody reads this answer: the connection is already gone.
                return web.Response(status=499)
            elif fault.kind == "500_committed":
                await handler(request, params)
                bucket.last_was_429 = False
                return self._server_error(500)
            else:
                return self._server_error(int(fault.kind))

        response = await handler(request, params)
        bucket.last_was_429 = self._global_last_was_429 = False
        reset_after = _ceil_ms(bucket.reset_at - time.monotonic())
        response.headers.update(
            {
                "X-RateLimit-Limit": str(bucket.limit),
                "X-RateLimit-Remaining": str(bucket.remaining),
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": bucket.hash,
            }
        )
        return response

    def _bucket(self, route: str, major: str) -> _Bucket:
        key = (route, major)
        bucket = self._buckets.get(key)
        if bucket is None:
            digest = hashlib.sha256(f"{self.seed}:{route}".encode()).hexdigest()[:32]
            limit, window = self.route_limit
            bucket = _Bucket(route, major, digest, limit, window)
            self._buckets[key] = bucket
        return bucket

    def _take_fault(self, route: str) -> _Fault | None:
        for fault in self._faults:
            if fault.route is None or fault.route == route:
                self._faults.remove(fault)
                return fault
        if route == ROUTE_SEND and self.fault_ratio > 0 and self._rng.random() < self.fault_ratio:
            return _Fault(self._rng.choice(self.fault_kinds), route, 0.25)
        return None

    def _check_global(self, now: float) -> web.Response | None:
        if now < self._global_blocked_until:
            return self._global_429(self._global_blocked_until - now)
        if now - self._global_window_start >= 1.0:
            self._global_window_start, self._global_count = now, 0
        if self._global_count >= self.global_rate:
            self._global_blocked_until = self._global_window_start + 1.0
            return self._global_429(self._global_blocked_until - now)
        self._global_count += 1
        return None

    def _route_429(self, bucket: _Bucket, retry_after: float) -> web.Response:
        key = f"{bucket.route}:{bucket.major}" if bucket.major else bucket.route
        self.count_429_by_bucket[key] += 1
        if bucket.last_was_429:
            self.count_repeated_429 += 1
        bucket.last_was_429 = True
        retry_after = _ceil_ms(retry_after)
        return _json(
            429,
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
            {
                "Retry-After": str(math.ceil(retry_after)),
                "X-RateLimit-Limit": str(bucket.limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Bucket": bucket.hash,
                "X-RateLimit-Scope": "user",
                # discord.py treats a 429 as a rate limit only when it came through Discord's proxy.
                "Via": "1.1 google",
            },
        )

    def _global_429(self, retry_after: float) -> web.Response:
        if self.count_429_by_bucket["global"] > 0 and self._global_last_was_429:
            self.count_repeated_429 += 1
        self.count_429_by_bucket["global"] += 1
        self._global_last_was_429 = True
        retry_after = _ceil_ms(retry_after)
        return _json(
            429,
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": True},
            {
                "Retry-After": str(math.ceil(retry_after)),
                "X-RateLimit-Global": "true",
                "X-RateLimit-Scope": "global",
                "Via": "1.1 google",
            },
        )

    def _server_error(self, status: int) -> web.Response:
        if status in (502, 504):
            # Gateway errors come from the proxy in front of the API, as HTML.
            text = f"<html><body><h1>{status} Bad Gateway</h1></body></html>"
            return web.Response(status=status, text=text, content_type="text/html")
        reason = {500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Server Error")
        return _error(status, f"{status}: {reason}", 0)

    def _channel_or_error(self, params: dict[str, str]) -> _ChannelInfo | web.Response:
        info = self._channels.get(int(params["channel_id"]))
        if info is None:
            return _error(404, "Unknown Channel", 10003)
        if info.forbidden:
            return _error(403, "Missing Access", 50001)
        return info

    # -- REST handlers ---------------------------------------------------------

    async def _h_gateway(self, request: web.Request, params: dict[str, str]) -> web.Response:
        return _json(200, {"url": self.gateway_url})

    async def _h_gateway_bot(self, request: web.Request, params: dict[str, str]) -> web.Response:
        return _json(
            200,
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            },
        )

    async def _h_me(self, request: web.Request, params: dict[str, str]) -> web.Response:
        me = {"verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US", "email": None}
        return _json(200, {**self._user_payload(self.bot_user), **me})

    async def _h_user(self, request: web.Request, params: dict[str, str]) -> web.Response:
        user = self._users.get(int(params["user_id"]))
        if user is None:
            return _error(404, "Unknown User", 10013)
        return _json(200, self._user_payload(user))

    async def _h_application(self, request: web.Request, params: dict[str, str]) -> web.Response:
        owner = next((m for g in self.guilds for m in g.members), FakeUser(DEFAULT_AUTHOR_ID, "owner"))
        return _json(
            200,
            {
                "id": str(self.application_id),
                "name": self.bot_user.name,
                "icon": None,
                "description": "",
                "summary": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self._user_payload(owner),
                "team": None,
                "flags": self._application_flags(),
                "interactions_endpoint_url": None,
                "bot": self._user_payload(self.bot_user),
            },
        )

    async def _h_open_dm(self, request: web.Request, params: dict[str, str]) -> web.Response:
        body = await request.json()
        recipient = int(body.get("recipient_id", 0))
        if recipient not in self._users:
            return _form_error("recipient_id", "NUMBER_TYPE_COERCE", "Value is not a known user.")
        info = next((c for c in self._channels.values() if c.guild_id is None and c.recipient_id == recipient), None)
        if info is None:
            info = _ChannelInfo(self._next_snowflake(), "", None, recipient_id=recipient)
            self._channels[info.id] = info
        return _json(200, self._channel_payload(info))

    async def _h_channel(self, request: web.Request, params: dict[str, str]) -> web.Response:
        info = self._channel_or_error(params)
        if isinstance(info, web.Response):
            return info
        return _json(200, self._channel_payload(info))

    async def _h_typing(self, request: web.Request, params: dict[str, str]) -> web.Response:
        info = self._channel_or_error(params)
        if isinstance(info, web.Response):
            return info
        return web.Response(status=204)

    async def _h_get_message(self, request: web.Request, params: dict[str, str]) -> web.Response:
        info = self._channel_or_error(params)
        if isinstance(info, web.Response):
            return info
        payload = self._messages.get(int(params["message_id"]))
        if payload is None or payload["channel_id"] != str(info.id):
            return _error(404, "Unknown Message", 10008)
        return _json(200, payload)

    async def _h_history(self, request: web.Request, params: dict[str, str]) -> web.Response:
        info = self._channel_or_error(params)
        if isinstance(info, web.Response):
            return info
        ids = sorted(self._channel_messages.get(info.id, []))
        limit = max(1, min(100, int(request.query.get("limit", "50"))))
        if "before" in request.query:
            ids = [i for i in ids if i < int(request.query["before"])]
        if "after" in request.query:
            ids = [i for i in ids if i > int(request.query["after"])]
        # With "after", Discord returns the messages right after it (still newest first), else the latest.
        ids = ids[:limit] if "after" in request.query else ids[-limit:]
        return _json(200, [self._messages[i] for i in reversed(ids)])

    async def _h_send(self, request: web.Request, params: dict[str, str]) -> web.Response:
        info = self._channel_or_error(params)
        if isinstance(info, web.Response):
            return info
        filenames: list[str] = []
        if request.content_type == "multipart/form-data":
            form = await request.post()
            raw_json = form.get("payload_json")
            body: dict[str, Any] = json.loads(raw_json) if isinstance(raw_json, str) else {}
            sizes: list[int] = []
            for name, value in form.items():
                if name.startswith("files[") and isinstance(value, web.FileField):
                    filenames.append(value.filename)
                    sizes.append(len(value.file.read()))
            if any(n > self.max_attachment_size for n in sizes):
                return _error(413, "Request entity too large", 40005)
            body["_sizes"] = sizes
        elif request.content_type == "application/json":
            body = await request.json()
        else:
            return _error(400, "Cannot send an empty message", 50006)
        return await self._create_message(info, body, filenames)

    async def _create_message(self, info: _ChannelInfo, body: dict[str, Any], filenames: list[str]) -> web.Response:
        content = body.get("content") or ""
        embeds = body.get("embeds") or []
        if not content and not embeds and not filenames and not body.get("sticker_ids") and not body.get("poll"):
            return _error(400, "Cannot send an empty message", 50006)
        if len(content) > MAX_CONTENT_LENGTH:
            return _form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_LENGTH} or fewer in length.")

        nonce = body.get("nonce")
        nonce = str(nonce) if nonce is not None else None
        if nonce is not None and body.get("enforce_nonce") and nonce in self._nonces:
            # enforce_nonce: the same nonce again returns the first message instead of a duplicate.
            return _json(200, self._messages[self._nonces[nonce]])

        reference = body.get("message_reference")
        referenced: dict[str, Any] | None = None
        if reference is not None:
            referenced = self._messages.get(int(reference.get("message_id") or 0))
            if referenced is None:
                if reference.get("fail_if_not_exists", True):
                    return _form_error("message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
                reference = None

        allowed = body.get("allowed_mentions")
        replied_author = int(referenced["author"]["id"]) if referenced is not None else None
        resolved = self._resolve_mentions(content, allowed, info.guild_id, replied_author)
        if isinstance(resolved, web.Response):
            return resolved
        everyone, users, roles = resolved

        attachments = [
            {
                "id": str(self._next_snowflake()),
                "filename": name,
                "size": 0,
                "url": f"http://127.0.0.1:{self.port}/attachments/{info.id}/{name}",
                "proxy_url": f"http://127.0.0.1:{self.port}/attachments/{info.id}/{name}",
                "content_type": "application/octet-stream",
            }
            for name in filenames
        ]
        ref_payload = None
        if reference is not None and referenced is not None:
            ref_payload = {"message_id": referenced["id"], "channel_id": referenced["channel_id"]}
            if info.guild_id is not None:
                ref_payload["guild_id"] = str(info.guild_id)
        payload = self._build_message(
            channel_id=info.id,
            author=self.bot_user,
            content=content,
            mention_ids=users,
            role_ids=roles,
            mention_everyone=everyone,
            reference=ref_payload,
            nonce=nonce,
            tts=bool(body.get("tts")),
            flags=int(body.get("flags") or 0),
            embeds=embeds,
            attachments=attachments,
        )
        self._store(payload, info.guild_id)
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[nonce] = int(payload["id"])
        self.sent.append(
            SentMessage(
                id=int(payload["id"]),
                channel_id=info.id,
                content=body.get("content"),
                nonce=nonce,
                allowed_mentions=allowed,
                reference_id=int(referenced["id"]) if reference is not None and referenced is not None else None,
                mention_everyone=everyone,
                pinged=frozenset(users),
                pinged_roles=frozenset(roles),
                tts=bool(body.get("tts")),
                flags=int(body.get("flags") or 0),
                attachments=tuple(filenames),
                attachment_alts=_alts(body, filenames),
                attachment_sizes=tuple(body.get("_sizes") or ()),
                embeds=tuple(embeds),
                raw=body,
                time=time.monotonic(),
            )
        )
        self._notify()
        # Discord echoes the bot's own messages on the gateway; a bot must ignore its own author.
        await self._broadcast("MESSAGE_CREATE", self._gateway_message(payload, info.guild_id), buffer=False)
        return _json(200, payload)

    def _resolve_mentions(
        self,
        content: str,
        allowed: Any,
        guild_id: int | None,
        replied_author: int | None,
    ) -> tuple[bool, list[int], list[int]] | web.Response:
        """Who Discord would notify: (everyone?, user ids, role ids), or a 400 for a bad allowed_mentions.

        Without ``allowed_mentions`` everything in the content pings, and so does the
        replied-to author.  With it, only the kinds named in ``parse`` or the ids
        listed (and present in the content) ping, and the replied-to author only with
        ``replied_user: true``.  The bot is assumed to have Mention Everyone.
        """
        in_guild = guild_id is not None
        content_users = list(dict.fromkeys(int(u) for u in _USER_MENTION.findall(content)))
        content_users = [u for u in content_users if u in self._users]
        content_roles = list(dict.fromkeys(int(r) for r in _ROLE_MENTION.findall(content))) if in_guild else []
        has_everyone = in_guild and bool(_EVERYONE_MENTION.search(content))

        if allowed is None:
            everyone, users, roles, replied = has_everyone, content_users, content_roles, True
        else:
            if not isinstance(allowed, dict):
                return _form_error("allowed_mentions", "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
            parse = allowed.get("parse", [])
            bad = [p for p in parse if p not in ("everyone", "users", "roles")]
            if bad:
                message = f"Value {bad[0]!r} is not a valid enum value."
                return _form_error("allowed_mentions", "ENUM_TYPE_COERCE", message)
            listed_users = [int(u) for u in allowed.get("users", [])]
            listed_roles = [int(r) for r in allowed.get("roles", [])]
            for kind, listed in (("users", listed_users), ("roles", listed_roles)):
                if kind in parse and listed:
                    return _form_error(
                        "allowed_mentions",
                        "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                        f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                    )
            everyone = has_everyone and "everyone" in parse
            users = content_users if "users" in parse else [u for u in content_users if u in listed_users]
            roles = content_roles if "roles" in parse else [r for r in content_roles if r in listed_roles]
            replied = bool(allowed.get("replied_user", False))
        if replied and replied_author is not None and replied_author not in users and replied_author in self._users:
            users = [*users, replied_author]
        return everyone, users, roles


def _alts(body: dict[str, Any], filenames: list[str]) -> tuple[str | None, ...]:
    """The ``description`` of each uploaded file, from ``payload_json``'s ``attachments`` (matched by id)."""
    described = {int(a["id"]): a.get("description") for a in body.get("attachments") or [] if "id" in a}
    return tuple(described.get(i) for i in range(len(filenames)))
