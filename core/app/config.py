"""``bot.toml``: which personas, which adapters, which timelines.

Parsed with :mod:`tomllib`, validated with pydantic; errors name the file,
the line (found by searching the TOML text) and the key, with a did-you-mean.
Secrets are never in the file: adapters name the environment variable.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..language.errors import ConfigError, Diagnostic, did_you_mean, format_path
from ..timing.timeline import bare_date

BUILTIN_ADAPTERS = {
    "console": "personae.adapters.console:ConsoleAdapter",
    "null": "personae.adapters.null:NullAdapter",
    "telegram": "personae.adapters.telegram:TelegramAdapter",
    "discord": "personae.adapters.discord:DiscordAdapter",
    "mastodon": "personae.adapters.mastodon:MastodonAdapter",
    "bluesky": "personae.adapters.bluesky:BlueskyAdapter",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BotSection(_Model):
    """``[bot]``."""

    personas: list[str] = Field(default_factory=lambda: ["personas/*.yaml"])
    database: str = "personae.db"
    seed: int = 0
    subscribe_command: str = "subscribe"
    unsubscribe_command: str = "unsubscribe"
    reload: bool = Field(default=True, description="reload persona files when they change")
    max_depth: int = 8
    lease: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="several workers on one PostgreSQL database: seconds before the outbox rows of a worker"
        " that died go to another",
    )


class AdapterEntry(BaseModel):
    """One ``[[adapters]]`` table. Keys other than these are the adapter's own options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    persona: str
    name: str | None = None
    channels: list[str | int] = Field(default_factory=list)
    admins: list[str | int] = Field(default_factory=list)


Speed = Annotated[float | Literal["max"], Field(description="mission seconds per real second, or 'max'")]


