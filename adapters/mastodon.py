"""Mastodon, through Mastodon.py: mentions polled from notifications, statuses posted over REST.

One adapter serves one persona with one account's access token. Options in bot.toml::

    [[adapters]]
    type = "mastodon"
    persona = "philae"
    base_url = "https://mastodon.example"   # the instance
    token_env = "PHILAE_MASTODON_TOKEN"     # the token itself only ever lives in the environment
    # visibility = "public"                 # of event posts: public, unlisted, private or direct
    # spoiler_text = "space news"           # a content warning on every post
    admins = ["flight@mastodon.example"]    # accounts (acct) that may use /emit and /reload
    # reply_to_bots = false                 # answer accounts flagged as bots
    # max_replies_per_thread = 5            # the persona's replies in one thread, at most

Event posts go to the account's timeline (the chat ``timeline``). A mention
is answered in its thread with the visibility of the post it answers (never
wider than ``visibility``; a direct message stays direct), starting with the
author's ``@acct`` — the only mention the adapter ever writes. Persona
templates render in the ``social`` dialect, where user-derived text cannot
mention anyone. Text longer than the instance's limit becomes a thread, each
piece answering the one before; every status carries an ``Idempotency-Key``
derived from its outbox key. Rate limits (300 requests per 5 minutes by
default) are paced by the dispatcher; a 429 pauses it until
``X-RateLimit-Reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from mastodon import (
    Mastodon,
    MastodonAPIError,
    MastodonError,
    MastodonNetworkError,
    MastodonNotFoundError,
    MastodonRatelimitError,
    MastodonServerError,
    MastodonUnauthorizedError,
)

from personae.delivery.split import mastodon_length
from personae.engine.messages import Media
from personae.language.media import PLATFORM_MEDIA, PlatformMedia, kind_of

from .base import (
    Adapter,
    AdapterConfig,
    Delivery,
    DeliveryError,
    IncomingHandler,
    Limits,
    OptionError,
    Receipt,
    number_option,
    read_media,
    whole_option,
)

log = logging.getLogger("personae.mastodon")

#: The chat of the account's own timeline, where event posts go.
TIMELINE = "timeline"
#: Narrowest first: a reply is never more visible than the post it answers.
VISIBILITIES = ("direct", "private", "unlisted", "public")
_LEADING_MENTIONS = re.compile(r"^(?:\s*@[\w.-]+(?:@[\w.-]+)?)+\s*")


def idempotency_key(key: str) -> str:
    """The Idempotency-Key of the status for outbox ``key``: Mastodon creates it once."""
    return "personae-" + hashlib.sha256(key.encode()).hexdigest()[:48]


class _PlainText(HTMLParser):
    """Status HTML as the text a reader sees: paragraphs and line breaks kept, tags gone."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")
        elif tag == "span" and ("class", "invisible") in attrs:
            self._hidden += 1  # the parts of a long link Mastodon elides
        elif tag == "span" and self._hidden:
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(content: str) -> str:
    """Plain text of a status's HTML ``content``."""
    parser = _PlainText()
    parser.feed(content)
    parser.close()
    return "".join(parser.parts).strip()


def strip_leading_mentions(text: str) -> str:
    """``text`` without the ``@bot @someone`` a reply starts with, so rules see what was said."""
    return _LEADING_MENTIONS.sub("", text, count=1)


def _narrowest(a: str, b: str) -> str:
    ia = VISIBILITIES.index(a) if a in VISIBILITIES else 0
    ib = VISIBILITIES.index(b) if b in VISIBILITIES else 0
    return VISIBILITIES[min(ia, ib)]


