"""Lint of ``media:``: every file fits every platform the persona speaks on, and every image has alt text.

A missing file or an unknown type is the loader's error (a run refuses it too);
sizes and alt text are checked here, against the platforms named in the
``bot.toml`` linted alongside, or against all of them when there is none.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import Diagnostic
from .loader import media_file_problem, media_path
from .media import DESCRIBED_ONLY, PLATFORM_MEDIA, kind_of, mime_of, size_text
from .source import DataPath, Source

#: The platforms lint checks media against when no bot.toml says which ones a persona speaks on.
ALL_PLATFORMS = tuple(p for p in PLATFORM_MEDIA if p not in DESCRIBED_ONLY)


def media_problems(source: Source, platforms: Sequence[str] | None = None) -> list[Diagnostic]:
    """The media problems of one persona file, for a persona speaking on ``platforms`` (``None``: all)."""
    wanted = ALL_PLATFORMS if platforms is None else platforms
    speaks = [p for p in wanted if p in PLATFORM_MEDIA and p not in DESCRIBED_ONLY]
    base = Path(source.file).parent
    out: list[Diagnostic] = []
    for path, reaction in _reactions(source.data):
        variants = reaction.get("platforms")
        variants = variants if isinstance(variants, dict) else {}
        # The reaction's own media go wherever a variant does not replace them.
        own = [p for p in speaks if not (isinstance(variants.get(p), dict) and "media" in variants[p])]
        out.extend(_check(source, base, (*path, "media"), reaction.get("media"), own))
        for name, variant in variants.items():
            if isinstance(variant, dict) and "media" in variant and (platforms is None or name in speaks):
                out.extend(_check(source, base, (*path, "platforms", name, "media"), variant["media"], [name]))
    return out


def _reactions(data: Any) -> Iterator[tuple[DataPath, Mapping[str, Any]]]:
    if not isinstance(data, dict):
        return
    events = data.get("events")
    if isinstance(events, dict):
        for name, r in events.items():
            if isinstance(r, dict):
                yield ("events", name), r
    for section in ("replies", "schedule"):
        items = data.get(section)
        if isinstance(items, list):
            for i, r in enumerate(items):
                if isinstance(r, dict):
                    yield (section, i), r
    if isinstance(data.get("fallback"), dict):
        yield ("fallback",), data["fallback"]


def _items(value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value] if value is not None else []
    return [{"file": v} if isinstance(v, str) else v for v in items]


def _check(source: Source, base: Path, path: DataPath, value: Any, platforms: Sequence[str]) -> list[Diagnostic]:
    items = _items(value)
    out: list[Diagnostic] = []
    for p in platforms:
        most = PLATFORM_MEDIA[p].per_post
        if len(items) > most:
            out.append(source.diagnostic(path, f"{len(items)} files: {p} takes at most {most} per post", key=True))
    names = [i["file"] for i in items if isinstance(i, dict) and isinstance(i.get("file"), str)]
    kinds = [kind_of(m) for m in map(mime_of, names) if m is not None]
    for p in platforms:
        problem = _mixing(p, kinds)
        if problem:
            out.append(source.diagnostic(path, f"{problem}: give them reactions of their own", key=True))
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            continue  # the schema's error
        name = item["file"]
        mime = mime_of(name)
        file = base / name
        if mime is None or media_file_problem(base, name) is not None:
            continue  # the loader's error
        at = media_path(source, path, i)
        kind = kind_of(mime)
        alt = item.get("alt")
        if kind == "image" and not (isinstance(alt, str) and alt.strip()):
            out.append(
                source.diagnostic(at, f"image '{name}' has no alt text: say what it shows under 'alt:'", key=True)
            )
        size = file.stat().st_size
        for p in platforms:
            rules = PLATFORM_MEDIA[p]
            limit = rules.limit(kind)
            if limit is None:
                out.append(source.diagnostic(at, f"{p}: {rules.note}", key=True, severity="warning"))
            elif size > limit:
                out.append(
                    source.diagnostic(
                        at,
                        f"'{name}' is {size_text(size)}: too large for {p} ({kind} files up to {size_text(limit)})",
                        key=True,
                    )
                )
    return out


def _mixing(platform: str, kinds: Sequence[str]) -> str | None:
    """Why ``platform`` will not post files of these ``kinds`` together (``None``: it will)."""
    if len(kinds) < 2:
        return None
    if platform == "telegram" and "audio" in kinds and set(kinds) != {"audio"}:
        return "telegram groups audio only with audio, not with images or video"
    if platform == "mastodon" and {"audio", "video"} & set(kinds):
        return "mastodon takes up to 4 images, or one video or sound file alone"
    return None


def platforms_from_config(paths: Iterable[Path]) -> dict[str, list[str]] | None:
    """Persona id -> platforms it speaks on, from the ``[[adapters]]`` of the bot.toml files given (``None``: none)."""
    speaks: dict[str, list[str]] = {}
    found = False
    for path in paths:
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue  # config_diagnostics reports it
        adapters = config.get("adapters")
        if not isinstance(adapters, list):
            continue
        found = True
        for a in adapters:
            if isinstance(a, dict) and isinstance(a.get("type"), str) and isinstance(a.get("persona"), str):
                speaks.setdefault(a["persona"], []).append(a["type"])
    return speaks if found else None
