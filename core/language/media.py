"""Media in the persona language: what kind a file is, and what each platform accepts.

One table of limits serves the loader (known types), lint (sizes per
platform) and the adapters (what to refuse before uploading), so a file lint
passes is one every platform takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

Kind = Literal["image", "audio", "video"]
KINDS: tuple[Kind, ...] = ("image", "audio", "video")

_MB = 1_000_000
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PlatformMedia:
    """What a platform takes: bytes per kind (``None``: that kind is not carried), files per post."""

    image: int | None
    audio: int | None
    video: int | None
    per_post: int
    #: Why a kind is left out, for lint's warning.
    note: str = ""

    def limit(self, kind: Kind) -> int | None:
        """Largest file of ``kind`` in bytes, or ``None`` when the platform does not carry it."""
        limit: int | None = getattr(self, kind)
        return limit


#: Published limits. Mastodon's are the defaults of a stock instance: the adapter reads the
#: instance's own from ``/api/v2/instance`` and refuses larger files before uploading them.
PLATFORM_MEDIA: dict[str, PlatformMedia] = {
    "telegram": PlatformMedia(image=10 * _MB, audio=50 * _MB, video=50 * _MB, per_post=10),
    "discord": PlatformMedia(image=10 * _MIB, audio=10 * _MIB, video=10 * _MIB, per_post=10),
    "mastodon": PlatformMedia(image=16 * _MIB, audio=99 * _MIB, video=99 * _MIB, per_post=4),
    "bluesky": PlatformMedia(
        image=_MB,
        audio=None,
        video=None,
        per_post=4,
        note="Bluesky posts carry images only: audio and video are left out there (the text is posted alone)",
    ),
    "console": PlatformMedia(image=None, audio=None, video=None, per_post=1_000),
}
#: Platforms where a file is shown as a line, not sent: no size applies.
DESCRIBED_ONLY = frozenset({"console"})


#: The file types every network here takes, by extension. A fixed table rather than the
#: system's MIME database: lint says the same on every machine, and an SVG, TIFF or PSD
#: (an "image" to the system, refused by the networks) is caught before a post fails.
MEDIA_TYPES: dict[str, str] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".wav": "audio/x-wav",
    ".flac": "audio/flac",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
}


def mime_of(file: str) -> str | None:
    """The MIME type of ``file`` from its extension (any case), when it is a type the networks take."""
    return MEDIA_TYPES.get(PurePath(file).suffix.lower())


def known_types() -> str:
    """``images .jpg .jpeg …; audio …; video …``: the extensions :func:`mime_of` knows, for messages."""
    label = {"image": "images", "audio": "audio", "video": "video"}
    return "; ".join(
        f"{label[k]} " + " ".join(e for e, m in MEDIA_TYPES.items() if m.startswith(f"{k}/")) for k in KINDS
    )


def kind_of(mime: str) -> Kind:
    """``image``, ``audio`` or ``video`` for a MIME type :func:`mime_of` gave."""
    major = mime.split("/", 1)[0]
    for k in KINDS:
        if k == major:
            return k
    raise ValueError(f"not a media type: {mime}")


def describe(name: str, kind: str, alt: str) -> str:
    """The text stand-in of a file: ``[image: 67p.png — "A drawn comet"]``."""
    return f'[{kind}: {name} — "{alt}"]' if alt else f"[{kind}: {name}]"


def size_text(n: int) -> str:
    """``1.2 MB``: sizes in lint messages."""
    return f"{n / _MB:.1f} MB" if n >= 100_000 else f"{n / 1000:.0f} kB"