class TimelineEntry(_Model):
    """One ``[[timelines]]`` table."""

    file: str
    mode: Literal["replay", "live"] = "replay"
    speed: Speed = 3600.0
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    missed: Literal["skip", "late"] = "skip"
    schedules: bool = Field(default=True, description="also run the personas' cron schedules")

    @field_validator("speed")
    @classmethod
    def _positive(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not (math.isfinite(v) and v > 0):
            raise ValueError("speed must be positive (or 'max')" + ("" if v <= 0 else f", a finite number, not {v}"))
        return v

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _day(cls, v: Any, info: ValidationInfo) -> Any:
        # A bare date (TOML `to = 2014-11-15`) is a UTC day: `from` its first instant, `to` its last.
        if isinstance(v, str) and (day := bare_date(v)) is not None:
            v = day
        if isinstance(v, date) and not isinstance(v, datetime):
            first = datetime(v.year, v.month, v.day, tzinfo=UTC)
            return first + timedelta(days=1) - timedelta(microseconds=1) if info.field_name == "to" else first
        return v

    @field_validator("from_", "to")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError(f"{v.isoformat()} has no timezone (write it as {v.isoformat()}Z for UTC)")
        return v

    @field_validator("to")
    @classmethod
    def _after_from(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("from_")
        if v is not None and start is not None and start > v:
            raise ValueError(f"to {v.isoformat()} is before from {start.isoformat()}")
        return v


class HttpSection(_Model):
    """``[http]``: the event intake, health and metrics server of ``personae run``."""

    listen: str = Field(default="127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(default=8787, ge=0, le=65535, description="TCP port (0: any free port, printed at start)")
    secret_env: str = Field(
        default="PERSONAE_HTTP_SECRET", min_length=1, description="environment variable holding the shared secret"
    )
    max_body: int = Field(default=64 * 1024, gt=0, description="largest accepted request body, in bytes")
    rate: float = Field(default=600.0, ge=0, description="requests per minute per client address (0: no limit)")


class BotConfig(_Model):
    """The whole ``bot.toml``."""

    bot: BotSection = Field(default_factory=BotSection)
    adapters: list[AdapterEntry] = Field(default_factory=list)
    timelines: list[TimelineEntry] = Field(default_factory=list)
    http: HttpSection | None = None


def adapter_class(kind: str) -> type[Any]:
    """Find the adapter class for ``type = kind`` (entry points first, then built-ins)."""
    target = _adapter_target(kind)
    try:
        return _import(target)
    except ImportError as exc:
        raise ConfigError(
            f"adapter '{kind}' needs extra packages: {install_hint(kind)} ({exc.name} is missing)"
        ) from None


def _adapter_target(kind: str) -> str:
    """``module:Class`` of adapter type ``kind``; :class:`ConfigError` for an unknown type."""
    target = None
    for ep in metadata.entry_points(group="personae.adapters"):
        if ep.name == kind:
            target = ep.value
            break
    target = target or BUILTIN_ADAPTERS.get(kind)
    if target is None:
        known = sorted({*BUILTIN_ADAPTERS, *(ep.name for ep in metadata.entry_points(group="personae.adapters"))})
        raise ConfigError(f"unknown adapter type '{kind}'{did_you_mean(kind, known)} (known: {', '.join(known)})")
    return target


def _import(target: str) -> type[Any]:
    import importlib

    module, _, attr = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls


def install_hint(kind: str) -> str:
    """The command that installs what adapter ``kind`` needs, as README writes it (from a checkout)."""
    extra = kind if kind in ("telegram", "discord", "mastodon", "bluesky") else "all"
    return f'pip install -e ".[{extra}]"'


class Config:
    """A loaded ``bot.toml``: validated model, its folder, and its text (for line numbers)."""

    def __init__(self, path: Path, model: BotConfig, text: str) -> None:
        self.path = path
        self.model = model
        self.text = text
        self.root = path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the file, relative to the file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def persona_paths(self) -> list[str]:
        """Persona globs resolved against the file's folder."""
        return [str(self.resolve(p)) for p in self.model.bot.personas]

    def error(self, path: tuple[str | int, ...], message: str) -> ConfigError:
        """A :class:`ConfigError` located at the key ``path``."""
        line = toml_line(self.text, path)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {format_path(path)}: {message}")

    def adapter_name(self, index: int) -> str:
        """The adapter's name: its ``name``, else ``type-persona`` (numbered if repeated)."""
        entry = self.model.adapters[index]
        if entry.name:
            return entry.name
        base = f"{entry.type}-{entry.persona}"
        same = [i for i, a in enumerate(self.model.adapters) if not a.name and f"{a.type}-{a.persona}" == base]
        return base if len(same) == 1 else f"{base}-{same.index(index) + 1}"

    def env(self, index: int, key: str, environ: Mapping[str, str] | None = None) -> str:
        """Read the environment variable named by adapter option ``key``; clear error if unset."""
        environ = os.environ if environ is None else environ
        entry = self.model.adapters[index]
        var = (entry.model_extra or {}).get(key)
        if not var:
            raise self.error(("adapters", index), f"missing '{key}' (the environment variable holding the token)")
        value = environ.get(str(var))
        if not value:
            raise self.error(("adapters", index, key), f"environment variable {var} is not set")
        return value


def load_config(path: str | Path, *, files: bool = False) -> Config:
    """Read and validate ``bot.toml``; :class:`ConfigError` with every problem found.

    With ``files``, the timeline files it names must exist too.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file (see README, 'Running bots: bot.toml'; or pass --config)") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a folder, not a bot.toml file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); is it really a bot.toml?") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, p, files=files)


def parse_config(text: str, path: Path, *, files: bool = False) -> Config:
    """Validate TOML text as a bot configuration; :class:`ConfigError` with every problem found."""
    config, problems = _check(text, path, files=files)
    if problems or config is None:
        raise ConfigError("\n".join(map(str, problems)))
    return config


def config_problems(path: Path) -> list[Diagnostic]:
    """Every problem of the ``bot.toml`` at ``path`` (``personae lint``), as diagnostics."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Diagnostic(str(path), 1, 1, "", f"cannot read: {exc}")]
    return [p.diagnostic() for p in _check(text, path, files=True)[1]]


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in ``bot.toml``: where (line found by searching the text), which key, what."""

    file: Path
    line: int | None
    column: int
    key: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {format_path(self.key)}: {self.message}" if self.key else f"{where}: {self.message}"

    def diagnostic(self) -> Diagnostic:
        """As a lint :class:`Diagnostic` (``file:line:col``)."""
        return Diagnostic(str(self.file), self.line or 1, self.column, format_path(self.key), self.message)


def _problem(text: str, path: Path, key: tuple[str | int, ...], message: str) -> ConfigProblem:
    line = toml_line(text, key)
    column = 1
    if line:
        row = text.splitlines()[line - 1]
        column = len(row) - len(row.lstrip()) + 1
    return ConfigProblem(path, line, column, key, message)


def _check(text: str, path: Path, *, files: bool) -> tuple[Config | None, list[ConfigProblem]]:
    """The configuration (when valid) and every problem: each section is checked whatever the others hold."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line, column = (int(m.group(1)), int(m.group(2))) if m else (None, 1)
        return None, [_TomlProblem(path, line, column, (), f"invalid TOML: {str(exc).split(' (at line')[0]}")]
    problems: list[ConfigProblem] = []
    config: Config | None = None
    try:
        config = Config(path, BotConfig.model_validate(data), text)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            if err["type"] == "extra_forbidden":
                parent = _model_for(loc[:-1])
                hint = did_you_mean(str(loc[-1]), _keys(parent)) if parent else ""
                problems.append(_problem(text, path, loc, f"unknown key '{loc[-1]}'{hint}"))
            elif err["type"] == "missing":
                problems.append(_problem(text, path, loc[:-1], f"missing required key '{loc[-1]}'"))
            else:
                problems.append(_problem(text, path, loc, str(err["msg"]).removeprefix("Value error, ")))
    adapters = data.get("adapters")
    for i, entry in enumerate(adapters if isinstance(adapters, list) else []):
        if isinstance(entry, dict):
            problems += [_problem(text, path, ("adapters", i, k), m) for k, m in _adapter_problems(entry)]
    timelines = data.get("timelines")
    for i, entry in enumerate(timelines if isinstance(timelines, list) and files else []):
        file = entry.get("file") if isinstance(entry, dict) else None
        if isinstance(file, str):
            resolved = Path(file) if Path(file).is_absolute() else path.parent.absolute() / file
            if not resolved.exists():
                problems.append(_problem(text, path, ("timelines", i, "file"), f"no such file: {resolved}"))
    problems.sort(key=lambda p: p.line or 0)
    return config, problems


class _TomlProblem(ConfigProblem):
    """Invalid TOML: tomllib gives the exact column, shown as ``file:line:col``."""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else str(self.file)
        return f"{where}: {self.message}"


def _adapter_problems(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """Unknown adapter type, unknown options: what is wrong in one ``[[adapters]]`` table on its own.

    An adapter whose extra packages are missing is not a problem of the file:
    it is reported when that adapter is built (another may be run alone).
    """
    kind = entry.get("type")
    if not isinstance(kind, str):
        return []
    try:
        target = _adapter_target(kind)
    except ConfigError as exc:
        return [("type", str(exc))]
    try:
        cls = _import(target)
    except ImportError:
        return []
    names: frozenset[str] | None = cls.option_names
    if names is None:
        return []
    return [
        (key, f"unknown option '{key}' for {kind}{did_you_mean(key, names)}")
        for key in entry
        if key not in AdapterEntry.model_fields and key not in names
    ]


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_for(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return BotConfig
    sections: dict[str, type[BaseModel]] = {
        "bot": BotSection,
        "adapters": AdapterEntry,
        "timelines": TimelineEntry,
        "http": HttpSection,
    }
    return sections.get(names[0])


def toml_line(text: str, path: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of ``path`` (e.g. ``('adapters', 1, 'token_env')``) in TOML text."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    i = 0
    found: int | None = None
    parts = list(path)
    while i < len(parts):
        part = parts[i]
        if isinstance(part, str) and i + 1 < len(parts) and isinstance(parts[i + 1], int):
            header = re.compile(rf"^\s*\[\[\s*{re.escape(part)}\s*\]\]")
            hits = [n for n in range(start, end) if header.match(lines[n])]
            idx = int(parts[i + 1])
            if idx >= len(hits):
                return found
            start = hits[idx]
            found = start + 1
            nxt = [n for n in range(start + 1, end) if lines[n].lstrip().startswith("[")]
            end = nxt[0] if nxt else end
            i += 2
            continue
        if isinstance(part, str):
            table = re.compile(rf"^\s*\[\s*{re.escape(part)}\s*\]")
            key = re.compile(rf"^\s*{re.escape(part)}\s*=")
            hit = next((n for n in range(start, end) if table.match(lines[n]) or key.match(lines[n])), None)
            if hit is None:
                return found
            found = hit + 1
            if table.match(lines[hit]):
                start = hit
                nxt = [n for n in range(hit + 1, len(lines)) if lines[n].lstrip().startswith("[")]
                end = nxt[0] if nxt else len(lines)
        i += 1
    return found