class MastodonAdapter(Adapter):
    """A Mastodon account speaking as one persona."""

    platform = "mastodon"
    # Every status carries an Idempotency-Key: a repeat after a crash creates nothing new.
    idempotent = True
    option_names = frozenset(
        {
            "token_env",
            "base_url",
            "visibility",
            "spoiler_text",
            "reply_to_bots",
            "max_replies_per_thread",
            "poll_interval",
            "requests_per_5min",
            "concurrency",
            "request_timeout",
            "language",
            "display_name",
        }
    )

    def __init__(self, config: AdapterConfig, token: str) -> None:
        super().__init__(config)
        opts = dict(config.options)
        self._token = token
        self.base_url = str(opts.get("base_url", "")).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise OptionError("base_url", "base_url must be the instance's URL, e.g. 'https://mastodon.social'")
        self.visibility = str(opts.get("visibility", "public"))
        if self.visibility not in VISIBILITIES:
            raise OptionError(
                "visibility", f"visibility must be one of {', '.join(VISIBILITIES)}, not '{self.visibility}'"
            )
        self.spoiler_text = str(opts.get("spoiler_text", "")) or None
        self.reply_to_bots = bool(opts.get("reply_to_bots", False))
        self.max_replies_per_thread = whole_option(opts, "max_replies_per_thread", 5)
        self.poll_interval = number_option(opts, "poll_interval", 5)
        self.language = str(opts["language"]) if "language" in opts else None
        self.request_timeout = number_option(opts, "request_timeout", 30)
        requests = number_option(opts, "requests_per_5min", 300)
        self._concurrency = whole_option(opts, "concurrency", 2)
        # Polling spends the same budget as posting: posts get what one poll every
        # poll_interval leaves (80 % at the defaults), and never less than half of it.
        budget = requests / 300
        self._rate = max(budget - 1 / self.poll_interval, budget / 2, 0.01)
        self.limits = self._limits(500)
        #: Largest file per kind: the instance's own once started (``/api/v2/instance``).
        self.media_limits = PLATFORM_MEDIA["mastodon"]
        self._clients: list[Mastodon] = []
        # One client (one HTTP session) for posting, one for polling: they run in different threads.
        self._sender = self._client()
        self._reader = self._client()
        self._me_id: str | None = None
        self.acct: str | None = None
        self._poller: asyncio.Task[None] | None = None
        self._last_notification: str | None = None
        #: Status id -> (visibility, author acct) of posts recently seen or sent (bounded).
        self._statuses: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def _limits(self, max_characters: int) -> Limits:
        cw = mastodon_length(self.spoiler_text) if self.spoiler_text else 0  # the warning counts too
        return Limits(
            max_length=max(max_characters - cw, 64),
            dialect="social",
            measure="mastodon",
            global_rate=self._rate,
            rate_window=300.0,  # requests per 5 minutes
            concurrency=self._concurrency,
        )

    @classmethod
    def create(cls, config: AdapterConfig, environ: Mapping[str, str]) -> MastodonAdapter:
        """Read the access token from the environment."""
        return cls(config, cls.token_from(config, environ))

    def secrets(self) -> tuple[str, ...]:
        """The access token."""
        return (self._token,)

    @property
    def channels(self) -> tuple[str, ...]:
        """Broadcasts go to the account's timeline."""
        return (TIMELINE,)

    def reserve(self, chat: str) -> int:
        """Every piece to an account starts with ``@acct``; timeline posts mention nobody."""
        return 0 if chat == TIMELINE else mastodon_length(f"@{chat} ")

    def _client(self) -> Mastodon:
        client = Mastodon(
            access_token=self._token,
            api_base_url=self.base_url,
            ratelimit_method="throw",  # the dispatcher owns waiting
            request_timeout=self.request_timeout,
            version_check_mode="none",
        )
        self._clients.append(client)
        return client

    # -- lifecycle

    async def start(self, on_message: IncomingHandler) -> None:
        """Check the token, read the instance's limits, and poll mentions."""
        try:
            me = await asyncio.to_thread(self._reader.account_verify_credentials)
        except MastodonUnauthorizedError:
            raise RuntimeError("Mastodon refused the access token (401)") from None
        except MastodonError as exc:
            raise RuntimeError(f"cannot reach {self.base_url}: {_describe(exc)}") from None
        self._me_id, self.acct = str(me["id"]), str(me["acct"])
        info = await asyncio.to_thread(self._instance)
        self.limits = self._limits(_max_characters(info))
        self.media_limits = instance_media_limits(info)
        # Mentions from before this start are not answered: a restart must not answer them twice.
        newest = await asyncio.to_thread(self._reader.notifications, types=["mention"], limit=1)
        self._last_notification = str(newest[0]["id"]) if newest else "0"
        self._poller = asyncio.create_task(self._poll(on_message), name=f"mastodon-{self.name}")
        log.info("mastodon adapter %s started as @%s (%d characters)", self.name, self.acct, self.limits.max_length)

    def _instance(self) -> Any:
        for fetch in (self._reader.instance_v2, self._reader.instance_v1):
            try:
                return fetch()
            except MastodonError:
                continue
        return {}

    async def stop(self) -> None:
        """Stop polling."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
            self._poller = None
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.session.close()

    # -- mentions in

    async def _poll(self, on_message: IncomingHandler) -> None:
        while True:
            wait = self.poll_interval
            try:
                for notification in await asyncio.to_thread(self._new_mentions):
                    incoming = await asyncio.to_thread(self.to_incoming, notification)
                    if incoming is None:
                        continue
                    try:
                        await on_message(incoming)
                    except Exception:  # one bad mention must not stop the bot
                        log.exception("mastodon %s failed to handle notification %s", self.name, notification["id"])
            except asyncio.CancelledError:
                raise
            except MastodonRatelimitError:
                wait = max(wait, _seconds_until(self._reader.ratelimit_reset))
                log.warning("mastodon %s: rate limited while polling, waiting %.0fs", self.name, wait)
            except Exception as exc:
                log.warning("mastodon %s polling error: %s", self.name, _describe(exc))
            await asyncio.sleep(wait)

    def _new_mentions(self) -> list[Any]:
        """Mention notifications after the last one seen, oldest first (every page)."""
        found: list[Any] = []
        while True:
            page = self._reader.notifications(types=["mention"], min_id=self._last_notification, limit=40)
            if not page:
                return found
            page = sorted(page, key=lambda n: int(n["id"]))
            found.extend(n for n in page if int(n["id"]) > int(self._last_notification or 0))
            self._last_notification = str(page[-1]["id"])
            if len(page) < 40:
                return found

    def to_incoming(self, notification: Any) -> Any:
        """The Incoming for a mention notification (blocking: may read the thread)."""
        from personae.engine.messages import Chat, Incoming, User

        status = notification.get("status")
        if notification.get("type") != "mention" or not status:
            return None
        account = status["account"]
        if str(account["id"]) == self._me_id:
            return None
        acct = str(account["acct"])
        visibility = str(status.get("visibility") or "public")
        self._remember(str(status["id"]), visibility, acct)
        text = strip_leading_mentions(html_to_text(str(status.get("content") or "")))
        kind = "text"
        if account.get("bot") and not self.reply_to_bots:
            kind = "bot"
        elif status.get("in_reply_to_id") is not None and self._thread_full(str(status["id"])):
            kind = "thread cap"
        admins = {str(a).lstrip("@").lower() for a in self.config.admins}
        created = status.get("created_at")
        return Incoming(
            self.persona,
            self.platform,
            Chat(acct, "private" if visibility == "direct" else "thread"),
            User(
                acct,
                str(account.get("display_name") or account.get("username") or acct),
                acct,
                acct.lower() in admins or str(account["id"]) in admins,
            ),
            text,
            message_id=str(status["id"]),
            bot_username=self.acct,
            received_at=created.astimezone(UTC) if isinstance(created, datetime) else datetime.now(UTC),
            adapter=self.name,
            kind=kind,
        )

    def _thread_full(self, status_id: str) -> bool:
        """Whether the persona already answered ``max_replies_per_thread`` times above this post."""
        try:
            context = self._reader.status_context(status_id)
        except MastodonError as exc:
            log.warning("mastodon %s: cannot read the thread of %s: %s", self.name, status_id, _describe(exc))
            return False
        # A reply is one of our posts answering someone else (the pieces of a long one answer us).
        replies = sum(
            1
            for s in context["ancestors"]
            if str(s["account"]["id"]) == self._me_id and str(s.get("in_reply_to_account_id")) != self._me_id
        )
        return replies >= self.max_replies_per_thread

    def _remember(self, status_id: str, visibility: str, acct: str) -> None:
        self._statuses[status_id] = (visibility, acct)
        self._statuses.move_to_end(status_id)
        while len(self._statuses) > 10_000:
            self._statuses.popitem(last=False)

    # -- statuses out

    async def send(self, delivery: Delivery) -> Receipt:
        """Post one status (one piece of a thread); errors become :class:`DeliveryError`."""
        try:
            media_ids = await upload_media(self._sender, delivery.media, self.media_limits)
            return await asyncio.to_thread(self._post, delivery, media_ids)
        except MastodonRatelimitError:
            wait = _seconds_until(self._sender.ratelimit_reset)
            raise DeliveryError(
                f"Mastodon rate limit: retry after {wait:.0f}s", retry_after=wait, scope="global"
            ) from None
        except MastodonUnauthorizedError:
            raise DeliveryError("Mastodon refused the access token (401)", permanent=True) from None
        except MastodonNotFoundError as exc:
            raise DeliveryError(
                f"not found (the post answered was deleted?): {_describe(exc)}", permanent=True
            ) from None
        except (MastodonNetworkError, MastodonServerError) as exc:
            raise DeliveryError(f"network error: {_describe(exc)}") from None
        except MastodonAPIError as exc:
            status = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
            raise DeliveryError(f"Mastodon refused the post: {_describe(exc)}", permanent=status < 500) from None
        except MastodonError as exc:
            raise DeliveryError(f"Mastodon error: {_describe(exc)}") from None

    def _post(self, delivery: Delivery, media_ids: list[str] | None = None) -> Receipt:
        text, visibility, parent = delivery.text, self.visibility, None
        if delivery.part > 0:
            parent = delivery.previous  # a thread continues under the piece already posted
            if parent is None:
                log.warning(
                    "mastodon %s: piece %d of %s has no piece before it", self.name, delivery.part, delivery.key
                )
        elif delivery.reply_to:
            parent = delivery.reply_to
        if delivery.chat != TIMELINE:
            text = f"@{delivery.chat} {text}"  # the only mention ever written: whom the post is for
            visibility = "direct"
            if parent is not None:
                visibility = _narrowest(self._visibility_of(parent), self.visibility)
        elif parent is not None:
            visibility = _narrowest(self._visibility_of(parent), self.visibility)
        status = self._sender.status_post(
            text,
            in_reply_to_id=parent,
            visibility=visibility,
            spoiler_text=self.spoiler_text,
            language=language_tag(self.language or self.locale),
            idempotency_key=idempotency_key(delivery.key) if delivery.key else None,
            media_ids=media_ids or None,
        )
        status_id = str(status["id"])
        self._remember(status_id, str(status.get("visibility") or visibility), self.acct or "")
        return Receipt((status_id,))

    def _visibility_of(self, status_id: str) -> str:
        known = self._statuses.get(status_id)
        if known is not None:
            return known[0]
        status = self._sender.status(status_id)  # after a restart: ask the instance
        self._remember(status_id, str(status["visibility"]), str(status["account"]["acct"]))
        return str(status["visibility"])


def language_tag(locale: str | None) -> str | None:
    """The ISO 639 code Mastodon tags a status with (``en`` of ``en_GB``), or ``None``."""
    if not locale:
        return None
    return re.split(r"[-_]", locale, maxsplit=1)[0].lower() or None


def _max_characters(info: Any) -> int:
    try:
        return int(info["configuration"]["statuses"]["max_characters"])
    except (KeyError, TypeError, ValueError):
        return 500


def instance_media_limits(info: Any) -> PlatformMedia:
    """The instance's media limits (``configuration.media_attachments``), stock ones where it says nothing."""
    stock = PLATFORM_MEDIA["mastodon"]
    try:
        conf = info["configuration"]
    except (KeyError, TypeError):
        return stock
    media = conf.get("media_attachments") or {}
    per_post = (conf.get("statuses") or {}).get("max_media_attachments") or stock.per_post
    image = media.get("image_size_limit") or stock.image or 0
    video = media.get("video_size_limit") or stock.video or 0
    # Mastodon counts audio against the video limit.
    return replace(stock, image=int(image), audio=int(video), video=int(video), per_post=int(per_post))


