"""A fake Mastodon instance: the REST API the real Mastodon.py talks to, on 127.0.0.1.

Written from Mastodon's public API documentation. It enforces what a real
instance enforces and the adapter must respect: the bearer token, the
length limit (grapheme clusters; a URL counts 23, ``@user@domain`` counts as
``@user``; the content warning counts too), ``Idempotency-Key`` (the same
key gives back the same status, nothing new is created), that a reply's
parent exists, and a rate limit with ``X-RateLimit-*`` headers and 429s.
Test hooks: :meth:`inject_mention`, :meth:`throttle` (answer 429s),
:attr:`lose_next_answers` (create the status, then drop the connection).
"""

from __future__ import annotations

import asyncio
import html
import itertools
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import regex
from aiohttp import web

# Counting, as Mastodon does it (written independently of the adapter's splitter on purpose).
_URL = regex.compile(r"https?://[^\s<>\"]+")
_URL_TRAILING = ".,;:!?)]}'\u2019\u201d"
_MENTION = re.compile(r"(?<![=/\w])@([A-Za-z0-9_]+(?:[A-Za-z0-9_.-]+[A-Za-z0-9_])?)(?:@([\w.-]+\w))?")
URL_LENGTH = 23


def countable_length(text: str) -> int:
    """Mastodon's length of a status text."""

    def url(m: regex.Match[str]) -> str:
        token = m.group()
        stripped = token.rstrip(_URL_TRAILING)
        return "x" * URL_LENGTH + token[len(stripped) :]

    text = _URL.sub(url, text)
    text = _MENTION.sub(lambda m: "@" + m.group(1), text)
    return len(regex.findall(r"\X", text))


@dataclass
class FakeAccount:
    """An account on (or known to) the instance."""

    id: str
    username: str
    domain: str | None = None  # None: local
    bot: bool = False

    @property
    def acct(self) -> str:
        """``user`` for a local account, ``user@domain`` for a remote one."""
        return self.username if self.domain is None else f"{self.username}@{self.domain}"

    def json(self, base: str) -> dict[str, Any]:
        """The Account entity."""
        return {
            "id": self.id,
            "username": self.username,
            "acct": self.acct,
            "display_name": self.username.title(),
            "locked": False,
            "bot": self.bot,
            "group": False,
            "discoverable": True,
            "created_at": "2014-01-01T00:00:00.000Z",
            "note": "",
            "url": f"{base}/@{self.acct}",
            "uri": f"{base}/users/{self.username}",
            "avatar": f"{base}/avatar.png",
            "avatar_static": f"{base}/avatar.png",
            "header": f"{base}/header.png",
            "header_static": f"{base}/header.png",
            "followers_count": 0,
            "following_count": 0,
            "statuses_count": 0,
            "last_status_at": None,
            "emojis": [],
            "fields": [],
        }


