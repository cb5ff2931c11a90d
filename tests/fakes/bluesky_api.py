"""A fake Bluesky PDS: the XRPC API the real atproto SDK talks to, on 127.0.0.1.

Written from the AT Protocol lexicons and the PDS's documented behaviour. It
enforces what a real PDS enforces and the adapter must respect: sessions
with real 3-part JWTs that expire (400 ``ExpiredToken``; refresh tokens are
single-use), a ``didDoc`` whose ``#atproto_pds`` endpoint is this server,
post records of at most 300 graphemes and 3,000 bytes, facets whose UTF-8
byte offsets fall inside the text and on character boundaries, mention
facets naming known DIDs, reply refs whose root and parent exist with their
CID, record keys that are valid TIDs, a repeated record key refused (500
``InternalServerError``, as the reference PDS answers today), and a points
budget for record creation (3 points a post) with ``ratelimit-*`` headers and
429s. Test hooks: :meth:`inject_post`, :meth:`throttle`,
:attr:`lose_next_answers` (create the record, then drop the connection).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import regex
from aiohttp import web

POST = "app.bsky.feed.post"
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_SIGNING_KEY = b"fake-pds-signing-key"
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def grapheme_length(text: str) -> int:
    """Graphemes as the PDS counts a post's text."""
    return len(regex.findall(r"\X", text))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class FakeActor:
    """An account the network knows."""

    did: str
    handle: str

    def profile(self) -> dict[str, Any]:
        """ProfileView (also a ProfileViewBasic)."""
        return {"did": self.did, "handle": self.handle, "displayName": self.handle.split(".")[0].title(), "labels": []}


@dataclass
class FakePost:
    """A post record as the network stores it."""

    uri: str
    cid: str
    author: FakeActor
    record: dict[str, Any]
    indexed_at: str

    @property
    def text(self) -> str:
        """The post's text."""
        return str(self.record["text"])

    @property
    def parent(self) -> str | None:
        """The URI of the post this one answers."""
        reply = self.record.get("reply")
        return str(reply["parent"]["uri"]) if reply else None

    @property
    def root(self) -> str | None:
        """The URI of the root of this post's thread, when it is a reply."""
        reply = self.record.get("reply")
        return str(reply["root"]["uri"]) if reply else None

    def facet_texts(self) -> list[tuple[str, str]]:
        """Each facet as (its feature type, the text it covers, decoded from the byte offsets)."""
        data = self.text.encode()
        out = []
        for f in self.record.get("facets") or []:
            i = f["index"]
            out.append((f["features"][0]["$type"].rsplit("#", 1)[-1], data[i["byteStart"] : i["byteEnd"]].decode()))
        return out

    def view(self) -> dict[str, Any]:
        """PostView."""
        return {
            "$type": "app.bsky.feed.defs#postView",
            "uri": self.uri,
            "cid": self.cid,
            "author": self.author.profile(),
            "record": self.record,
            "indexedAt": self.indexed_at,
            "replyCount": 0,
            "repostCount": 0,
            "likeCount": 0,
            "quoteCount": 0,
            "labels": [],
        }


def _cid(value: Any) -> str:
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return "bafyrei" + base64.b32encode(digest).decode().lower().rstrip("=")[:52]


class _Refused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


