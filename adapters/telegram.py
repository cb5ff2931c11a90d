"""Telegram, through python-telegram-bot: long polling by default, webhook optional.

One adapter serves one persona with one bot token. Options in bot.toml::

    [[adapters]]
    type = "telegram"
    persona = "philae"
    token_env = "PHILAE_TELEGRAM_TOKEN"   # the token itself only ever lives in the environment
    admins = [123456789]                  # may use /emit and /reload
    channels = [-1001234567890]           # chats that get every broadcast
    # parse_mode = "html"                 # default: plain text
    # base_url = "https://my-bot-api.example/bot"   # a self-hosted Bot API server
    # mode = "webhook"; webhook_url = "https://bot.example/tg"; listen = "0.0.0.0"; port = 8443
    # secret_token_env = "PHILAE_WEBHOOK_SECRET"   # else a random secret per start

Flow control (Telegram's published limits: ~30 messages/s per bot, 1/s per
chat, 20/minute per group) is the dispatcher's job; this adapter only maps
each API outcome to a :class:`DeliveryError` it can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from telegram import (
    Bot,
    InputFile,
    InputMediaAudio,
    InputMediaPhoto,
    InputMediaVideo,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import Updater
from telegram.request import HTTPXRequest

from personae.engine.messages import Media
from personae.language.media import PLATFORM_MEDIA, kind_of

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

log = logging.getLogger("personae.telegram")

#: Seconds :meth:`TelegramAdapter.stop_receiving` gives updates already fetched to be handled.
HANDLE_FETCHED_TIMEOUT = 5.0

#: Longest caption of a photo, audio or video, in UTF-16 units.
CAPTION_LENGTH = 1024

ALLOWED_UPDATES = ["message", "edited_message", "channel_post", "my_chat_member"]


class TelegramAdapter(Adapter):
    """A Telegram bot speaking as one persona."""

    platform = "telegram"
    option_names = frozenset(
        {
            "token_env",
            "base_url",
            "base_file_url",
            "parse_mode",
            "mode",
            "listen",
            "port",
            "url_path",
            "webhook_url",
            "secret_token_env",
            "poll_timeout",
            "global_rate",
            "per_chat_rate",
            "group_per_minute",
            "concurrency",
            "display_name",
            "read_timeout",
        }
    )

    def __init__(self, config: AdapterConfig, token: str, webhook_secret: str | None = None) -> None:
        super().__init__(config)
        opts = dict(config.options)
        self._token = token
        self.parse_mode = ParseMode.HTML if str(opts.get("parse_mode", "")).lower() == "html" else None
        self.limits = Limits(
            max_length=4096,
            dialect="html" if self.parse_mode else "plain",
            global_rate=number_option(opts, "global_rate", 30),
            per_chat_rate=number_option(opts, "per_chat_rate", 1),
            group_per_minute=number_option(opts, "group_per_minute", 20),
            concurrency=whole_option(opts, "concurrency", 8),
            caption_length=CAPTION_LENGTH,
        )
        self.mode = str(opts.get("mode", "polling"))
        if self.mode not in ("polling", "webhook"):
            raise OptionError("mode", f"mode must be 'polling' or 'webhook', not '{self.mode}'")
        self.poll_timeout = number_option(opts, "poll_timeout", 30, zero=True)
        self.webhook_url = str(opts.get("webhook_url", ""))
        if self.mode == "webhook" and not self.webhook_url:
            raise OptionError("webhook_url", "webhook mode needs webhook_url (the public https URL Telegram posts to)")
        self.listen = str(opts.get("listen", "127.0.0.1"))
        self.port = whole_option(opts, "port", 8443)
        self.url_path = "/" + str(opts.get("url_path", "telegram")).strip("/")
        self._secret = webhook_secret or secrets.token_urlsafe(32)
        timeout = number_option(opts, "read_timeout", 10)
        # One pool slot per concurrent send, plus headroom; PTB's default pool has one.
        request = HTTPXRequest(connection_pool_size=self.limits.concurrency + 2, read_timeout=timeout)
        polling = HTTPXRequest(connection_pool_size=1, read_timeout=self.poll_timeout + timeout)
        base_url = str(opts.get("base_url", "https://api.telegram.org/bot"))
        base_file_url = str(opts.get("base_file_url", base_url.replace("/bot", "/file/bot")))
        self._client_options: dict[str, Any] = {
            "base_url": base_url,
            "base_file_url": base_file_url,
            "request": request,
            "get_updates_request": polling,
        }
        self._bot: Bot | None = None
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._updater: Updater | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._site: Any = None
        self._runner: Any = None
        self.refused_webhook_requests = 0

    @classmethod
    def create(cls, config: AdapterConfig, environ: Mapping[str, str]) -> TelegramAdapter:
        """Read the token (and the webhook secret, if named) from the environment."""
        token = cls.token_from(config, environ)
        secret = None
        if config.options.get("secret_token_env"):
            secret = cls.token_from(config, environ, "secret_token_env")
        return cls(config, token, secret)

    def secrets(self) -> tuple[str, ...]:
        """The token and the webhook secret."""
        return (self._token, self._secret)

    def is_group(self, chat: str) -> bool:
        """Groups and channels have negative ids (or @names)."""
        return chat.startswith("-") or chat.startswith("@")

    @property
    def bot(self) -> Bot:
        """The python-telegram-bot client, made on first use.

        Not in ``__init__``: the client logs its URL, token included, as it is
        made, and the runtime installs log redaction between constructing
        adapters and starting them.
        """
        if self._bot is None:
            self._bot = Bot(self._token, **self._client_options)
        return self._bot

    @property
    def username(self) -> str | None:
        """The bot's @username (known once started)."""
        if self._bot is None:
            return None
        try:
            return self._bot.username
        except RuntimeError:
            return None

    # -- lifecycle

    async def start(self, on_message: IncomingHandler) -> None:
        """Log in (getMe), then poll or serve the webhook.

        Raises :class:`PlatformUnreachable` when Telegram cannot be reached or
        answers with a server error (the runtime retries), ``RuntimeError`` when
        it refuses the token.
        """
        try:
            await self._start(on_message)
        except InvalidToken:
            raise RuntimeError("Telegram refused the token (InvalidToken)") from None
        except RetryAfter as exc:
            wait = _retry_seconds(exc)
            raise PlatformUnreachable(f"cannot reach Telegram (flood control: retry after {wait:g}s)") from None
        except NetworkError as exc:  # connection refused, timeouts, 5xx (PTB maps them all here)
            raise PlatformUnreachable(f"cannot reach Telegram ({exc.message})") from None
        except TelegramError as exc:
            raise RuntimeError(f"Telegram refused to start the bot: {exc.message}") from None
        log.info("telegram adapter %s started as @%s (%s)", self.name, self.username, self.mode)

    async def _start(self, on_message: IncomingHandler) -> None:
        await self.bot.initialize()
        self._consumer = asyncio.create_task(self._consume(on_message), name=f"telegram-{self.name}")
        if self.mode == "webhook":
            await self._start_webhook()
        else:
            self._updater = Updater(bot=self.bot, update_queue=self._queue)
            await self._updater.initialize()
            await self._updater.start_polling(
                timeout=int(self.poll_timeout),
                allowed_updates=ALLOWED_UPDATES,
                error_callback=self._polling_error,
            )

    def _polling_error(self, error: TelegramError) -> None:
        # PTB keeps polling with its own backoff; the message may carry the URL, hence the token.
        log.warning("telegram %s polling error: %s", self.name, error)

    async def stop_receiving(self) -> None:
        """Stop polling (or the webhook server), then handle the updates already fetched.

        Those are confirmed to Telegram by the polling's last call, so they must
        not be dropped; the client stays open for the runtime's drain.
        """
        if self._updater is not None:
            with contextlib.suppress(Exception):
                if self._updater.running:
                    await self._updater.stop()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
        if self._consumer is not None and not self._consumer.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), HANDLE_FETCHED_TIMEOUT)
        await self._stop_consumer()

    async def stop(self) -> None:
        """Stop receiving, then close the client."""
        await self.stop_receiving()
        if self._updater is not None:
            with contextlib.suppress(Exception):
                await self._updater.shutdown()
            self._updater = None
        if self._bot is not None:
            with contextlib.suppress(Exception):
                await self._bot.shutdown()

    async def _stop_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._consumer
            self._consumer = None

    # -- webhook

    async def _start_webhook(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_post(self.url_path, self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.listen, self.port)
        await self._site.start()
        await self.bot.set_webhook(url=self.webhook_url, secret_token=self._secret, allowed_updates=ALLOWED_UPDATES)

    async def _webhook(self, request: Any) -> Any:
        from aiohttp import web

        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            self.refused_webhook_requests += 1
            why = "no" if not given else "a wrong"
            log.warning(
                "telegram %s refused a webhook request from %s: %s secret token", self.name, request.remote, why
            )
            return web.Response(status=403, text="forbidden")
        try:
            data = json.loads(await request.text())
            update = Update.de_json(data, self.bot)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("telegram %s got an unreadable webhook body: %s", self.name, exc)
            return web.Response(status=400, text="bad update")
        if update is not None:
            await self._queue.put(update)
        return web.Response(text="ok")

    # -- updates in

    async def _consume(self, on_message: IncomingHandler) -> None:
        while True:
            update = await self._queue.get()
            try:
                await self._handle(update, on_message)
            finally:
                self._queue.task_done()  # stop_receiving waits for the queue to be handled

    async def _handle(self, update: object, on_message: IncomingHandler) -> None:
        if not isinstance(update, Update):
            return
        incoming = self.to_incoming(update)
        if incoming is None:
            return
        try:
            await on_message(incoming)
        except Exception:  # one bad update must not stop the bot
            log.exception("telegram %s failed to handle update %s", self.name, update.update_id)

    def to_incoming(self, update: Update) -> Any:
        """Map an update to an :class:`Incoming` (non-text updates get a ``kind`` and are logged, not answered)."""
        return read_update(update, self)

    # -- messages out

    async def send(self, delivery: Delivery) -> Receipt:
        """sendMessage, as a reply when ``reply_to`` is set; errors become :class:`DeliveryError`."""
        chat: int | str = int(delivery.chat) if delivery.chat.lstrip("-").isdigit() else delivery.chat
        kwargs: dict[str, Any] = {"chat_id": chat, "text": delivery.text}
        if self.parse_mode:
            kwargs["parse_mode"] = self.parse_mode
        if delivery.reply_to and delivery.reply_to.isdigit():
            kwargs["reply_parameters"] = ReplyParameters(int(delivery.reply_to), allow_sending_without_reply=True)
        try:
            if delivery.media:
                message = await send_media(self.bot, kwargs, delivery.media)
            else:
                message = await self.bot.send_message(**kwargs)
        except RetryAfter as exc:
            seconds = _retry_seconds(exc)
            # Telegram does not say which limit was hit; like PTB's own rate limiter, pause the
            # whole bot: per-chat and per-group pacing are already ours, so a 429 means the bot's
            # overall rate is too high (another process may share the token).
            raise DeliveryError(
                f"Telegram flood control: retry after {seconds:g}s", retry_after=seconds, scope="global"
            ) from None
        except Forbidden as exc:
            raise DeliveryError(f"Forbidden: {exc.message}", chat_gone=True) from None
        except ChatMigrated as exc:
            raise DeliveryError(f"chat migrated to {exc.new_chat_id}", moved_to=str(exc.new_chat_id)) from None
        except BadRequest as exc:
            text = exc.message.lower()
            if "chat not found" in text or "bot was kicked" in text:
                raise DeliveryError(f"Bad Request: {exc.message}", chat_gone=True) from None
            raise DeliveryError(f"Bad Request: {exc.message}", permanent=True) from None
        except InvalidToken:
            raise DeliveryError("Telegram refused the token (InvalidToken)", permanent=True) from None
        except TimedOut as exc:
            raise DeliveryError(f"timed out: {exc.message}") from None
        except NetworkError as exc:
            raise DeliveryError(f"network error: {exc.message}") from None
        return Receipt((str(message.message_id),))


#: The Bot API method and its file parameter, per kind of media.
_MEDIA_METHODS = {"image": ("send_photo", "photo"), "audio": ("send_audio", "audio"), "video": ("send_video", "video")}
_MEDIA_INPUTS = {"image": InputMediaPhoto, "audio": InputMediaAudio, "video": InputMediaVideo}


async def send_media(bot: Bot, kwargs: dict[str, Any], media: tuple[Media, ...]) -> Message:
    """sendPhoto/sendAudio/sendVideo (sendMediaGroup for several files), the text as caption.

    The runtime sends a text longer than a caption after the media, as messages of its
    own. Telegram has no alt text: a file sent without a text gets its alt text as caption.
    """
    params = dict(kwargs)
    caption = params.pop("text", "")
    if not caption:
        params.pop("parse_mode", None)  # the alt text is plain text
        caption = media[0].alt[:CAPTION_LENGTH]
    files = [await read_media(m, PLATFORM_MEDIA["telegram"].limit(kind_of(m.mime))) for m in media]
    if len(media) == 1:
        method, field = _MEDIA_METHODS[media[0].kind]
        sent: Message = await getattr(bot, method)(
            **{field: InputFile(files[0], filename=media[0].name)}, caption=caption or None, **params
        )
        return sent
    parse_mode = params.pop("parse_mode", None)
    group = [
        _MEDIA_INPUTS[m.kind](
            InputFile(data, filename=m.name, attach=True),
            caption=caption if n == 0 and caption else None,
            parse_mode=parse_mode if n == 0 else None,
        )
        for n, (m, data) in enumerate(zip(media, files, strict=True))
    ]
    messages = await bot.send_media_group(media=group, **params)
    return messages[0]


def _retry_seconds(exc: RetryAfter) -> float:
    """Seconds to wait, whichever type this PTB version gives (an int, or a timedelta from v23)."""
    with warnings.catch_warnings():
        # v22.2+ warns that the int will become a timedelta; both are handled here.
        warnings.simplefilter("ignore", DeprecationWarning)
        wait = exc.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


def read_update(update: Update, adapter: TelegramAdapter) -> Any:
    """The :class:`Incoming` for ``update`` as ``adapter`` receives it (``None``: nothing to handle).

    Kept apart from the adapter, which connects and sends: this only reads what Telegram sent.
    """
    from personae.engine.messages import Chat, Incoming, User

    member = update.my_chat_member
    if member is not None:
        # The bot itself was added to, or removed from, a chat (or blocked in a private one).
        status = member.new_chat_member.status
        who = member.from_user
        return Incoming(
            adapter.persona,
            adapter.platform,
            Chat(str(member.chat.id), member.chat.type, member.chat.title),
            User(str(who.id), who.full_name, who.username, str(who.id) in adapter.config.admins),
            f"bot is now {status}",
            bot_username=adapter.username,
            received_at=member.date.astimezone(UTC),
            adapter=adapter.name,
            kind="removed" if status in ("kicked", "left") else "added",
        )
    message: Message | None = update.message or update.edited_message or update.channel_post
    if message is None:
        return None
    kind = "text"
    text = message.text or message.caption or ""
    if update.edited_message is not None:
        kind = "edited"
    elif update.channel_post is not None:
        kind = "channel_post"
    elif message.new_chat_members:
        kind, text = "join", " ".join(u.full_name for u in message.new_chat_members)
    elif message.left_chat_member is not None:
        kind, text = "leave", message.left_chat_member.full_name
    elif message.sticker is not None:
        kind, text = "sticker", message.sticker.emoji or ""
    elif message.photo:
        kind = "photo"
    elif message.text is None:
        kind = "other"
    chat = message.chat
    if kind == "text" and chat.type in ("group", "supergroup") and not _addressed(message, adapter):
        kind = "chatter"  # group talk not meant for the bot: privacy, and no fallback spam
    sender = message.from_user
    user = (
        User(str(sender.id), sender.full_name, sender.username, str(sender.id) in adapter.config.admins)
        if sender
        else User("unknown", "someone")
    )
    return Incoming(
        adapter.persona,
        adapter.platform,
        Chat(str(chat.id), chat.type, chat.title),
        user,
        text,
        message_id=str(message.message_id),
        bot_username=adapter.username,
        received_at=message.date.astimezone(UTC) if message.date else datetime.now(UTC),
        adapter=adapter.name,
        kind=kind,
    )


def _addressed(message: Message, adapter: TelegramAdapter) -> bool:
    text = message.text or ""
    if text.startswith("/"):
        return True
    name = adapter.username
    if name and f"@{name.lower()}" in text.lower():
        return True
    reply = message.reply_to_message
    return bool(reply and reply.from_user and reply.from_user.id == adapter.bot.id)