@dataclass
class FakeStatus:
    """A status as the instance stores it."""

    id: str
    account: FakeAccount
    text: str  # as posted (plain text), or the HTML content of an injected one
    content: str  # HTML
    visibility: str
    in_reply_to_id: str | None
    in_reply_to_account_id: str | None
    spoiler_text: str
    language: str | None
    mentions: list[FakeAccount]
    created_at: datetime
    idempotency_key: str | None = None
    #: The attachments posted with it (as ``media_attachments`` shows them).
    media: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeMastodon:
    """The instance: ``async with FakeMastodon(token) as fake`` serves ``fake.base_url``."""

    token: str
    max_characters: int = 500
    #: Requests allowed per window before 429 (Mastodon: 300 per 5 minutes).
    rate_limit: int = 300
    rate_window: float = 300.0
    me: FakeAccount = field(default_factory=lambda: FakeAccount("1", "philae"))
    statuses: dict[str, FakeStatus] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    accounts: dict[str, FakeAccount] = field(default_factory=dict)
    #: Every POST /api/v1/statuses answered 2xx (a repeat with a known key included).
    posts_answered: int = 0
    #: Statuses created by the bot, in order.
    created: list[FakeStatus] = field(default_factory=list)
    #: 429s answered.
    throttled: int = 0
    #: How many next status creations lose their answer (the status is created, the connection dropped).
    lose_next_answers: int = 0
    #: Once this many posts exist, creation requests wait for :meth:`release` (None: never):
    #: a test kills the bot while one is held. ``held`` counts the requests that waited.
    hold_from: int | None = None
    held: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    unauthorized: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: While true, every status creation answers 503 (uploads still work): a post that fails after its upload.
    refuse_posts: bool = False
    #: Media limits announced in /api/v2/instance and enforced on upload (bytes).
    image_size_limit: int = 16 * 1024 * 1024
    video_size_limit: int = 99 * 1024 * 1024
    #: How many GET /api/v1/media/:id answer 206 (still processing) before the attachment is ready.
    processing_polls: int = 1
    #: Every upload: id -> attachment (with "data" and "polls" kept on the side).
    uploads: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Idempotency-Key -> status id.
    _keys: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100_000_000_000_000_001))
    _notification_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _window: list[float] = field(default_factory=list)
    _throttle_until: float = 0.0
    _runner: web.AppRunner | None = None
    base_url: str = ""

    # -- lifecycle

    async def __aenter__(self) -> FakeMastodon:
        self.accounts[self.me.id] = self.me
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        r = app.router
        for path in ("/api/v1/instance", "/api/v1/instance/"):
            r.add_get(path, self._instance_v1)
        for path in ("/api/v2/instance", "/api/v2/instance/"):
            r.add_get(path, self._instance_v2)
        r.add_get("/api/v1/accounts/verify_credentials", self._verify)
        r.add_post("/api/v1/statuses", self._post_status)
        r.add_get("/api/v1/statuses/{id}", self._get_status)
        r.add_get("/api/v1/statuses/{id}/context", self._context)
        r.add_get("/api/v1/notifications", self._notifications)
        r.add_post("/api/v2/media", self._upload)
        r.add_get("/api/v1/media/{id}", self._get_media)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- test hooks

    def account(self, username: str, domain: str | None = "elsewhere.example", *, bot: bool = False) -> FakeAccount:
        """A (remote by default) account, made on first use."""
        for a in self.accounts.values():
            if a.username == username and a.domain == domain:
                return a
        a = FakeAccount(str(next(self._ids)), username, domain, bot)
        self.accounts[a.id] = a
        return a

    def inject_mention(
        self,
        author: FakeAccount,
        text: str,
        *,
        visibility: str = "public",
        in_reply_to_id: str | None = None,
    ) -> FakeStatus:
        """``author`` posts ``text`` (plain; ``@philae`` in it becomes a mention link) and the bot is notified."""
        parent = self.statuses.get(in_reply_to_id) if in_reply_to_id else None
        status = self._create(author, text, visibility, parent, "", None)
        if self.me in status.mentions:
            self.notifications.append(
                {
                    "id": str(next(self._notification_ids)),
                    "type": "mention",
                    "created_at": _iso(status.created_at),
                    "account_id": author.id,
                    "status_id": status.id,
                }
            )
        return status

    def release(self) -> None:
        """Let held creation requests go on (their client may be gone), and hold no more."""
        self.hold_from = None
        self._released.set()

    def throttle(self, seconds: float) -> None:
        """Answer 429 to everything for ``seconds``."""
        self._throttle_until = time.time() + seconds

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait for ``predicate`` (a hang guard, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; created: {[s.text for s in self.created]}")
            await asyncio.sleep(0.05)

    # -- internals

    def _create(
        self,
        author: FakeAccount,
        text: str,
        visibility: str,
        parent: FakeStatus | None,
        spoiler: str,
        language: str | None,
    ) -> FakeStatus:
        mentions: list[FakeAccount] = []
        for m in _MENTION.finditer(text):
            user, domain = m.group(1), m.group(2)
            for a in self.accounts.values():
                same_domain = a.domain == domain or (domain == "127.0.0.1" and a.domain is None)
                same_user = a.username.lower() == user.lower()
                if same_user and (same_domain or (domain is None and a.domain is None)) and a not in mentions:
                    mentions.append(a)
        base = self.base_url
        content = (
            "<p>"
            + _MENTION.sub(
                lambda m: (
                    f'<span class="h-card"><a href="{base}/@{m.group(1)}" class="u-url mention">'
                    f"@<span>{html.escape(m.group(1))}</span></a></span>"
                ),
                html.escape(text, quote=False).replace("\n\n", "</p><p>").replace("\n", "<br />"),
            )
            + "</p>"
        )
        status = FakeStatus(
            str(next(self._ids)),
            author,
            text,
            content,
            visibility,
            parent.id if parent else None,
            parent.account.id if parent else None,
            spoiler,
            language,
            mentions,
            datetime.now(UTC),
        )
        self.statuses[status.id] = status
        return status

    def _status_json(self, s: FakeStatus) -> dict[str, Any]:
        base = self.base_url
        return {
            "id": s.id,
            "uri": f"{base}/users/{s.account.username}/statuses/{s.id}",
            "url": f"{base}/@{s.account.acct}/{s.id}",
            "created_at": _iso(s.created_at),
            "account": s.account.json(base),
            "content": s.content,
            "visibility": s.visibility,
            "sensitive": bool(s.spoiler_text),
            "spoiler_text": s.spoiler_text,
            "in_reply_to_id": s.in_reply_to_id,
            "in_reply_to_account_id": s.in_reply_to_account_id,
            "language": s.language,
            "mentions": [
                {"id": a.id, "username": a.username, "acct": a.acct, "url": f"{base}/@{a.acct}"} for a in s.mentions
            ],
            "media_attachments": s.media,
            "tags": [],
            "emojis": [],
            "reblogs_count": 0,
            "favourites_count": 0,
            "replies_count": 0,
            "reblog": None,
            "poll": None,
            "card": None,
            "application": None,
            "edited_at": None,
        }

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        now = time.time()
        self._window = [t for t in self._window if t > now - self.rate_window]
        reset = (self._window[0] if self._window else now) + self.rate_window
        if now < self._throttle_until or len(self._window) >= self.rate_limit:
            self.throttled += 1
            until = max(self._throttle_until, reset if len(self._window) >= self.rate_limit else 0)
            return _json({"error": "Too many requests"}, 429, self._rate_headers(0, until))
        self._window.append(now)
        private = request.path.startswith("/api/v1/") and "instance" not in request.path
        if private and request.headers.get("Authorization") != f"Bearer {self.token}":
            self.unauthorized += 1
            return _json({"error": "The access token is invalid"}, 401)
        response = await handler(request)
        response.headers.update(self._rate_headers(self.rate_limit - len(self._window), reset))
        return response

    def _rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": datetime.fromtimestamp(reset, UTC).isoformat(timespec="milliseconds"),
            "Date": format_datetime(datetime.now(UTC), usegmt=True),
        }

    async def _instance_v1(self, request: web.Request) -> web.Response:
        return _json(
            {
                "uri": "127.0.0.1",
                "title": "Fake",
                "version": "4.3.0",
                "api_versions": {"mastodon": 2},
                "configuration": {"statuses": {"max_characters": self.max_characters}},
            }
        )

    async def _instance_v2(self, request: web.Request) -> web.Response:
        return _json(
            {
                "domain": "127.0.0.1",
                "title": "Fake",
                "version": "4.3.0",
                "api_versions": {"mastodon": 2},
                "configuration": {
                    "urls": {},
                    "statuses": {
                        "max_characters": self.max_characters,
                        "max_media_attachments": 4,
                        "characters_reserved_per_url": URL_LENGTH,
                    },
                    "media_attachments": {
                        "supported_mime_types": [
                            "image/png",
                            "image/jpeg",
                            "image/gif",
                            "image/webp",
                            "audio/mpeg",
                            "audio/ogg",
                            "audio/wav",
                            "audio/x-wav",
                            "video/mp4",
                            "video/webm",
                        ],
                        "image_size_limit": self.image_size_limit,
                        "video_size_limit": self.video_size_limit,
                    },
                },
            }
        )

    async def _verify(self, request: web.Request) -> web.Response:
        return _json(self.me.json(self.base_url))

    async def _post_status(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_posts:
            return _json({"error": "Service Unavailable"}, 503)
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._keys:  # before validation, as Mastodon does
            self.posts_answered += 1
            return _json(self._status_json(self.statuses[self._keys[key]]))
        if request.content_type == "application/json":
            form: dict[str, Any] = await request.json()
            media_ids = [str(i) for i in form.get("media_ids") or []]
        else:
            posted = await request.post()
            form = dict(posted)
            media_ids = [str(i) for i in posted.getall("media_ids[]", [])]
        if len(media_ids) > 4:
            return _json({"error": "Validation failed: Media attachments are limited to 4"}, 422)
        attached = [self.uploads.get(i) for i in media_ids]
        if any(a is None for a in attached):
            return _json({"error": "Record not found"}, 404)
        if any(a is not None and a["url"] is None for a in attached):
            return _json({"error": "Validation failed: Media is still being processed"}, 422)
        if self.hold_from is not None and len(self.created) >= self.hold_from:
            self.held += 1
            await self._released.wait()  # the request is read: it goes on even if its client dies
        text = str(form.get("status") or "")
        spoiler = str(form.get("spoiler_text") or "")
        visibility = str(form.get("visibility") or "public")
        if visibility not in ("public", "unlisted", "private", "direct"):
            return _json({"error": "Validation failed: Visibility is not included in the list"}, 422)
        if not text.strip() and not media_ids:
            return _json({"error": "Validation failed: Text can't be blank"}, 422)
        length = countable_length(spoiler) + countable_length(text)
        if length > self.max_characters:
            return _json({"error": f"Validation failed: Text character limit of {self.max_characters} exceeded"}, 422)
        parent = None
        if form.get("in_reply_to_id"):
            parent = self.statuses.get(str(form["in_reply_to_id"]))
            if parent is None:
                return _json({"error": "Record not found"}, 404)
        status = self._create(self.me, text, visibility, parent, spoiler, form.get("language") or None)
        status.idempotency_key = key
        status.media = [_public(a) for a in attached if a is not None]
        self.created.append(status)
        if key is not None:
            self._keys[key] = status.id
        if self.lose_next_answers > 0:
            self.lose_next_answers -= 1
            assert request.transport is not None
            request.transport.close()  # created, but the client never hears of it
            return web.Response()
        self.posts_answered += 1
        return _json(self._status_json(status))

    async def _upload(self, request: web.Request) -> web.Response:
        """POST /api/v2/media: multipart ``file`` and ``description``; 202 with ``url: null`` while processing."""
        if request.content_type != "multipart/form-data":
            return _json({"error": "Validation failed: File can't be blank"}, 422)
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _json({"error": "Validation failed: File can't be blank"}, 422)
        data = upload.file.read()
        kind = upload.content_type.split("/", 1)[0]
        if kind not in ("image", "audio", "video"):
            return _json({"error": f"Validation failed: File content type {upload.content_type} is invalid"}, 422)
        limit = self.image_size_limit if kind == "image" else self.video_size_limit
        if len(data) > limit:
            return _json({"error": f"Validation failed: File file size must be less than {limit} Bytes"}, 422)
        media_id = str(next(self._ids))
        description = form.get("description")
        self.uploads[media_id] = {
            "id": media_id,
            "type": "image" if kind == "image" else kind,
            "url": None,
            "preview_url": None,
            "description": description if isinstance(description, str) else None,
            "blurhash": None,
            "meta": {},
            "data": data,
            "filename": upload.filename,
            "content_type": upload.content_type,
            "polls": 0,
        }
        return _json(_public(self.uploads[media_id]), 202)

    async def _get_media(self, request: web.Request) -> web.Response:
        attachment = self.uploads.get(request.match_info["id"])
        if attachment is None:
            return _json({"error": "Record not found"}, 404)
        attachment["polls"] += 1
        if attachment["polls"] <= self.processing_polls:
            return _json(_public(attachment), 206)
        attachment["url"] = attachment["preview_url"] = f"{self.base_url}/system/media/{attachment['id']}"
        return _json(_public(attachment))

    async def _get_status(self, request: web.Request) -> web.Response:
        status = self.statuses.get(request.match_info["id"])
        if status is None:
            return _json({"error": "Record not found"}, 404)
        return _json(self._status_json(status))

    async def _context(self, request: web.Request) -> web.Response:
        status = self.statuses.get(request.match_info["id"])
        if status is None:
            return _json({"error": "Record not found"}, 404)
        ancestors = []
        parent = self.statuses.get(status.in_reply_to_id or "")
        while parent is not None:
            ancestors.append(parent)
            parent = self.statuses.get(parent.in_reply_to_id or "")
        descendants = [s for s in self.statuses.values() if s.in_reply_to_id == status.id]
        return _json(
            {
                "ancestors": [self._status_json(s) for s in reversed(ancestors)],
                "descendants": [self._status_json(s) for s in descendants],
            }
        )

    async def _notifications(self, request: web.Request) -> web.Response:
        q = request.query
        types = q.getall("types[]", []) + q.getall("types", [])
        limit = min(int(q.get("limit", 40)), 80)
        items = [n for n in self.notifications if not types or n["type"] in types]
        since = int(q.get("since_id") or 0)
        min_id = int(q.get("min_id") or 0)
        max_id = int(q.get("max_id") or 0)
        items = [n for n in items if int(n["id"]) > max(since, min_id) and (not max_id or int(n["id"]) < max_id)]
        items.sort(key=lambda n: int(n["id"]), reverse=True)
        # min_id pages forward from it (the oldest after it, min_id=0 too); since_id and max_id give the newest.
        page = items[-limit:] if q.get("min_id") else items[:limit]
        body = []
        for n in page:
            status = self.statuses[n["status_id"]]
            body.append(
                {
                    "id": n["id"],
                    "type": n["type"],
                    "created_at": n["created_at"],
                    "account": status.account.json(self.base_url),
                    "status": self._status_json(status),
                }
            )
        headers = {}
        if page:
            url = f"{self.base_url}/api/v1/notifications"
            headers["Link"] = f'<{url}?max_id={page[-1]["id"]}>; rel="next", <{url}?min_id={page[0]["id"]}>; rel="prev"'
        return _json(body, headers=headers)


def _public(attachment: dict[str, Any]) -> dict[str, Any]:
    """An attachment as the API shows it (without the bytes kept for tests)."""
    return {k: v for k, v in attachment.items() if k not in ("data", "filename", "content_type", "polls")}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)
