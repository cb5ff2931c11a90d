"""``personae emit --to URL``: post one event to a running bot's HTTP intake, signed with the shared secret."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..language.errors import ConfigError
from .intake import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

#: Attempts at a request that got no answer; safe to repeat, the Idempotency-Key makes it at-most-once.
ATTEMPTS = 3


def events_url(url: str) -> str:
    """``url`` with ``/events`` added when it names only the server (``http://host:port``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--to: '{url}' is not an http:// or https:// URL (e.g. http://127.0.0.1:8787)")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/events")
    return urllib.parse.urlunsplit(parts)


async def post_event(
    url: str,
    secret: str,
    event: str,
    data: Mapping[str, Any],
    persona: str | None = None,
    *,
    timeout: float = 10.0,
) -> str:
    """Post the event; returns its id, or raises :class:`ConfigError` with the bot's answer in one line."""
    target = events_url(url)
    doc: dict[str, Any] = {"event": event, "data": dict(data)}
    if persona is not None:
        doc["persona"] = persona
    body = json.dumps(doc, ensure_ascii=False, default=str).encode()
    key = uuid.uuid4().hex
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        for attempt in range(ATTEMPTS):
            # Signed anew per attempt (a retry is not refused as stale), to the microsecond: the same
            # event emitted twice in one second is two requests, not a replay of one.
            stamp = f"{time.time():.6f}"
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(secret, stamp, body),
            }
            try:
                async with session.post(target, data=body, headers=headers) as response:
                    text = await response.text(errors="replace")
                    status = response.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = f"cannot reach {target}: {exc or type(exc).__name__}"
                await asyncio.sleep(0.25 * (attempt + 1))
                continue
            answer = _json(text)
            if status == 202 and isinstance(answer.get("id"), str):
                return str(answer["id"])
            why = answer.get("error") or text.strip()[:200] or "no explanation"
            raise ConfigError(f"{target}: {status}: {why}")
    raise ConfigError(last)


def _json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
