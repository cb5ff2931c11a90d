"""The persona language as pydantic models: the single source of validation and JSON Schema."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from .errors import did_you_mean

IDENT = r"^[a-z][a-z0-9_-]*$"
EVENT = r"^[A-Za-z][A-Za-z0-9_.:-]*$"
PLATFORMS = ("console", "telegram", "discord", "mastodon", "bluesky", "slack", "matrix", "webhook")

Ident = Annotated[str, StringConstraints(pattern=IDENT, max_length=64)]
EventName = Annotated[str, StringConstraints(pattern=EVENT, max_length=128)]
Scalar = str | int | float | bool | None

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
#: Spelled-out units, so ``10 minutes`` reads as an author means it (and a typo gets a did-you-mean).
_UNIT_WORDS = {
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "mins": "min",
    "minute": "min",
    "minutes": "min",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "day": "d",
    "days": "d",
    "week": "w",
    "weeks": "w",
}


def parse_duration(value: object) -> timedelta:
    """``90s``, ``2m``, ``1.5h``, ``3d``, or a number of seconds, as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 2m, 1h or 3d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        if str(value).strip().startswith("-"):
            raise ValueError(f"'{value}': a duration cannot be negative")
        match = _DURATION.match(str(value))
        if not match or not match.group(2):
            raise ValueError(f"'{value}' is not a duration (use e.g. 90s, 2m, 1h, 3d)")
        unit = _UNIT_WORDS.get(match.group(2).lower(), match.group(2))
        if unit not in _UNITS:
            import difflib  # only on this error path

            close = difflib.get_close_matches(match.group(2).lower(), [*_UNITS, *_UNIT_WORDS], n=1, cutoff=0.6)
            hint = "use e.g. 90s, 2m, 1h, 3d"
            if close:
                space = " " if len(close[0]) > 3 else ""
                hint = f"did you mean '{match.group(1)}{space}{close[0]}'?"
            raise ValueError(f"'{value}' is not a duration: unknown unit '{match.group(2)}' ({hint})")
        seconds = float(match.group(1)) * _UNITS[unit]
    if math.isnan(seconds):  # YAML's .nan: neither long nor short
        raise ValueError(f"'{value}' is not a duration (use e.g. 90s, 2m, 1h, 3d)")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > 100 * 365 * 86400:
        raise ValueError("a duration longer than a century is surely a mistake")
    return timedelta(seconds=seconds)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _as_emit_list(value: Any) -> Any:
    if isinstance(value, str):
        return [{"event": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [{"event": v} if isinstance(v, str) else v for v in value]
    return value


Say = Annotated[
    list[Annotated[str, StringConstraints(max_length=20_000)]],
    BeforeValidator(_as_list, json_schema_input_type=str | list[str]),
    Field(min_length=1),
]
Words = Annotated[
    list[Annotated[str, StringConstraints(min_length=1)]],
    BeforeValidator(_as_list, json_schema_input_type=str | list[str]),
    Field(min_length=1),
]
Duration = Annotated[timedelta, BeforeValidator(parse_duration, json_schema_input_type=str | float)]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero (leave the key out for none)")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
#: Who a cooldown is counted for: each chat, each user, or everyone at once.
COOLDOWN_SCOPES = ("chat", "user", "global")


def _scope(value: str) -> str:
    if value not in COOLDOWN_SCOPES:
        import difflib  # only on this error path

        close = difflib.get_close_matches(value, COOLDOWN_SCOPES, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"'{value}' is not a cooldown scope: use {', '.join(COOLDOWN_SCOPES)}{hint}")
    return value


#: How many of a say list's latest picks ``no_repeat`` may avoid.
MAX_NO_REPEAT = 100
NoRepeat = Annotated[int, Strict(), Field(ge=0, le=MAX_NO_REPEAT)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EmitSpec(_Strict):
    """Raise another event, optionally later in mission time."""

    event: EventName
    data: dict[str, Any] = Field(default_factory=dict)
    delay: Duration | None = None
    persona: Ident | None = Field(
        default=None,
        description="only this persona reacts; without it, the personas of the cast of the event that caused this one",
    )


Emits = Annotated[
    list[EmitSpec],
    BeforeValidator(_as_emit_list, json_schema_input_type=EventName | EmitSpec | list[EventName | EmitSpec]),
]


def _as_media_list(value: Any) -> Any:
    if isinstance(value, str | dict):
        value = [value]
    if isinstance(value, list):
        return [{"file": v} if isinstance(v, str) else v for v in value]
    return value


class MediaFile(_Strict):
    """A file sent with a message: an image, audio or short video, relative to the persona file."""

    file: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    alt: Annotated[str, StringConstraints(max_length=1500)] | None = Field(
        default=None, description="what the file shows or sounds like, for people who cannot see or hear it"
    )


MediaList = Annotated[
    list[MediaFile],
    BeforeValidator(_as_media_list, json_schema_input_type=str | MediaFile | list[str | MediaFile]),
    Field(max_length=10),
]


def _as_variant(value: Any) -> Any:
    return {"say": value} if isinstance(value, str | list) else value


class Variant(_Strict):
    """What a reaction says on one platform: its own ``say``, its own ``media``, or both."""

    say: Say | None = None
    media: MediaList | None = Field(default=None, description="replaces the reaction's media here ([]: none)")


PlatformVariant = Annotated[Variant, BeforeValidator(_as_variant, json_schema_input_type=str | list[str] | Variant)]


class Cooldown(_Strict):
    """How long a rule rests after it fires, and for whom (``cooldown: 10m`` is per chat)."""

    for_: PositiveDuration = Field(alias="for", description="how long the rule rests after it answers (90s, 10m, 1h)")
    per: Annotated[str, AfterValidator(_scope), Field(json_schema_extra={"enum": list(COOLDOWN_SCOPES)})] | None = (
        Field(default=None, description="chat, user or global (default: chat for a reply, global for an event)")
    )


def _cooldown_short_form(value: Any) -> Any:
    # `cooldown: 10m` is `cooldown: {for: 10m}`.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"for": value}
    return value


CooldownSpec = Annotated[Cooldown, BeforeValidator(_cooldown_short_form, json_schema_input_type=str | float | Cooldown)]


class Limits(_Strict):
    """At most ``messages`` messages per user every ``per``; past it one ``notice``, then silence."""

    messages: Annotated[int, Strict(), Field(ge=1, le=1000)]
    per: PositiveDuration
    notice: Say | None = Field(default=None, description="said once when a user goes past the limit ('' for none)")


class Reaction(_Strict):
    """What a persona does: say something, change state, raise events."""

    say: Say | None = None
    media: MediaList = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict)
    platforms: dict[str, PlatformVariant] = Field(default_factory=dict)
    emit: Emits = Field(default_factory=list)
    if_: str | None = Field(default=None, alias="if", description="Jinja expression; react only when true")
    delay: Duration | None = None
    cooldown: CooldownSpec | None = Field(
        default=None, description="rest after firing: 10m (per chat), or {for: 10m, per: chat|user|global}"
    )
    cooldown_say: Say | None = Field(default=None, description="said instead while the rule rests (replies only)")
    no_repeat: NoRepeat | None = Field(
        default=None, description="avoid the last N picks of this say list in a chat (default: the persona's)"
    )

    @model_validator(mode="after")
    def _known_platforms(self) -> Reaction:
        for name in self.platforms:
            if name not in PLATFORMS:
                raise ValueError(f"unknown platform '{name}' (known: {', '.join(PLATFORMS)})")
        return self


class When(_Strict):
    """A reply trigger: exactly one of the four kinds."""

    command: Words | None = None
    regex: str | None = None
    keywords: Words | None = None
    exact: Words | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> When:
        given = [k for k in ("command", "regex", "keywords", "exact") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of command, regex, keywords, exact"
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self


class Reply(Reaction):
    """A reply rule; the first that matches (in file order) answers."""

    when: When


class ScheduleEntry(Reaction):
    """A recurring post on the (possibly virtual) clock, in UTC."""

    cron: str
    timezone: str = Field(default="UTC", description="IANA zone the cron fields are read in, e.g. Europe/Paris")
    event: EventName | None = Field(default=None, description="name of the synthetic event (default: schedule)")


def _known_platform(name: str) -> str:
    if name not in PLATFORMS:
        hint = did_you_mean(name, PLATFORMS) or f" (known: {', '.join(PLATFORMS)})"
        raise ValueError(f"unknown platform '{name}'{hint}")
    return name


Platform = Annotated[str, AfterValidator(_known_platform), WithJsonSchema({"type": "string", "enum": list(PLATFORMS)})]


class Voice(_Strict):
    """How the persona may sound on each platform; ``personae lint`` checks every text against it,
    rendered with sample data (timeline event data, state defaults, sample users and messages)."""

    platforms: list[Platform] | None = Field(
        default=None,
        min_length=1,
        description="the platforms the persona posts on, whose lengths are checked "
        "(default: every platform with a length limit: telegram, discord, mastodon, bluesky)",
    )
    max_length: dict[Platform, Annotated[int, Field(ge=1, le=1_000_000)]] = Field(
        default_factory=dict,
        description="the longest post wanted on each platform, counted as the platform counts "
        "(a rendered text past it is a warning); without it, a text the platform would split is a warning",
    )
    banned_words: Annotated[
        list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]],
        BeforeValidator(_as_list, json_schema_input_type=str | list[str]),
    ] = Field(
        default_factory=list,
        description="words (or phrases) the persona never says: whole words, ignoring case and accents "
        "('cafe' also bans 'Café')",
    )
    required_variants: list[Platform] = Field(
        default_factory=list,
        description="platforms every event reaction and schedule entry that says something "
        "must have a variant for (under its `platforms:`)",
    )
    alt_text: Literal["required", "optional"] = Field(
        default="optional", description="`required`: every media item must have non-empty `alt` text"
    )


class PersonaFile(_Strict):
    """A persona script (one YAML file)."""

    persona: Ident
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    description: str = ""
    locale: str = "en"
    state: dict[str, Scalar] = Field(default_factory=dict)
    chat_state: dict[str, Scalar] = Field(default_factory=dict)
    phrases: dict[str, Say] = Field(default_factory=dict)
    events: dict[EventName, Reaction] = Field(default_factory=dict)
    replies: list[Reply] = Field(default_factory=list)
    fallback: Reaction | None = None
    schedule: list[ScheduleEntry] = Field(default_factory=list)
    voice: Voice | None = Field(default=None, description="limits on how the persona sounds, checked by lint")
    limits: Limits | None = Field(default=None, description="per-user rate limit, e.g. {messages: 10, per: 1m}")
    no_repeat: NoRepeat = Field(default=0, description="say lists and phrase banks avoid their last N picks in a chat")


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys an author may write for ``model`` (aliases where defined)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def json_schema() -> dict[str, Any]:
    """JSON Schema of persona files, for editors."""
    schema = PersonaFile.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "personae persona script"
    return schema
