"""Discord, through discord.py: gateway for messages in, REST for messages out.

One adapter serves one persona with one bot token. Options in bot.toml::

    [[adapters]]
    type = "discord"
    persona = "philae"
    token_env = "PHILAE_DISCORD_TOKEN"   # the token itself only ever lives in the environment
    channels = [123456789012345678]      # where it listens and answers; empty = only DMs
    # broadcast = [...]                  # where event posts go (default: channels)
    admins = [234567890123456789]        # may use !emit and !reload
    # prefix = "!"                       # command prefix besides "/" (default "!")
    # allow_user_mentions = false        # let persona text ping users it names

In its channels the persona answers commands (``!status``, ``/status``),
mentions of the bot, and messages its keyword/regex rules match (ambient
talk never gets the fallback). Everywhere else it stays quiet. No message
can ping ``@everyone``, ``@here`` or a role: ``allowed_mentions`` forbids it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any

import aiohttp
import discord

from personae.engine.messages import Media
from personae.language.media import PLATFORM_MEDIA, kind_of

from .base import (
    Adapter,
    AdapterConfig,
    Delivery,
    DeliveryError,
    IncomingHandler,
    Limits,
    PlatformUnreachable,
    Receipt,
    number_option,
    read_media,
    whole_option,
)

log = logging.getLogger("personae.discord")

#: Seconds :meth:`DiscordAdapter.stop_receiving` gives messages being handled to finish.
HANDLE_RECEIVED_TIMEOUT = 5.0

_MENTION = re.compile(r"<@!?(\d+)>")


def nonce_for(key: str) -> str:
    """A 25-character nonce derived from the outbox key: Discord drops a repeated one."""
    return base64.b32encode(hashlib.sha256(key.encode()).digest()).decode()[:25].lower()


class DiscordAdapter(Adapter):
    """A Discord bot speaking as one persona."""

    platform = "discord"
    # Sends carry a nonce Discord enforces: a repeat after a crash is dropped by Discord.
    idempotent = True
    option_names = frozenset(
        {
            "token_env",
            "prefix",
            "broadcast",
            "allow_user_mentions",
            "global_rate",
            "per_chat_rate",
            "concurrency",
            "guild_ready_timeout",
            "display_name",
            "ready_timeout",
        }
    )

    def __init__(self, config: AdapterConfig, token: str) -> None:
        super().__init__(config)
        opts = dict(config.options)
        self._token = token
        self.prefix = str(opts.get("prefix", "!"))
        self.limits = Limits(
            max_length=2000,
            dialect="markdown",
            # Discord: 50 requests/s per bot; message routes are bucketed per channel,
            # commonly 5 per 5 s. The dispatcher paces under both.
            global_rate=number_option(opts, "global_rate", 50),
            per_chat_rate=number_option(opts, "per_chat_rate", 1),
            concurrency=whole_option(opts, "concurrency", 8),
        )
        self.listen = {str(c) for c in config.channels}
        self._broadcast = tuple(str(c) for c in opts.get("broadcast", config.channels))
        self.allowed_mentions = discord.AllowedMentions(
            everyone=False, roles=False, users=bool(opts.get("allow_user_mentions", False)), replied_user=True
        )
        self.ready_timeout = number_option(opts, "ready_timeout", 30)
        self._guild_ready_timeout = number_option(opts, "guild_ready_timeout", 2.0, zero=True)
        self.client = self._new_client()
        self._on_message: IncomingHandler | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        #: Handlers of received messages still running (stop_receiving waits for them).
        self._handling: set[asyncio.Task[Any]] = set()

    def _new_client(self) -> discord.Client:
        # A closed discord.Client cannot log in again (its connector is closed with it):
        # a retried start gets a fresh one.
        # Nor does the bot speak: discord.py's warnings that voice is unavailable are noise to an operator.
        discord.VoiceClient.warn_nacl = False
        if hasattr(discord.VoiceClient, "warn_dave"):  # discord.py 2.7+
            discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True
        client = discord.Client(
            intents=intents,
            guild_ready_timeout=self._guild_ready_timeout,
            allowed_mentions=self.allowed_mentions,
        )
        client.event(self.on_ready)
        client.event(self.on_message)
        return client

    @classmethod
    def create(cls, config: AdapterConfig, environ: Mapping[str, str]) -> DiscordAdapter:
        """Read the token from the environment."""
        return cls(config, cls.token_from(config, environ))

    def secrets(self) -> tuple[str, ...]:
        """The bot token."""
        return (self._token,)

    @property
    def channels(self) -> tuple[str, ...]:
        """Broadcast channels."""
        return self._broadcast

    # -- lifecycle

    async def start(self, on_message: IncomingHandler) -> None:
        """Log in over REST, connect the gateway, and wait for READY.

        Raises :class:`PlatformUnreachable` when Discord cannot be reached, answers
        with a server error or the gateway is not ready in time (the runtime
        retries), ``RuntimeError`` when it refuses the token.
        """
        if self.client.is_closed():
            self.client = self._new_client()
        self._ready.clear()
        self._on_message = on_message
        try:
            await self.client.login(self._token)
        except discord.LoginFailure:
            raise RuntimeError("Discord refused the token (login failure)") from None
        except discord.HTTPException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise PlatformUnreachable(f"cannot reach Discord (HTTP {exc.status})") from None
            raise RuntimeError(f"Discord refused the login: HTTP {exc.status} {exc.text}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PlatformUnreachable(f"cannot reach Discord ({type(exc).__name__}: {exc})") from None
        self._runner = asyncio.create_task(self._connect(), name=f"discord-{self.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.ready_timeout)
        except TimeoutError:
            why = f"gateway not ready after {self.ready_timeout:g}s"
            raise PlatformUnreachable(f"cannot reach Discord ({why})") from None

    async def _connect(self) -> None:
        try:
            # reconnect=True: discord.py resumes the session after a drop, or re-identifies.
            await self.client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("discord %s gateway stopped: %s", self.name, exc)

    async def on_ready(self) -> None:
        """Gateway READY (first connection or after a re-identify)."""
        user = self.client.user
        log.info("discord adapter %s ready as %s", self.name, user)
        self._ready.set()

    async def stop_receiving(self) -> None:
        """Hand no more messages to the runtime, and let those being handled finish.

        The gateway and the HTTP session stay open for the runtime's drain.
        """
        self._on_message = None
        if self._handling:
            await asyncio.wait(set(self._handling), timeout=HANDLE_RECEIVED_TIMEOUT)

    async def stop(self) -> None:
        """Close the gateway and the HTTP session."""
        self._on_message = None
        with contextlib.suppress(Exception):
            await self.client.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None

    # -- messages in

    async def on_message(self, message: discord.Message) -> None:
        """MESSAGE_CREATE: map to an Incoming and hand it to the runtime."""
        handler = self._on_message
        if handler is None:
            return  # stopping: Discord would not redeliver it anyway
        incoming = self.to_incoming(message)
        if incoming is None:
            return
        task = asyncio.current_task()
        if task is not None:
            self._handling.add(task)
        try:
            await handler(incoming)
        except Exception:  # one bad message must not stop the bot
            log.exception("discord %s failed to handle message %s", self.name, message.id)
        finally:
            if task is not None:
                self._handling.discard(task)

    def to_incoming(self, message: discord.Message) -> Any:
        """The Incoming for ``message``, or ``None`` for the bot's own and other bots' messages."""
        from personae.engine.messages import Chat, Incoming, User

        me = self.client.user
        if message.author.bot or (me is not None and message.author.id == me.id):
            return None
        text = message.content or ""
        is_dm = message.guild is None
        mentioned = me is not None and any(u.id == me.id for u in message.mentions)
        if mentioned and me is not None:
            text = _MENTION.sub(lambda m: "" if int(m.group(1)) == me.id else m.group(0), text).strip()
        if self.prefix not in ("/", "!") and text.startswith(self.prefix):
            text = "/" + text[len(self.prefix) :]
        command = text[:1] in ("/", "!") and len(text) > 1
        kind = "text"
        if not is_dm and str(message.channel.id) not in self.listen:
            kind = "outside"  # not one of its channels: quiet
        elif not text and message.attachments and not mentioned:
            kind = "attachment"
        elif not text and not mentioned:
            kind = "empty"
        author = message.author
        name = getattr(author, "display_name", None) or author.name
        channel_type = "private" if is_dm else "channel"
        title = None if is_dm else getattr(message.channel, "name", None)
        return Incoming(
            self.persona,
            self.platform,
            Chat(str(message.channel.id), channel_type, title),
            User(str(author.id), name, author.name, str(author.id) in self.config.admins),
            text or "",
            message_id=str(message.id),
            bot_username=None,
            received_at=message.created_at.astimezone(UTC),
            adapter=self.name,
            kind=kind,
            # In a channel, plain talk only gets keyword/regex answers, never the fallback.
            fallback=is_dm or mentioned or command,
        )

    # -- messages out

    async def send(self, delivery: Delivery) -> Receipt:
        """POST the message (a reply when ``reply_to`` is set), with a nonce and safe allowed_mentions."""
        try:
            channel = self.client.get_partial_messageable(int(delivery.chat))
        except ValueError:
            raise DeliveryError(f"'{delivery.chat}' is not a Discord channel id", permanent=True) from None
        kwargs: dict[str, Any] = {"allowed_mentions": self.allowed_mentions}
        if delivery.key:
            kwargs["nonce"] = nonce_for(delivery.key)
        if delivery.reply_to and delivery.reply_to.isdigit():
            kwargs["reference"] = discord.MessageReference(
                message_id=int(delivery.reply_to), channel_id=int(delivery.chat), fail_if_not_exists=False
            )
        if delivery.media:
            kwargs["files"] = await attachments(delivery.media)
        try:
            message = await channel.send(delivery.text or None, **kwargs)
        except discord.RateLimited as exc:  # only when the wait would exceed max_ratelimit_timeout
            raise DeliveryError(f"rate limited for {exc.retry_after:.1f}s", retry_after=exc.retry_after) from None
        except (discord.Forbidden, discord.NotFound) as exc:
            raise DeliveryError(f"{exc.status} {exc.text or type(exc).__name__}", chat_gone=True) from None
        except discord.DiscordServerError as exc:
            raise DeliveryError(f"Discord server error {exc.status}") from None
        except discord.HTTPException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise DeliveryError(f"HTTP {exc.status}: {exc.text}") from None
            raise DeliveryError(f"HTTP {exc.status}: {exc.text}", permanent=True) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(f"network error: {type(exc).__name__}: {exc}") from None
        return Receipt((str(message.id),))


async def attachments(media: tuple[Media, ...]) -> list[discord.File]:
    """The files of a message as attachments, each with its alt text as ``description``."""
    limits = PLATFORM_MEDIA["discord"]
    return [
        discord.File(io.BytesIO(await read_media(m, limits.limit(kind_of(m.mime)))), m.name, description=m.alt or None)
        for m in media
    ]
