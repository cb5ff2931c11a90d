"""Conversation tests for personas (``personae test``) as pydantic models: validation and JSON Schema.

A test file holds ``tests:``, each a list of ``steps``: what a user writes
(``say``), which event is raised (``event`` with ``data``), or how far the
mission clock moves (``advance``), then what must follow (``reply``,
``match``, ``one_of``, ``nothing``, ``rule``, ``pieces``, ``state``).
Settings given at the top of the file (personas, platform, user, start,
seed) are the defaults of every test in it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from .errors import did_you_mean
from .schema import Duration, EventName, Ident, Scalar

#: Platforms a test can run as: each renders in its adapter's dialect and splits at its adapter's limit.
TEST_PLATFORMS = ("console", "telegram", "discord", "mastodon", "bluesky")

#: The keys of a step that say what must follow it (the rest say what happens).
EXPECTATION_KEYS = ("reply", "match", "one_of", "nothing", "rule", "pieces", "from", "expect", "state")
_TEXT_KEYS = ("reply", "match", "one_of")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_regex(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regex: {exc.msg} at position {exc.pos}") from None
    return value


class UserSpec(_Strict):
    """Who writes the test's messages."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "Tester"
    id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None, description="platform user id (default: derived from the name)"
    )
    admin: bool = Field(default=False, description="whether the bot's admin commands (/emit, /reload) obey this user")


class Expectation(_Strict):
    """One message that must follow a step: its text (exactly one way, or none), who said it, its rule, its pieces."""

    from_: Ident | None = Field(default=None, alias="from", description="the persona that says it")
    reply: str | None = Field(default=None, description="the exact text")
    match: str | None = Field(default=None, description="a regex the text must contain a match of")
    one_of: list[str] | None = Field(default=None, min_length=1, description="the text is one of these")
    rule: str | int | None = Field(
        default=None,
        description="the rule that answers: 'replies[3]', 'events.launch', 'fallback', 'schedule[0]', "
        "'philae.yaml:42' or a line number",
    )
    pieces: int | None = Field(default=None, ge=1, description="how many messages the platform splits it into")

    _check_match = field_validator("match")(_check_regex)

    @model_validator(mode="after")
    def _one_text(self) -> Expectation:
        given = [k for k in _TEXT_KEYS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of reply, match, one_of (found {', '.join(given)})")
        return self


class Step(_Strict):
    """Something happens (``say``, ``event`` or ``advance``), then what must follow."""

    say: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] | None = Field(
        default=None, description="what the user writes"
    )
    event: EventName | None = Field(default=None, description="an event raised now")
    data: dict[str, Any] = Field(default_factory=dict, description="the event's data")
    advance: Duration | None = Field(default=None, description="how far the mission clock moves (2h, 90s, 3d)")
    to: Ident | None = Field(
        default=None, description="the persona written to, and whose state 'state' checks (default: the first)"
    )
    # Shorthand for one expected message (same keys as an entry of 'expect').
    from_: Ident | None = Field(default=None, alias="from", description="the persona that answers")
    reply: str | None = Field(default=None, description="the exact text of the one message that follows")
    match: str | None = Field(default=None, description="a regex the one message that follows must contain")
    one_of: list[str] | None = Field(default=None, min_length=1, description="the one message is one of these")
    rule: str | int | None = Field(default=None, description="the rule that answers")
    pieces: int | None = Field(default=None, ge=1, description="how many messages the platform splits it into")
    nothing: bool | None = Field(default=None, description="true: no message follows")
    expect: list[Expectation] | None = Field(default=None, description="every message that follows, in order")
    state: dict[str, Scalar] | None = Field(
        default=None, description="state values after the step ('key', or 'chat.key' for this chat's state)"
    )

    _check_match = field_validator("match")(_check_regex)

    @model_validator(mode="after")
    def _shape(self) -> Step:
        actions = [k for k in ("say", "event", "advance") if getattr(self, k) is not None]
        if len(actions) != 1:
            found = f" (found {', '.join(actions)})" if actions else ""
            raise ValueError(f"give exactly one of say, event, advance{found}")
        if self.data and self.event is None:
            raise ValueError("'data' goes with 'event'")
        texts = [k for k in _TEXT_KEYS if getattr(self, k) is not None]
        if len(texts) > 1:
            raise ValueError(f"give at most one of reply, match, one_of (found {', '.join(texts)})")
        shorthand = [k for k in ("from", "reply", "match", "one_of", "rule", "pieces") if self.raw(k) is not None]
        if self.expect is not None and shorthand:
            raise ValueError(f"give either 'expect' or {', '.join(shorthand)}, not both")
        if self.nothing and (shorthand or self.expect):
            raise ValueError(f"'nothing: true' cannot go with {', '.join(shorthand) or 'expect'}")
        return self

    def raw(self, key: str) -> Any:
        """The value of ``key`` as written (``from`` is stored as ``from_``)."""
        return getattr(self, "from_" if key == "from" else key)

    def expectations(self) -> list[Expectation] | None:
        """The messages that must follow (``[]`` for ``nothing``), or ``None`` when the step expects nothing."""
        if self.nothing:
            return []
        if self.expect is not None:
            return list(self.expect)
        keys = ("from_", "reply", "match", "one_of", "rule", "pieces")
        if all(getattr(self, k) is None for k in keys):
            return None
        return [Expectation.model_validate({k: getattr(self, k) for k in keys})]


class _Settings(_Strict):
    personas: list[Ident] | None = Field(
        default=None, min_length=1, description="the personas that take part (ids); the first is written to"
    )
    platform: str | None = Field(
        default=None,
        description="the platform the test runs as (default: console)",
        json_schema_extra={"enum": [*TEST_PLATFORMS]},
    )
    adapter: dict[str, Scalar] = Field(
        default_factory=dict, description="adapter options, as in bot.toml (e.g. parse_mode: html for telegram)"
    )
    user: UserSpec | None = None
    start: datetime | None = Field(
        default=None, description="the mission time the test starts at (ISO 8601; default 2000-01-01T00:00Z)"
    )
    seed: int | None = Field(default=None, description="seed of random picks (default 0)")

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str | None) -> str | None:
        if value is not None and value not in TEST_PLATFORMS:
            hint = did_you_mean(value, TEST_PLATFORMS) or f" (known: {', '.join(TEST_PLATFORMS)})"
            raise ValueError(f"unknown platform '{value}'{hint}")
        return value

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2014-11-12T08:35:00Z)")
        return value


class TestCase(_Settings):
    """One conversation: a fresh engine, the steps in order."""

    __test__ = False  # not a pytest class

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    state: dict[Ident, dict[str, Scalar]] = Field(
        default_factory=dict, description="state each persona starts with, by persona id ('key' or 'chat.key')"
    )
    steps: list[Step] = Field(min_length=1)


class TestFile(_Settings):
    """A file of conversation tests; its settings are the defaults of each test."""

    __test__ = False

    tests: list[TestCase] = Field(min_length=1)


def is_test_file(data: Any) -> bool:
    """Whether parsed YAML looks like a test file rather than a persona or a timeline."""
    return isinstance(data, dict) and "tests" in data and "persona" not in data and "timeline" not in data


def json_schema() -> dict[str, Any]:
    """JSON Schema of test files, for editors."""
    schema = TestFile.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "personae persona tests"
    return schema
