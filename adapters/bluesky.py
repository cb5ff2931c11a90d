"""Bluesky, through the atproto SDK: mentions and replies polled from notifications, posts as records.

One adapter serves one persona with one account and an app password. Options in bot.toml::

    [[adapters]]
    type = "bluesky"
    persona = "philae"
    handle = "philae.bsky.social"
    password_env = "PHILAE_BLUESKY_PASSWORD"   # the app password itself only ever lives in the environment
    # base_url = "https://bsky.social"         # the account's PDS
    admins = ["flight.bsky.social"]             # handles or DIDs that may use /emit and /reload
    # poll_interval = 10                        # seconds between notification polls
    # max_replies_per_thread = 5                # the persona's replies in one thread, at most
    # points_per_hour = 5000                    # the account's record-creation budgets (a post costs 3)
    # points_per_day = 35000

Event posts go to the account's feed (the chat ``timeline``). A mention or a
reply to one of the persona's posts is answered in its thread (the reply
refers to the thread's root and to the post answered). Persona templates
render in the ``social`` dialect: user-derived text cannot mention anyone,
because only an ``@handle`` written in the persona file becomes a mention
facet; links and hashtags become facets wherever they come from. A post is
at most 300 graphemes (and 3,000 bytes); a longer one becomes a thread,
each piece answering the one before. Every record gets a record key derived
from its outbox key, so a retry after a crash or a lost answer finds the
post already there instead of posting it twice. Record creation is paced to
the account's points budgets (3 points a post): 5,000 per hour, kept by an
even pace, and 35,000 per day, checked before each post; when the day's
points are spent, posting pauses until they return. A 429 pauses the
dispatcher until ``ratelimit-reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import regex
from atproto import AsyncClient, models
from atproto_client.exceptions import (
    AtProtocolError,
    BadRequestError,
    RateLimitExceededError,
    RequestErrorBase,
    UnauthorizedError,
)

from personae.delivery.split import graphemes
from personae.engine.messages import Media
from personae.language.media import PLATFORM_MEDIA, describe

from .base import (
    Adapter,
    AdapterConfig,
    Delivery,
    DeliveryError,
    IncomingHandler,
    Limits,
    OptionError,
    PlatformUnreachable,
    Receipt,
    number_option,
    read_media,
    whole_option,
)
from .points import PointsBudget

log = logging.getLogger("personae.bluesky")

#: The chat of the account's own feed, where event posts go.
TIMELINE = "timeline"
POST = "app.bsky.feed.post"
#: Bluesky's limit on a post's text, in graphemes.
MAX_GRAPHEMES = 300
#: Points a created record costs against the account's budget (5,000 per hour, 35,000 per day).
POINTS_PER_CREATE = 3
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_LEADING_MENTIONS = re.compile(r"^(?:\s*@[A-Za-z0-9][A-Za-z0-9.-]*)+\s*")
# Facets. A link as Bluesky's own apps detect one; trailing punctuation is not part of it.
_LINK = re.compile(r"https?://[^\s<>\"]*[^\s<>\".,;:!?)\]}'\u2019\u201d]")
# A hashtag: at the start or after a space, up to a space or an invisible character; trailing
# punctuation is not part of it, nor is a tag only of digits (#1); at most 64 graphemes.
_TAG = regex.compile(r"(?:^|(?<=\s))[#\uff03](?P<tag>(?!\ufe0f)[^\s\u00ad\u2060\u200a-\u200d\u20e2]+)")
_TAG_TRAILING = regex.compile(r"\p{P}+$")
_TAG_WORD = regex.compile(r"[^\d\p{P}]")
# An @handle written as is: the social dialect puts a word joiner after every user-derived "@".
_MENTION = re.compile(
    r"(?<![\w/@])@(?P<handle>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)"
)
_T = TypeVar("_T")


def record_key(key: str) -> str:
    """The record key (a valid TID) of the post for outbox ``key``: the same key, the same record.

    A TID is a 64-bit number with the top bit 0, in 13 characters of sortable
    base32; here the number comes from a hash of the key instead of the clock.
    """
    n = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1  # top bit 0
    return "".join(_TID_ALPHABET[(n >> (5 * i)) & 31] for i in range(12, -1, -1))


@dataclass(frozen=True, slots=True)
class Ref:
    """A strong reference to a post: its ``at://`` URI and the CID of its content."""

    uri: str
    cid: str

    def model(self) -> models.ComAtprotoRepoStrongRef.Main:
        """As the SDK sends it."""
        return models.ComAtprotoRepoStrongRef.Main(uri=self.uri, cid=self.cid)