@dataclass
class FakeBluesky:
    """The PDS (and, for reads, the AppView): ``async with FakeBluesky(handle, password) as fake``."""

    handle: str
    password: str
    #: Lifetime of an access token, in seconds (the SDK refreshes when less than 15 minutes are left).
    access_ttl: float = 7200.0
    #: Record creation budget per hour, in points (a created record costs 3).
    points_per_hour: int = 5000
    #: ... and per day (35,000). The windows are seconds (a benchmark may shrink them).
    points_per_day: int = 35000
    hour_window: float = 3600.0
    day_window: float = 86400.0
    #: Status of the answer to a repeated record key (500 today; 409 RecordAlreadyExists proposed).
    duplicate_status: int = 500
    me: FakeActor = field(init=False)
    actors: dict[str, FakeActor] = field(default_factory=dict)
    posts: dict[str, FakePost] = field(default_factory=dict)
    #: Records created by the bot, in order.
    created: list[FakePost] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    #: How many next record creations lose their answer (created, then the connection is dropped).
    lose_next_answers: int = 0
    #: Once this many posts exist, creation requests wait for :meth:`release` (None: never):
    #: a test kills the bot while one is held. ``held`` counts the requests that waited.
    hold_from: int | None = None
    held: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    #: createRecord calls answered 2xx, refused as a repeat, and 429s answered.
    creates_answered: int = 0
    duplicates_refused: int = 0
    throttled: int = 0
    sessions_created: int = 0
    #: Uploaded blobs: CID -> (MIME type, bytes). Anything may be uploaded; a post may reference an image up to
    #: ``max_image_size`` bytes (the lexicon's maxSize for app.bsky.embed.images).
    blobs: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    max_image_size: int = 1_000_000
    sessions_refreshed: int = 0
    #: Every request as (method, NSID), and every Authorization header and body seen.
    requests: list[tuple[str, str]] = field(default_factory=list)
    seen_auth: list[str] = field(default_factory=list)
    #: Every token handed out.
    issued: list[str] = field(default_factory=list)
    _access: set[str] = field(default_factory=set)
    _refresh: set[str] = field(default_factory=set)
    _jti: itertools.count[int] = field(default_factory=itertools.count)
    _ticks: itertools.count[int] = field(default_factory=itertools.count)
    _spent: list[tuple[float, int]] = field(default_factory=list)
    _throttle_until: float = 0.0
    _runner: web.AppRunner | None = None
    base_url: str = ""

    def __post_init__(self) -> None:
        self.me = self.actor(self.handle)

    # -- lifecycle

    async def __aenter__(self) -> FakeBluesky:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/xrpc/{nsid}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test hooks

    def actor(self, handle: str) -> FakeActor:
        """The account with ``handle``, made on first use."""
        for a in self.actors.values():
            if a.handle == handle:
                return a
        a = FakeActor(
            "did:plc:" + base64.b32encode(hashlib.sha256(handle.encode()).digest()).decode().lower()[:24], handle
        )
        self.actors[a.did] = a
        return a

    def inject_post(self, author: FakeActor, text: str, *, reply_to: FakePost | None = None) -> FakePost:
        """``author`` posts ``text`` (``@handle`` of a known account becomes a mention facet); the bot is notified."""
        facets = []
        mentioned = set()
        for m in re.finditer(r"@([a-z0-9.-]+\.[a-z]+)", text):
            actor = next((a for a in self.actors.values() if a.handle == m.group(1)), None)
            if actor is not None:
                start, end = len(text[: m.start()].encode()), len(text[: m.end()].encode())
                facets.append(
                    {
                        "index": {"byteStart": start, "byteEnd": end},
                        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": actor.did}],
                    }
                )
                mentioned.add(actor.did)
        record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": self._now(), "langs": ["en"]}
        if facets:
            record["facets"] = facets
        if reply_to is not None:
            root = self.posts[reply_to.root] if reply_to.root else reply_to
            record["reply"] = {
                "root": {"uri": root.uri, "cid": root.cid},
                "parent": {"uri": reply_to.uri, "cid": reply_to.cid},
            }
        post = self._store(author, self._tid(), record)
        thread_authors = set()
        if reply_to is not None:
            thread_authors = {reply_to.author.did, self.posts[reply_to.root or reply_to.uri].author.did}
        if self.me.did in thread_authors:
            self._notify(post, "reply")
        elif self.me.did in mentioned:
            self._notify(post, "mention")
        return post

    def expire_sessions(self) -> None:
        """Revoke every session (as after a password change): each token now gets 400 ExpiredToken."""
        self._access.clear()
        self._refresh.clear()

    def release(self) -> None:
        """Let held creation requests go on (their client may be gone), and hold no more."""
        self.hold_from = None
        self._released.set()

    def throttle(self, seconds: float) -> None:
        """Answer 429 to record creation for ``seconds``."""
        self._throttle_until = time.time() + seconds

    def replies_to(self, post: FakePost) -> list[FakePost]:
        """The bot's posts answering ``post``."""
        return [p for p in self.created if p.parent == post.uri]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait for ``predicate`` (a hang guard, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; created: {[p.text for p in self.created]}")
            await asyncio.sleep(0.05)

    # -- internals

    def _now(self) -> str:
        # Strictly increasing, so notifications sort as they were made.
        t = datetime.now(UTC) + timedelta(microseconds=next(self._ticks))
        return t.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _tid(self) -> str:
        n = int((datetime.now(UTC) - _EPOCH).total_seconds() * 1e6) << 10 | (next(self._ticks) & 1023)
        alphabet = "234567abcdefghijklmnopqrstuvwxyz"
        return "".join(alphabet[(n >> (5 * i)) & 31] for i in range(12, -1, -1))

    def _store(self, author: FakeActor, rkey: str, record: dict[str, Any]) -> FakePost:
        uri = f"at://{author.did}/{POST}/{rkey}"
        post = FakePost(uri, _cid(record), author, record, self._now())
        self.posts[uri] = post
        return post

    def _notify(self, post: FakePost, reason: str) -> None:
        self.notifications.append(
            {
                "uri": post.uri,
                "cid": post.cid,
                "author": post.author.profile(),
                "reason": reason,
                "record": post.record,
                "isRead": False,
                "indexedAt": post.indexed_at,
                "labels": [],
            }
        )

    def _jwt(self, scope: str, ttl: float) -> str:
        now = int(time.time())
        header = _b64(json.dumps({"typ": "at+jwt", "alg": "HS256"}).encode())
        claims = {
            "scope": scope,
            "sub": self.me.did,
            "aud": "did:web:127.0.0.1",
            "iat": now,
            "exp": now + math.ceil(ttl),
        }
        claims["jti"] = f"{next(self._jti)}-{now}"
        payload = _b64(json.dumps(claims).encode())
        sig = _b64(hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{sig}"

    def _session(self) -> dict[str, Any]:
        access, refresh = self._jwt("com.atproto.access", self.access_ttl), self._jwt("com.atproto.refresh", 90 * 86400)
        self._access.add(access)
        self._refresh.add(refresh)
        self.issued += [access, refresh]
        return {
            "accessJwt": access,
            "refreshJwt": refresh,
            "handle": self.me.handle,
            "did": self.me.did,
            "active": True,
            "didDoc": {
                "@context": ["https://www.w3.org/ns/did/v1"],
                "id": self.me.did,
                "alsoKnownAs": [f"at://{self.me.handle}"],
                "verificationMethod": [],
                # Here, not bsky.social: the SDK sends every later call to this endpoint.
                "service": [
                    {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": self.base_url}
                ],
            },
        }

    def _check_token(self, request: web.Request, kind: str) -> str:
        auth = request.headers.get("Authorization", "")
        self.seen_auth.append(auth)
        if not auth.startswith("Bearer "):
            raise _Refused(401, "AuthenticationRequired", "Authentication Required")
        token = auth[len("Bearer ") :]
        parts = token.split(".")
        if len(parts) != 3:
            raise _Refused(400, "InvalidToken", "Token could not be verified")
        expected = _b64(hmac.new(_SIGNING_KEY, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            raise _Refused(400, "InvalidToken", "Token could not be verified")
        claims = json.loads(_unb64(parts[1]))
        if claims["exp"] <= time.time():
            raise _Refused(400, "ExpiredToken", "Token has expired")
        live = self._access if kind == "access" else self._refresh
        if token not in live:
            raise _Refused(400, "ExpiredToken", "Token has been revoked")
        return token

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.match_info.get("nsid", request.path)))
        try:
            return await handler(request)
        except _Refused as r:
            return _json({"error": r.error, "message": r.message}, r.status, self._rate_headers())

    def _budget(self) -> tuple[int, int, float, float]:
        """(limit, remaining, reset, window) of the tighter of the hourly and daily points budgets."""
        now = time.time()
        self._spent = [(t, p) for t, p in self._spent if t > now - max(self.hour_window, self.day_window)]
        tightest = None
        for limit, window in ((self.points_per_hour, self.hour_window), (self.points_per_day, self.day_window)):
            spent = [(t, p) for t, p in self._spent if t > now - window]
            remaining = limit - sum(p for _, p in spent)
            reset = (spent[0][0] if spent else now) + window
            if tightest is None or remaining < tightest[1]:
                tightest = (limit, remaining, reset, window)
        assert tightest is not None
        return tightest

    def _rate_headers(self) -> dict[str, str]:
        limit, remaining, reset, window = self._budget()
        if time.time() < self._throttle_until:
            remaining, reset = 0, self._throttle_until
        return {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(max(0, remaining)),
            "ratelimit-reset": str(math.ceil(reset)),
            "ratelimit-policy": f"{limit};w={round(window)}",
        }

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        nsid = request.match_info["nsid"]
        handlers: dict[str, Callable[[web.Request], Any]] = {
            "com.atproto.server.createSession": self._create_session,
            "com.atproto.server.refreshSession": self._refresh_session,
            "app.bsky.actor.getProfile": self._get_profile,
            "com.atproto.identity.resolveHandle": self._resolve_handle,
            "com.atproto.repo.createRecord": self._create_record,
            "com.atproto.repo.uploadBlob": self._upload_blob,
            "com.atproto.repo.getRecord": self._get_record,
            "app.bsky.notification.listNotifications": self._list_notifications,
            "app.bsky.feed.getPostThread": self._get_post_thread,
            "app.bsky.feed.getPosts": self._get_posts,
        }
        handler = handlers.get(nsid)
        if handler is None:
            raise _Refused(501, "MethodNotImplemented", "Method Not Implemented")
        if nsid not in ("com.atproto.server.createSession", "com.atproto.server.refreshSession"):
            self._check_token(request, "access")
        result: web.StreamResponse = await handler(request)
        return result

    async def _create_session(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("identifier") not in (self.me.handle, self.me.did) or body.get("password") != self.password:
            raise _Refused(401, "AuthenticationRequired", "Invalid identifier or password")
        self.sessions_created += 1
        return _json(self._session())

    async def _refresh_session(self, request: web.Request) -> web.Response:
        token = self._check_token(request, "refresh")
        self._refresh.discard(token)  # single use
        self.sessions_refreshed += 1
        return _json(self._session())

    async def _get_profile(self, request: web.Request) -> web.Response:
        actor = request.query.get("actor", "")
        found = next((a for a in self.actors.values() if actor in (a.did, a.handle)), None)
        if found is None:
            raise _Refused(400, "InvalidRequest", "Profile not found")
        return _json({**found.profile(), "followersCount": 0, "followsCount": 0, "postsCount": 0})

    async def _resolve_handle(self, request: web.Request) -> web.Response:
        handle = request.query.get("handle", "").lower()
        found = next((a for a in self.actors.values() if a.handle == handle), None)
        if found is None:
            raise _Refused(400, "InvalidRequest", "Unable to resolve handle")
        return _json({"did": found.did})

    async def _create_record(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.hold_from is not None and len(self.created) >= self.hold_from:
            self.held += 1
            await self._released.wait()  # the request is read: it goes on even if its client dies
        if time.time() < self._throttle_until:
            self.throttled += 1
            raise _Refused(429, "RateLimitExceeded", "Rate Limit Exceeded")
        if self._budget()[1] < 3:
            self.throttled += 1
            raise _Refused(429, "RateLimitExceeded", "Rate Limit Exceeded")
        if body.get("repo") not in (self.me.did, self.me.handle) or body.get("collection") != POST:
            raise _Refused(400, "InvalidRequest", "Invalid repo or collection")
        rkey = body.get("rkey") or self._tid()
        if not _TID.match(rkey):
            raise _Refused(400, "InvalidRequest", f"Invalid record key: {rkey}")
        uri = f"at://{self.me.did}/{POST}/{rkey}"
        if uri in self.posts:
            self.duplicates_refused += 1
            if self.duplicate_status == 409:
                raise _Refused(409, "RecordAlreadyExists", f"Record already exists: {uri}")
            raise _Refused(500, "InternalServerError", "Internal Server Error")
        record = body.get("record") or {}
        self._validate(record)
        self._spent.append((time.time(), 3))
        post = self._store(self.me, rkey, record)
        self.created.append(post)
        if self.lose_next_answers > 0:
            self.lose_next_answers -= 1
            assert request.transport is not None
            request.transport.close()  # created, but the client never hears of it
            return web.Response()
        self.creates_answered += 1
        return _json(
            {
                "uri": post.uri,
                "cid": post.cid,
                "commit": {"cid": post.cid, "rev": self._tid()},
                "validationStatus": "valid",
            },
            headers=self._rate_headers(),
        )

    async def _upload_blob(self, request: web.Request) -> web.Response:
        """The body is the blob; its type is the Content-Type header (the PDS sniffs when it is vague)."""
        if request.method != "POST":
            raise _Refused(400, "InvalidRequest", "uploadBlob is a procedure")
        data = await request.read()
        mime = request.headers.get("Content-Type", "*/*")
        if mime in ("*/*", "application/octet-stream") and data.startswith(b"\x89PNG"):
            mime = "image/png"
        digest = hashlib.sha256(data).digest()
        cid = "b" + base64.b32encode(bytes([1, 0x55, 0x12, 0x20]) + digest).decode().lower().rstrip("=")
        self.blobs[cid] = (mime, data)
        return _json({"blob": {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": len(data)}})

    def _validate_embed(self, embed: Any) -> None:
        def invalid(why: str) -> _Refused:
            return _Refused(400, "InvalidRecord", f"Invalid app.bsky.feed.post record: {why}")

        if not isinstance(embed, dict) or embed.get("$type") != "app.bsky.embed.images":
            raise invalid("Record/embed must be an app.bsky.embed.images here")
        images = embed.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= 4:
            raise invalid("Record/embed/images must hold 1 to 4 images")
        for n, image in enumerate(images):
            if not isinstance(image.get("alt"), str):
                raise invalid(f"Record/embed/images/{n}/alt must be a string")
            blob = image.get("image") or {}
            found = self.blobs.get(str((blob.get("ref") or {}).get("$link")))
            if found is None:
                raise invalid(f"Record/embed/images/{n}/image: blob not found")
            mime, data = found
            if not mime.startswith("image/"):
                raise invalid(f"Record/embed/images/{n}/image: wrong mime type {mime}")
            if len(data) > self.max_image_size:
                raise invalid(f"Record/embed/images/{n}/image: blob too large ({len(data)} > {self.max_image_size})")

    def _validate(self, record: dict[str, Any]) -> None:
        def invalid(why: str) -> _Refused:
            return _Refused(400, "InvalidRecord", f"Invalid app.bsky.feed.post record: {why}")

        if record.get("$type") != POST or not isinstance(record.get("createdAt"), str):
            raise invalid("Record/$type and Record/createdAt are required")
        text = record.get("text")
        if not isinstance(text, str):
            raise invalid("Record/text must be a string")
        data = text.encode()
        if grapheme_length(text) > 300:
            raise invalid("Record/text must not be longer than 300 graphemes")
        if len(data) > 3000:
            raise invalid("Record/text must not be longer than 3000 characters")
        langs = record.get("langs") or []
        if len(langs) > 3 or not all(
            isinstance(x, str) and re.fullmatch(r"[a-zA-Z]{2,3}(-[A-Za-z0-9]+)*", x) for x in langs
        ):
            raise invalid("Record/langs must be at most 3 language tags")
        for facet in record.get("facets") or []:
            i = facet.get("index") or {}
            start, end = i.get("byteStart"), i.get("byteEnd")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(data)):
                raise invalid(f"facet index {start}..{end} outside the text ({len(data)} bytes)")
            try:
                data[start:end].decode()
            except UnicodeDecodeError:
                raise invalid(f"facet index {start}..{end} cuts a character") from None
            for feature in facet.get("features") or []:
                if feature.get("$type") == "app.bsky.richtext.facet#mention" and feature.get("did") not in self.actors:
                    raise invalid(f"mention of an unknown DID {feature.get('did')}")
        if record.get("embed") is not None:
            self._validate_embed(record["embed"])
        reply = record.get("reply")
        if reply is not None:
            for part in ("root", "parent"):
                ref = reply.get(part) or {}
                post = self.posts.get(ref.get("uri", ""))
                if post is None or post.cid != ref.get("cid"):
                    raise invalid(f"Record/reply/{part} does not point at an existing post")

    async def _get_record(self, request: web.Request) -> web.Response:
        q = request.query
        actor = next((a for a in self.actors.values() if q.get("repo") in (a.did, a.handle)), None)
        uri = f"at://{actor.did if actor else q.get('repo')}/{q.get('collection')}/{q.get('rkey')}"
        post = self.posts.get(uri)
        if post is None:
            raise _Refused(400, "RecordNotFound", f"Could not locate record: {uri}")
        return _json({"uri": post.uri, "cid": post.cid, "value": post.record})

    async def _list_notifications(self, request: web.Request) -> web.Response:
        limit = min(int(request.query.get("limit", 50)), 100)
        offset = int(request.query.get("cursor") or 0)
        newest_first = list(reversed(self.notifications))
        page = newest_first[offset : offset + limit]
        body: dict[str, Any] = {"notifications": page}
        if offset + limit < len(newest_first):
            body["cursor"] = str(offset + limit)
        return _json(body)

    async def _get_post_thread(self, request: web.Request) -> web.Response:
        post = self.posts.get(request.query.get("uri", ""))
        if post is None:
            raise _Refused(400, "NotFound", "Post not found")
        height = int(request.query.get("parentHeight", 80))

        def node(p: FakePost, up: int) -> dict[str, Any]:
            n: dict[str, Any] = {"$type": "app.bsky.feed.defs#threadViewPost", "post": p.view(), "replies": []}
            if p.parent and up > 0 and p.parent in self.posts:
                n["parent"] = node(self.posts[p.parent], up - 1)
            return n

        return _json({"thread": node(post, height)})

    async def _get_posts(self, request: web.Request) -> web.Response:
        uris = request.query.getall("uris", [])
        return _json({"posts": [self.posts[u].view() for u in uris if u in self.posts]})


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, headers=headers, content_type="application/json")