#: Seconds to wait for the instance to process an upload before the delivery is retried.
PROCESSING_TIMEOUT = 60.0


async def upload_media(client: Mastodon, media: tuple[Media, ...], limits: PlatformMedia) -> list[str]:
    """Upload each file with its alt text as ``description``; wait until the instance has processed it.

    A retry after a crash uploads again (an unattached upload is harmless: the
    instance deletes it), but the status keeps its Idempotency-Key, so it is never posted twice.
    """
    ids = []
    for m in media:
        data = await read_media(m, limits.limit(kind_of(m.mime)))
        attachment = await asyncio.to_thread(
            client.media_post, io.BytesIO(data), m.mime, description=m.alt or None, file_name=m.name
        )
        deadline, pause = time.monotonic() + PROCESSING_TIMEOUT, 0.1
        while attachment.get("url") is None:  # 202: still processing
            if time.monotonic() > deadline:
                raise DeliveryError(f"{m.name}: the instance is still processing it")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
            attachment = await asyncio.to_thread(client.media, attachment["id"])
        ids.append(str(attachment["id"]))
    return ids


def _seconds_until(reset: float | None) -> float:
    """Seconds to wait for a rate limit reset Mastodon.py read from ``X-RateLimit-Reset``."""
    if reset is None:
        return 60.0  # no header: wait a while rather than hammer the instance
    return max(1.0, float(reset) - time.time())


def _describe(exc: BaseException) -> str:
    """One line for a Mastodon.py error: ``(message, status, reason, error text)``."""
    args = [str(a) for a in exc.args if a not in (None, "")]
    return " ".join(args[1:]) if len(args) > 1 and args[0] == "Mastodon API returned error" else " ".join(args)