@dataclass(frozen=True, slots=True)
class Facet:
    """A facet of a post's text: UTF-8 byte offsets and what the span is (a link, a tag or a mention)."""

    start: int
    end: int
    kind: str  # "link", "tag" or "mention"
    value: str  # the URI, the tag without "#", or the mention's handle

    def model(self, did: str | None = None) -> models.AppBskyRichtextFacet.Main:
        """As the SDK sends it (``did``: the DID a mention's handle resolved to)."""
        feature: Any
        if self.kind == "link":
            feature = models.AppBskyRichtextFacet.Link(uri=self.value)
        elif self.kind == "tag":
            feature = models.AppBskyRichtextFacet.Tag(tag=self.value)
        else:
            feature = models.AppBskyRichtextFacet.Mention(did=did or "")
        return models.AppBskyRichtextFacet.Main(
            features=[feature], index=models.AppBskyRichtextFacet.ByteSlice(byte_start=self.start, byte_end=self.end)
        )


def find_facets(text: str) -> list[Facet]:
    """Links, hashtags and ``@handle`` mentions in ``text``, with UTF-8 byte offsets, in order.

    A mention is only found where ``@`` is directly followed by a handle: the
    social dialect puts an invisible word joiner after each ``@`` in
    user-derived text, so only the persona author's literal text mentions.
    """
    spans: list[tuple[int, int, str, str]] = []
    for m in _LINK.finditer(text):
        spans.append((m.start(), m.end(), "link", m.group()))
    taken = [(s, e) for s, e, _, _ in spans]

    def free(s: int, e: int) -> bool:
        return all(e <= a or s >= b for a, b in taken)

    for m in _MENTION.finditer(text):
        if free(m.start(), m.end()):
            spans.append((m.start(), m.end(), "mention", m.group("handle").lower()))
    for t in _TAG.finditer(text):
        tag = _TAG_TRAILING.sub("", t.group("tag"))
        end = t.start("tag") + len(tag)
        if _TAG_WORD.search(tag) and graphemes(tag) <= 64 and free(t.start(), end):
            spans.append((t.start(), end, "tag", tag))
    spans.sort()
    facets = []
    for start, end, kind, value in spans:
        byte_start = len(text[:start].encode())
        facets.append(Facet(byte_start, byte_start + len(text[start:end].encode()), kind, value))
    return facets


