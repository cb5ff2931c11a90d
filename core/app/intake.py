"""The HTTP side of ``personae run``: ``POST /events``, ``GET /healthz``, ``/readyz`` and ``/metrics``.

An event posted here is answered ``202 {"id": …}`` only once it is committed
to SQLite (``intake`` table); a player task then plays stored events in order
and marks each played once its reactions are in the outbox. A crash between
the two plays the event at the next start; its reactions keep their outbox
keys (derived from the event id), so nothing is sent twice.

Requests authenticate with ``Authorization: Bearer <secret>``, or with
``X-Personae-Signature: hex(HMAC-SHA256(secret, timestamp + "." + body))`` and
``X-Personae-Timestamp`` (Unix seconds, within :data:`SIGNATURE_WINDOW` of now).
A signed request, or one with an ``Idempotency-Key``, is stored at most once:
sending it again answers with the first one's id. (So two identical bodies
signed with the same timestamp are one event: sign with sub-second timestamps,
as ``personae emit --to`` does, or vary the data.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..engine.engine import EngineError
from ..engine.messages import Event
from ..language.errors import ConfigError, did_you_mean
from ..language.templates import TemplateRenderError
from ..storage.interface import EventIntake, Storage
from ..storage.records import IntakeEvent, IntakeRequest, IntakeStored, StoreError
from .runtime import Bot

log = logging.getLogger("personae.app.intake")

#: Seconds a signature's timestamp may differ from now, either way (older ones could be replays).
SIGNATURE_WINDOW = 300.0
SIGNATURE_HEADER = "X-Personae-Signature"
TIMESTAMP_HEADER = "X-Personae-Timestamp"
_FIELDS = ("event", "persona", "data")
_MAX_IDEMPOTENCY_KEY = 255
#: Unix seconds, with at most 6 decimals.
_STAMP = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    """How the intake listens and whom it accepts (``[http]`` of bot.toml, with the secret's value)."""

    secret: str
    listen: str = "127.0.0.1"
    port: int = 8787
    max_body: int = 64 * 1024
    #: Requests per minute per client address (0: no limit).
    rate: float = 600.0


class HttpProblem(Exception):
    """A request refused: the status and the JSON body that say why."""

    def __init__(
        self, status: int, message: str, *, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        """The JSON answer."""
        body: dict[str, Any] = {"error": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return web.json_response(body, status=self.status, headers=self.headers)


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """The ``X-Personae-Signature`` of ``body`` sent at ``timestamp``: hex HMAC-SHA256 of ``timestamp.body``.

    ``timestamp`` is signed as the ``X-Personae-Timestamp`` header writes it (Unix seconds, optionally
    with up to 6 decimals: two identical bodies signed in the same second are then two requests).
    """
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class RateLimiter:
    """A token bucket per client: ``rate`` requests a minute, bursts up to ``rate``."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait(self, client: str) -> float:
        """Take one request from ``client``'s bucket: 0 if allowed, else seconds until it would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        per_second = self.rate / 60
        tokens, then = self._buckets.get(client, (self.rate, now))
        tokens = min(self.rate, tokens + max(0.0, now - then) * per_second)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / per_second
        self._buckets[client] = (tokens - 1, now)
        if len(self._buckets) > 10_000:
            # Forget clients whose bucket has refilled: they would start full anyway.
            full = 60.0
            self._buckets = {c: (t, w) for c, (t, w) in self._buckets.items() if now - w < full}
        return 0.0


class Intake:
    """The HTTP server of a running bot.

    :param bot: the bot events are played on (its store must be open).
    :param clock: wall-clock seconds, for signature windows and rate limits (tests pass their own).
    """

    def __init__(self, bot: Bot, settings: IntakeSettings, *, clock: Callable[[], float] = time.time) -> None:
        store = bot.store
        if store is None or store.intake is None:
            raise ConfigError("the HTTP intake ([http]) needs a database to store posted events in")
        self.bot = bot
        self.store: Storage = store
        #: Where posted events wait to be played (a table of the bot's database).
        self.queue: EventIntake = store.intake
        #: Seconds between looks for events another worker stored and did not play (it died):
        #: with several workers on one database; ``None`` (one process) waits for this one's posts.
        self._poll = 1.0 if store.coordination is not None else None
        self.settings = settings
        self._clock = clock
        self._limiter = RateLimiter(settings.rate, clock)
        self._secret = settings.secret.encode()
        self._runner: web.AppRunner | None = None
        self._player: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._queued: list[tuple[IntakeRequest, asyncio.Future[IntakeStored]]] = []
        self._committer: asyncio.Task[None] | None = None
        #: ``(host, port)`` actually bound, once started.
        self.address: tuple[str, int] | None = None

    # -- lifecycle

    async def start(self) -> tuple[str, int]:
        """Listen; returns the address bound (port 0 picks a free one). Events are stored, not yet played.

        :raises ConfigError: the address cannot be listened on (in use, not an address of this machine).
        """
        app = web.Application(middlewares=[self._errors], client_max_size=self.settings.max_body + 1)
        app.router.add_post("/events", self._post_event)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.listen, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            # asyncio words it "error while attempting to bind on address (…): reason": the reason will do.
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            where = f"{self.settings.listen}:{self.settings.port}"
            raise ConfigError(f"cannot listen on {where}: {reason}") from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.address = (str(host), int(port))
        return self.address

    def play(self) -> None:
        """Start playing stored events (those left by a crash first): call once the bot has started."""
        if self._player is None:
            self._player = asyncio.create_task(self._play_loop(), name="personae-intake")

    async def stop(self) -> None:
        """Stop listening, then stop playing (an event not yet played stays stored, for the next start)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in (self._player, self._committer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._player = self._committer = None

    # -- handlers

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """Every answer is JSON, and counted: aiohttp's own 404 and 405 too."""
        try:
            response: web.StreamResponse = await handler(request)
        except HttpProblem as problem:
            response = problem.response()
        except web.HTTPException as exc:
            response = web.json_response({"error": exc.reason}, status=exc.status, headers=_allow(exc))
        self.bot.metrics.http_responses.labels(str(response.status)).inc()
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        problems: list[str] = []
        if not self.bot.ready:
            waiting = self.bot.not_started
            problems.append(f"adapters not connected: {', '.join(waiting)}" if waiting else "dispatchers not running")
        try:
            await asyncio.wait_for(self.queue.writable(), 5)
        except (StoreError, TimeoutError) as exc:
            problems.append(f"database not writable: {exc or 'timed out'}")
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics(self, request: web.Request) -> web.Response:
        with contextlib.suppress(Exception):  # a busy database must not hide the other metrics
            self.bot.metrics.set_outbox(await asyncio.wait_for(self.store.outbox_counts(), 5))
        body = self.bot.metrics.render()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _post_event(self, request: web.Request) -> web.Response:
        wait = self._limiter.wait(request.remote or "")
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise HttpProblem(
                429,
                f"too many requests: at most {self.settings.rate:g} a minute per client; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        body = await self._body(request)
        signature = self._authenticate(request, body)
        if request.content_type != "application/json":
            raise HttpProblem(415, f"Content-Type must be application/json, not {request.content_type or 'nothing'}")
        event, persona, data = self._parse(body)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= _MAX_IDEMPOTENCY_KEY and key.isprintable()):
            raise HttpProblem(
                400,
                f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} printable characters",
                field="Idempotency-Key",
            )
        data_text = json.dumps(data, ensure_ascii=False, sort_keys=True)
        fingerprint = hashlib.sha256(json.dumps([event, persona, data_text]).encode()).hexdigest()
        wanted = IntakeRequest(uuid.uuid4().hex, event, persona, data_text, fingerprint, key, signature)
        try:
            stored = await self._store(wanted)
        except Exception as exc:
            log.error("could not store a posted event: %s", exc)
            raise HttpProblem(503, f"the event could not be stored: {exc}") from None
        if not stored.new and stored.fingerprint != fingerprint:
            raise HttpProblem(
                422, "Idempotency-Key already used for another request (a new request needs a new key)",
                field="Idempotency-Key",
            )  # fmt: skip
        if stored.new:
            self.bot.metrics.events_received.inc()
            self._wake.set()
        return web.json_response({"id": stored.id}, status=202)

    async def _body(self, request: web.Request) -> bytes:
        limit = self.settings.max_body
        too_big = HttpProblem(413, f"body larger than {limit} bytes ([http] max_body)")
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    def _authenticate(self, request: web.Request, body: bytes) -> str | None:
        """Check the bearer token or the signature; returns the signature (a request's identity), if signed."""
        auth = request.headers.get("Authorization", "").strip() or None
        signature = request.headers.get(SIGNATURE_HEADER)
        challenge = {"WWW-Authenticate": 'Bearer realm="personae"'}
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._secret):
                raise HttpProblem(401, "wrong bearer token", headers=challenge)
            return None
        if signature is None:
            raise HttpProblem(
                401,
                f"no credentials: send Authorization: Bearer <secret>, or {SIGNATURE_HEADER} with {TIMESTAMP_HEADER}",
                headers=challenge,
            )
        stamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
        if not _STAMP.fullmatch(stamp):
            raise HttpProblem(401, f"{TIMESTAMP_HEADER} must be the signing time in Unix seconds (e.g. 1800000000)")
        age = self._clock() - float(stamp)
        if age > SIGNATURE_WINDOW:
            raise HttpProblem(
                401, f"signature is {age:.0f} s old (at most {SIGNATURE_WINDOW:.0f}): refused as a replay"
            )
        if age < -SIGNATURE_WINDOW:
            raise HttpProblem(401, f"signature timestamp is {-age:.0f} s in the future (clocks out of step?)")
        given = signature.strip().removeprefix("sha256=").lower()
        expected = sign(self.settings.secret, stamp, body)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HttpProblem(401, f"wrong {SIGNATURE_HEADER} (HMAC-SHA256 of timestamp + '.' + body)")
        return expected

    def _parse(self, body: bytes) -> tuple[str, str | None, dict[str, Any]]:
        """The event, persona and data of a body, or the 400 that names the faulty field."""
        try:
            doc = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        except UnicodeDecodeError as exc:
            raise HttpProblem(400, f"body is not UTF-8 (byte {exc.start})") from None
        except (ValueError, RecursionError) as exc:
            raise HttpProblem(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise HttpProblem(400, 'body must be a JSON object: {"event": ..., "persona": ..., "data": {...}}')
        for name in doc:
            if name not in _FIELDS:
                raise HttpProblem(400, f"unknown field '{name}'{did_you_mean(name, _FIELDS)}", field=name)
        event, persona, data = doc.get("event"), doc.get("persona"), doc.get("data", {})
        if event is None:
            raise HttpProblem(400, "missing field 'event' (the event's name)", field="event")
        if not isinstance(event, str) or not event.strip():
            raise HttpProblem(400, "'event' must be a non-empty string", field="event")
        if persona is not None and not isinstance(persona, str):
            raise HttpProblem(400, "'persona' must be a string (a persona id)", field="persona")
        if not isinstance(data, dict):
            raise HttpProblem(400, "'data' must be a JSON object", field="data")
        personas = self.bot.engine.personas
        if persona is not None:
            if persona not in personas:
                known = ", ".join(sorted(personas)) or "none"
                hint = did_you_mean(persona, personas) or f" (known: {known})"
                raise HttpProblem(400, f"unknown persona '{persona}'{hint}", field="persona")
            events = set(personas[persona].events)
            if event not in events:
                hint = did_you_mean(event, events) or f" (it reacts to: {', '.join(sorted(events)) or 'nothing'})"
                raise HttpProblem(400, f"persona '{persona}' does not react to event '{event}'{hint}", field="event")
        else:
            events = {e for p in personas.values() for e in p.events}
            if event not in events:
                hint = did_you_mean(event, events) or f" (known: {', '.join(sorted(events)) or 'none'})"
                raise HttpProblem(400, f"no persona reacts to event '{event}'{hint}", field="event")
        return event, persona, data

    # -- storing (group commit) and playing

    async def _store(self, request: IntakeRequest) -> IntakeStored:
        """Store ``request`` with the others arriving meanwhile: one transaction, one disk sync for all."""
        future: asyncio.Future[IntakeStored] = asyncio.get_running_loop().create_future()
        self._queued.append((request, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit())
        return await future

    async def _commit(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                answers = await self.queue.intake_add([r for r, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)

    async def _play_loop(self) -> None:
        while True:
            self._wake.clear()  # before reading: an event stored meanwhile wakes the next round
            try:
                pending = await self.queue.intake_pending()
                if pending:
                    await self._play(pending)
            except Exception as exc:  # the events stay pending: tried again shortly
                log.error("could not play posted events: %s", self.bot.redactor(str(exc)))
                await asyncio.sleep(1)
                continue
            if not pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)

    async def _play(self, items: list[IntakeEvent]) -> None:
        """Queue the events' reactions in the outbox (one write for all), then mark them played."""
        bot = self.bot
        for item in items:
            # The key makes the reactions' outbox keys: played again after a crash, they are not sent twice.
            event = Event(item.event, bot.clock.now(), item.data, "http", item.persona, 0, f"http:{item.id}")
            try:
                with bot.engine.problems_of() as failed:
                    await bot.deliver(await bot.engine.dispatch(event))
                for p in failed:
                    log.error("event %s (%s): %s: %s", item.id, item.event, p.persona, p.message)
            except (EngineError, TemplateRenderError) as exc:
                log.error("event %s (%s) failed: %s", item.id, item.event, bot.redactor(str(exc)))
        await bot.flush()
        await self.store.flush()  # their log rows too: "played" means on disk
        await self.queue.intake_played([item.id for item in items])


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