def strip_leading_mentions(text: str) -> str:
    """``text`` without the ``@bot @someone`` it starts with, so rules see what was said."""
    return _LEADING_MENTIONS.sub("", text, count=1)


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """A field of an SDK model or of a plain dict (records of unknown types stay dicts)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _ref(obj: Any) -> Ref | None:
    if obj is None:
        return None
    uri, cid = _field(obj, "uri"), _field(obj, "cid")
    return Ref(str(uri), str(cid)) if uri and cid else None


def _thread_root(record: Any, itself: Ref) -> Ref:
    """The root of the thread a post with ``record`` belongs to (itself when it is not a reply)."""
    reply = _field(record, "reply")
    return _ref(_field(reply, "root")) or itself if reply is not None else itself


def _rkey(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


class BlueskyAdapter(Adapter):
    """A Bluesky account speaking as one persona."""

    platform = "bluesky"
    # Every record has a key derived from its outbox key: a repeat creates nothing new.
    idempotent = True
    option_names = frozenset(
        {
            "handle",
            "password_env",
            "base_url",
            "poll_interval",
            "max_replies_per_thread",
            "points_per_hour",
            "points_per_day",
            "concurrency",
            "request_timeout",
            "language",
        }
    )

    def __init__(self, config: AdapterConfig, password: str) -> None:
        super().__init__(config)
        opts = dict(config.options)
        self._password = password
        self.handle = str(opts.get("handle", "")).lstrip("@").strip()
        if not self.handle:
            raise OptionError("handle", "missing 'handle': the account's handle, e.g. 'philae.bsky.social'")
        self.base_url = str(opts.get("base_url", "https://bsky.social")).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise OptionError("base_url", "base_url must be the PDS's URL, e.g. 'https://bsky.social'")
        self.poll_interval = number_option(opts, "poll_interval", 10)
        self.max_replies_per_thread = whole_option(opts, "max_replies_per_thread", 5)
        self.language = str(opts["language"]) if "language" in opts else None
        self.request_timeout = number_option(opts, "request_timeout", 30)
        per_hour = _points_option(opts, "points_per_hour", 5000)
        per_day = _points_option(opts, "points_per_day", 35000)
        # Posts spend the points budgets; reads (polling) do not. The dispatcher's even pace
        # keeps the hourly budget (less its headroom); the daily one is checked before each post.
        self.points = PointsBudget([(per_hour, 3600.0), (per_day, 86400.0)])
        self.limits = Limits(
            max_length=MAX_GRAPHEMES,
            dialect="social",
            measure="bluesky",
            global_rate=per_hour / POINTS_PER_CREATE / 3600,
            rate_window=3600.0,  # points per hour
            concurrency=whole_option(opts, "concurrency", 1),
        )
        self._client = self._new_client()
        self._client.on_session_change(self._session_changed)
        self.did: str | None = None
        self._poller: asyncio.Task[None] | None = None
        self._login_lock = asyncio.Lock()
        self._logins = 0
        #: The newest notification time handled, and the notifications at that time (one may follow another).
        self._watermark = ""
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._repo = _Repository(self)

    def _new_client(self) -> AsyncClient:
        from atproto_client.request import AsyncRequest

        return AsyncClient(self.base_url, request=AsyncRequest(timeout=self.request_timeout))

    @classmethod
    def create(cls, config: AdapterConfig, environ: Mapping[str, str]) -> BlueskyAdapter:
        """Read the app password from the environment."""
        return cls(config, cls.token_from(config, environ, "password_env"))

    def secrets(self) -> tuple[str, ...]:
        """The app password (the session's tokens go to :attr:`on_secrets` as they change)."""
        return (self._password,)

    def _session_changed(self, event: Any, session: Any) -> None:
        # Called by the SDK after createSession and each refreshSession: the new tokens are secrets too.
        self.on_secrets(session.access_jwt, session.refresh_jwt)
        self.did = session.did

    @property
    def channels(self) -> tuple[str, ...]:
        """Broadcasts go to the account's feed."""
        return (TIMELINE,)

    def reserve(self, chat: str) -> int:
        """A post to a subscriber that answers nothing starts with ``@handle``; replies and the feed do not."""
        return 0 if chat == TIMELINE else graphemes(f"@{chat} ")

    # -- lifecycle

    async def start(self, on_message: IncomingHandler) -> None:
        """Log in, note the newest notification (older ones are not answered), and poll."""
        try:
            await self._login()
            page = await self._client.app.bsky.notification.list_notifications(
                models.AppBskyNotificationListNotifications.Params(limit=1)
            )
        except UnauthorizedError:
            raise RuntimeError(f"Bluesky refused the handle {self.handle} or its app password (401)") from None
        except BadRequestError as exc:
            raise RuntimeError(f"Bluesky refused the login: {_describe(exc)}") from None
        except (AtProtocolError, httpx.HTTPError) as exc:
            raise PlatformUnreachable(f"cannot reach Bluesky at {self.base_url} ({_describe(exc)})") from None
        if page.notifications:
            newest = page.notifications[0]
            self._watermark = str(newest.indexed_at)
            self._mark_seen(newest.uri + "|" + newest.reason)
        self._poller = asyncio.create_task(self._poll(on_message), name=f"bluesky-{self.name}")
        log.info("bluesky adapter %s started as @%s", self.name, self.handle)

    async def _login(self) -> None:
        """A new session from the app password (createSession, then the profile)."""
        async with self._login_lock:
            await self._client.login(self.handle, self._password)
            self._logins += 1

    async def stop(self) -> None:
        """Stop polling and close the HTTP client."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
            self._poller = None
        with contextlib.suppress(Exception):
            await self._client.request.close()

    async def _call(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()``, logging in again once if the session expired (the SDK only refreshes ahead of time)."""
        logins = self._logins
        try:
            return await call()
        except (BadRequestError, UnauthorizedError) as exc:
            if _error_name(exc) not in ("ExpiredToken", "InvalidToken"):
                raise
            if self._logins == logins:  # nobody logged in meanwhile
                log.info("bluesky %s: the session expired, logging in again", self.name)
                await self._login()
            return await call()

    # -- mentions in

    async def _poll(self, on_message: IncomingHandler) -> None:
        while True:
            wait = self.poll_interval
            try:
                for notification in await self._new_notifications():
                    incoming = await self.to_incoming(notification)
                    if incoming is None:
                        continue
                    try:
                        await on_message(incoming)
                    except Exception:  # one bad mention must not stop the bot
                        log.exception("bluesky %s failed to handle notification %s", self.name, notification.uri)
            except asyncio.CancelledError:
                raise
            except RateLimitExceededError as exc:
                wait = max(wait, _retry_after(exc))
                log.warning("bluesky %s: rate limited while polling, waiting %.0fs", self.name, wait)
            except Exception as exc:
                log.warning("bluesky %s polling error: %s", self.name, _describe(exc))
            await asyncio.sleep(wait)

    async def _new_notifications(self) -> list[Any]:
        """Mentions and replies not handled yet, oldest first (paging back to the last one handled)."""
        found: list[Any] = []
        cursor: str | None = None
        while True:
            params = models.AppBskyNotificationListNotifications.Params(limit=50, cursor=cursor)
            page = await self._call(functools.partial(self._client.app.bsky.notification.list_notifications, params))
            older = False
            for n in page.notifications:
                if str(n.indexed_at) < self._watermark:
                    older = True
                    continue
                if n.uri + "|" + n.reason not in self._seen and n.reason in ("mention", "reply"):
                    found.append(n)
            cursor = page.cursor
            if older or not page.notifications or not cursor:
                break
        found.sort(key=lambda n: str(n.indexed_at))
        for n in found:
            self._mark_seen(n.uri + "|" + n.reason)
            self._watermark = max(self._watermark, str(n.indexed_at))
        # A post that mentions the bot in a reply to it gives two notifications: answer it once.
        unique: dict[str, Any] = {}
        for n in found:
            unique.setdefault(n.uri, n)
        return list(unique.values())

    def _mark_seen(self, key: str) -> None:
        self._seen[key] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)

    async def to_incoming(self, notification: Any) -> Any:
        """The Incoming for a mention or reply notification (may read the thread for the reply cap)."""
        from personae.engine.messages import Chat, Incoming, User

        author = notification.author
        if author.did == self.did:
            return None
        record = notification.record
        itself = Ref(str(notification.uri), str(notification.cid))
        self._repo.remember(itself, _thread_root(record, itself))
        text = strip_leading_mentions(str(_field(record, "text", "") or ""))
        kind = "text"
        if _field(record, "reply") is not None and await self._repo.thread_full(itself.uri):
            kind = "thread cap"
        handle = str(author.handle)
        admins = {str(a).lstrip("@").lower() for a in self.config.admins}
        return Incoming(
            self.persona,
            self.platform,
            Chat(handle, "thread"),
            User(
                str(author.did),
                str(author.display_name or handle),
                handle,
                handle.lower() in admins or str(author.did).lower() in admins,
            ),
            text,
            message_id=itself.uri,
            bot_username=self.handle,
            received_at=_time(str(notification.indexed_at)),
            adapter=self.name,
            kind=kind,
        )

    # -- posts out

    async def send(self, delivery: Delivery) -> Receipt:
        """Create one post (one piece of a thread); errors become :class:`DeliveryError`."""
        try:
            return await self._post(delivery)
        except RateLimitExceededError as exc:
            wait = _retry_after(exc)
            raise DeliveryError(
                f"Bluesky rate limit: retry after {wait:.0f}s", retry_after=wait, scope="global"
            ) from None
        except UnauthorizedError as exc:
            raise DeliveryError(f"Bluesky refused the session: {_describe(exc)}", permanent=True) from None
        except BadRequestError as exc:
            raise DeliveryError(f"Bluesky refused the post: {_describe(exc)}", permanent=True) from None
        except (AtProtocolError, httpx.HTTPError) as exc:
            raise DeliveryError(f"network error: {_describe(exc)}") from None

    async def _post(self, delivery: Delivery) -> Receipt:
        if self.did is None:
            raise DeliveryError("not logged in to Bluesky yet")
        text, parent = delivery.text, None
        if delivery.part > 0:
            parent = delivery.previous  # a thread continues under the piece already posted
            if parent is None:
                log.warning("bluesky %s: piece %d of %s has no piece before it", self.name, delivery.part, delivery.key)
        elif delivery.reply_to:
            parent = delivery.reply_to
        elif delivery.chat != TIMELINE:
            text = f"@{delivery.chat} {text}"  # news for a subscriber: the only mention the adapter adds
        embed, left_out = await image_embed(self._call, self._client, delivery.media)
        if left_out and not text.strip():
            text = " ".join(describe(m.name, m.kind, m.alt) for m in left_out)  # a text note stands in
        reply = None
        if parent is not None:
            cid, root = await self._repo.lookup(parent)
            reply = models.AppBskyFeedPost.ReplyRef(parent=Ref(parent, cid).model(), root=root.model())
        facets = [f.model(did) for f, did in await self._repo.facets(text) if f.kind != "mention" or did]
        record = models.AppBskyFeedPost.Record(
            text=text,
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            reply=reply,
            facets=facets or None,
            langs=langs_of(self.language or self.locale),
            embed=embed,
        )
        wait = self.points.wait(POINTS_PER_CREATE)
        if wait > 0:  # the day's (or hour's) points are spent: pause every post, not only this one
            raise DeliveryError(
                f"Bluesky points budget spent: next post in {wait:.0f}s", retry_after=wait, scope="global"
            )
        rkey = record_key(delivery.key) if delivery.key else None
        data = models.ComAtprotoRepoCreateRecord.Data(repo=self.did, collection=POST, rkey=rkey, record=record)
        try:
            created = await self._call(lambda: self._client.com.atproto.repo.create_record(data))
            ref = Ref(str(created.uri), str(created.cid))
        except (RateLimitExceededError, BadRequestError, UnauthorizedError):
            raise
        except (AtProtocolError, httpx.HTTPError) as exc:
            # A lost answer, or the PDS refusing a record key that exists (a 500 today, maybe a 409
            # later): the post may be there already. Only what the PDS holds says whether it is.
            existing = await self._repo.existing(rkey) if rkey else None
            if existing is None:
                raise
            log.info("bluesky %s: %s was already posted (%s)", self.name, delivery.key, _describe(exc))
            ref = existing
        self.points.spend(POINTS_PER_CREATE)
        root = Ref(reply.root.uri, reply.root.cid) if reply is not None else ref
        self._repo.remember(ref, root)
        return Receipt((ref.uri,))


def langs_of(locale: str | None) -> list[str] | None:
    """A post's ``langs`` (BCP 47: ``en-GB`` of ``en_GB``), or ``None``."""
    return [locale.replace("_", "-")] if locale else None


class _Repository:
    """What the adapter asks Bluesky about posts and handles, and remembers of the answers.

    A reply needs the CID of the post it answers and the root of its thread; after a
    restart only Bluesky knows them. Posts recently seen or sent are kept (bounded), so a
    thread's next piece asks nothing.
    """

    def __init__(self, adapter: BlueskyAdapter) -> None:
        self._adapter = adapter
        #: Post URI -> (its CID, the root of its thread), for posts recently seen or sent (bounded).
        self._posts: OrderedDict[str, tuple[str, Ref]] = OrderedDict()
        #: Handle -> DID of mentions written by the persona.
        self._dids: dict[str, str | None] = {}

    async def thread_full(self, uri: str) -> bool:
        """Whether the persona already answered ``max_replies_per_thread`` times above this post."""
        try:
            params = models.AppBskyFeedGetPostThread.Params(uri=uri, depth=0, parent_height=1000)
            thread = (
                await self._adapter._call(lambda: self._adapter._client.app.bsky.feed.get_post_thread(params))
            ).thread
        except (AtProtocolError, httpx.HTTPError) as exc:
            log.warning("bluesky %s: cannot read the thread of %s: %s", self._adapter.name, uri, _describe(exc))
            return False
        replies = 0
        node = _field(thread, "parent")
        while node is not None and _field(node, "post") is not None:
            post = node.post
            parent = _field(node, "parent")
            parent_author = _field(_field(_field(parent, "post"), "author"), "did")
            # A reply is one of our posts answering someone else (the pieces of a long one answer us).
            if (
                post.author.did == self._adapter.did
                and parent_author is not None
                and parent_author != self._adapter.did
            ):
                replies += 1
            node = parent
        return replies >= self._adapter.max_replies_per_thread

    def remember(self, post: Ref, root: Ref) -> None:
        self._posts[post.uri] = (post.cid, root)
        self._posts.move_to_end(post.uri)
        while len(self._posts) > 10_000:
            self._posts.popitem(last=False)

    async def existing(self, rkey: str) -> Ref | None:
        """The post with record key ``rkey`` in the account's repository, if there is one."""
        params = models.ComAtprotoRepoGetRecord.Params(repo=self._adapter.did or "", collection=POST, rkey=rkey)
        try:
            found = await self._adapter._call(lambda: self._adapter._client.com.atproto.repo.get_record(params))
        except BadRequestError as exc:
            if _error_name(exc) == "RecordNotFound":
                return None
            raise
        return Ref(str(found.uri), str(found.cid)) if found.cid else None

    async def lookup(self, uri: str) -> tuple[str, Ref]:
        """The CID of post ``uri`` and the root of its thread (asked of Bluesky after a restart)."""
        known = self._posts.get(uri)
        if known is not None:
            return known
        if self._adapter.did and uri.startswith(
            f"at://{self._adapter.did}/"
        ):  # our own post (a piece before a restart)
            params = models.ComAtprotoRepoGetRecord.Params(repo=self._adapter.did, collection=POST, rkey=_rkey(uri))
            found = await self._adapter._call(lambda: self._adapter._client.com.atproto.repo.get_record(params))
            post, record = Ref(uri, str(found.cid)), found.value
        else:
            posts = await self._adapter._call(
                lambda: self._adapter._client.app.bsky.feed.get_posts(models.AppBskyFeedGetPosts.Params(uris=[uri]))
            )
            if not posts.posts:
                raise DeliveryError(f"the post answered is gone: {uri}", permanent=True)
            post, record = Ref(uri, str(posts.posts[0].cid)), posts.posts[0].record
        root = _thread_root(record, post)
        self.remember(post, root)
        return post.cid, root

    async def facets(self, text: str) -> list[tuple[Facet, str | None]]:
        """The facets of ``text``, each mention with the DID its handle resolves to (``None``: it does not)."""
        out: list[tuple[Facet, str | None]] = []
        for facet in find_facets(text):
            did = None
            if facet.kind == "mention":
                if facet.value not in self._dids:
                    self._dids[facet.value] = await self.resolve(facet.value)
                did = self._dids[facet.value]
            out.append((facet, did))
        return out

    async def resolve(self, handle: str) -> str | None:
        try:
            params = models.ComAtprotoIdentityResolveHandle.Params(handle=handle)
            return str(
                (
                    await self._adapter._call(lambda: self._adapter._client.com.atproto.identity.resolve_handle(params))
                ).did
            )
        except BadRequestError:
            return None  # no such handle: the text stays, without a mention


async def image_embed(
    call: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]], client: AsyncClient, media: tuple[Media, ...]
) -> tuple[models.AppBskyEmbedImages.Main | None, list[Media]]:
    """The images of a post as an ``app.bsky.embed.images`` (each blob uploaded, with its alt text).

    Bluesky posts carry images only; the other files are returned, left out. A retry
    uploads again (an unreferenced blob is dropped by the PDS); the post keeps its record key.
    """
    images: list[models.AppBskyEmbedImages.Image] = []
    left_out: list[Media] = []
    limit = PLATFORM_MEDIA["bluesky"].image
    for m in media:
        if m.kind != "image" or len(images) == PLATFORM_MEDIA["bluesky"].per_post:
            log.info("bluesky: %s is left out (Bluesky posts carry up to 4 images, no audio or video)", m.name)
            left_out.append(m)
            continue
        data = await read_media(m, limit)
        headers = {"Content-Type": m.mime}
        uploaded = await call(functools.partial(client.com.atproto.repo.upload_blob, data, headers=headers))
        images.append(models.AppBskyEmbedImages.Image(alt=m.alt, image=uploaded.blob))
    return (models.AppBskyEmbedImages.Main(images=images) if images else None), left_out


def _points_option(options: Mapping[str, Any], key: str, default: float) -> float:
    """A points budget option: a number of at least one post's cost."""
    value = number_option(options, key, default)
    if value < POINTS_PER_CREATE:
        raise OptionError(key, f"{key} must be at least {POINTS_PER_CREATE} (one post), not {value:g}")
    return value


def _error_name(exc: BaseException) -> str:
    """The XRPC ``error`` name of a refused request (``ExpiredToken``, ``RecordNotFound``), or ''."""
    response = getattr(exc, "response", None)
    content = getattr(response, "content", None)
    return str(_field(content, "error", "") or "")


def _retry_after(exc: RateLimitExceededError) -> float:
    """Seconds to wait after a 429: ``retry-after``, else until ``ratelimit-reset``, else a minute."""
    if exc.retry_after is not None:
        return max(1.0, float(exc.retry_after))
    if exc.reset_at is not None:
        return max(1.0, float(exc.reset_at.timestamp()) - time.time())
    return 60.0


def _time(iso: str) -> datetime:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    """One line for an SDK or HTTP error."""
    if isinstance(exc, RequestErrorBase) and exc.response is None and exc.__cause__ is not None:
        exc = exc.__cause__  # a transport failure: say what it was
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
