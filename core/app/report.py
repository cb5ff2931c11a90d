"""``personae report``: what happened, read from the SQLite log (read-only).

The database is opened with plain :mod:`sqlite3` on a read-only URI (the
same two tries as :class:`~personae.storage.store.Store`): a report never
writes, and reads what a running bot is writing. Rows are streamed once in
id order; a reply is paired with the message before it in its chat, which is
how the engine logs an exchange (two consecutive rows).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..engine.persona import Persona
from ..language.errors import ConfigError, did_you_mean
from ..storage.store import SCHEMA_VERSION
from .questions import group_questions

#: A delivery error that says the platform throttled the bot (HTTP 429 and its wordings).
RATE_LIMITED = re.compile(r"\b429\b|rate.?limit|flood control|retry after|too many requests", re.IGNORECASE)
#: Columns the report reads; a table without them is not a personae log.
_NEEDED = {"id", "ts", "direction", "persona", "platform", "chat", "user", "text", "rule", "latency_ms", "status",
           "event", "run", "mission_time"}  # fmt: skip
PERCENTILES = (50, 90, 95, 99)


class ReportError(Exception):
    """The database cannot be reported on (missing, not SQLite, not a personae log, empty)."""


@dataclass(frozen=True, slots=True)
class Filters:
    """Which rows count: a persona, a run, and a ``[since, until)`` window on the UTC log time."""

    persona: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    run: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready form."""
        return {
            "persona": self.persona,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "run": self.run,
        }


def parse_bound(option: str, text: str, *, end: bool) -> datetime:
    """An ISO 8601 time for ``--since``/``--until``; as ``--until``, a date alone means its whole day."""
    from ..timing.timeline import parse_time

    try:
        value = parse_time(text, default_tz=UTC)
    except ValueError:
        raise ConfigError(f"{option}: '{text}' is not an ISO 8601 time (e.g. 2026-11-24 or 2026-11-24T10:00)") from None
    if end and re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", text):
        value += timedelta(days=1)
    return value


def _stamp(value: datetime) -> str:
    """A time as the log writes it (milliseconds, +00:00), so text comparison is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+00:00"


@contextlib.contextmanager
def open_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a personae log, or :class:`ReportError` with one line saying why not."""
    try:
        if path.is_dir():
            raise ReportError(f"{path}: is a folder, not a database file")
        if not path.exists():
            raise ReportError(f"{path}: no such database")
        if path.stat().st_size == 0:
            raise ReportError(f"{path}: empty file, not a personae database (nothing logged yet)")
        quoted = urllib.parse.quote(str(path.resolve()))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    con: sqlite3.Connection | None = None
    last: Exception | None = None
    # mode=ro needs to create the -shm file of a WAL database; in a read-only folder, immutable=1 reads it as is.
    for uri in (f"file:{quoted}?mode=ro", f"file:{quoted}?immutable=1"):
        try:
            con = sqlite3.connect(uri, uri=True)
            con.execute("SELECT count(*) FROM sqlite_master").fetchall()
            break
        except sqlite3.DatabaseError as exc:
            last = exc
            if con is not None:
                con.close()
            con = None
            if "not a database" in str(exc) or "malformed" in str(exc):
                break
    if con is None:
        text = str(last)
        if "not a database" in text or "malformed" in text:
            raise ReportError(f"{path}: not a SQLite database")
        raise ReportError(f"{path}: cannot open database ({text})")
    try:
        _check_schema(path, con)
        yield con
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path}: cannot read the log ({exc})") from None
    finally:
        con.close()


def _check_schema(path: Path, con: sqlite3.Connection) -> None:
    version = con.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        raise ReportError(f"{path}: empty database, not a personae log (nothing logged yet)")
    if "interactions" not in tables:
        raise ReportError(f"{path}: not a personae database (no interactions table)")
    columns = {r[1] for r in con.execute("PRAGMA table_info(interactions)")}
    missing = _NEEDED - columns
    if missing:
        raise ReportError(f"{path}: not a personae database (interactions has no {', '.join(sorted(missing))})")
    if version > SCHEMA_VERSION:
        raise ReportError(f"{path}: database schema v{version} is newer than this personae (v{SCHEMA_VERSION})")
    if con.execute("SELECT 1 FROM interactions LIMIT 1").fetchone() is None:
        raise ReportError(f"{path}: the log is empty (nothing logged yet)")


def _where(filters: Filters, *, persona: bool = True) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if persona and filters.persona:
        clauses.append("persona = ?")
        args.append(filters.persona)
    if filters.run:
        clauses.append("run = ?")
        args.append(filters.run)
    if filters.since:
        clauses.append("ts >= ?")
        args.append(_stamp(filters.since))
    if filters.until:
        clauses.append("ts < ?")
        args.append(_stamp(filters.until))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _s(value: Any) -> str | None:
    """A column as text: a hand-edited or damaged log may hold numbers or blobs where text belongs."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _rule_key(persona: str | None, where: str) -> tuple[str, str, str]:
    """A rule's identity across checkouts: persona, file name and line (the log holds the path it ran from)."""
    file, _, line = where.rpartition(":")
    return (persona or "", Path(file).name, line)


def _percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def _rules(personas: Mapping[str, Persona], only: str | None) -> list[dict[str, Any]]:
    """Every rule of the personas, in file order: replies, fallback, event reactions, schedule."""
    out: list[dict[str, Any]] = []
    for pid in sorted(personas):
        if only and pid != only:
            continue
        p = personas[pid]
        actions = [
            *(("reply", a) for a in p.replies),
            *([("fallback", p.fallback)] if p.fallback else []),
            *(("event", a) for a in p.events.values()),
            *(("schedule", s.action) for s in p.schedule),
        ]
        for kind, action in actions:
            out.append({"persona": pid, "kind": kind, "name": action.name, "rule": action.where, "count": 0})
    return out


def build_report(db: Path, personas: Mapping[str, Persona], filters: Filters) -> dict[str, Any]:
    """Everything ``personae report`` shows, as one JSON-ready mapping."""
    with open_readonly(db) as con:
        return _gather(db, con, personas, filters)


def _gather(db: Path, con: sqlite3.Connection, personas: Mapping[str, Persona], filters: Filters) -> dict[str, Any]:
    if filters.persona and filters.persona not in personas:
        known = {r[0] for r in con.execute("SELECT DISTINCT persona FROM interactions WHERE persona IS NOT NULL")}
        if filters.persona not in known:
            choices = known | set(personas)
            hint = did_you_mean(filters.persona, choices) or f" (known: {', '.join(sorted(choices)) or 'none'})"
            raise ReportError(f"--persona: unknown persona '{filters.persona}'{hint}")
    if (
        filters.run
        and con.execute("SELECT 1 FROM interactions WHERE run = ? LIMIT 1", (filters.run,)).fetchone() is None
    ):
        runs = [r[0] for r in con.execute("SELECT DISTINCT run FROM interactions WHERE run IS NOT NULL")]
        hint = did_you_mean(filters.run, runs) or f" (runs in the log: {', '.join(sorted(runs)[:10]) or 'none'})"
        raise ReportError(f"--run: no rows of run '{filters.run}'{hint}")
    rules = _rules(personas, filters.persona)
    by_key = {_rule_key(r["persona"], r["rule"]): r for r in rules}
    fallback_keys = {k for k, r in by_key.items() if r["kind"] == "fallback"}
    unknown_rules: Counter[tuple[str, str]] = Counter()

    per_day: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    statuses: Counter[str] = Counter()
    event_posts: list[dict[str, Any]] = []
    events_raised = 0
    latencies: list[float] = []
    replies = 0
    fallbacks = 0
    unanswered: list[tuple[str, str]] = []
    last_in: dict[tuple[Any, ...], str] = {}

    where, args = _where(filters)
    sql = (
        "SELECT direction, persona, platform, chat, user, text, rule, latency_ms, status, event, ts, mission_time"
        f" FROM interactions{where} ORDER BY id"
    )
    for row in con.execute(sql, args):
        direction, persona, platform, chat, user, text, rule, _, status, event, ts, mission = map(_s, row)
        elapsed = row[7] if isinstance(row[7], int | float) else None
        day = (ts or "")[:10]
        if direction == "event":
            events_raised += 1
            continue
        plat = platform or "?"
        per_day[(day, plat)][direction or "?"] += 1
        if direction == "in":
            statuses[status or "ok"] += 1
            last_in[(persona, platform, chat, user)] = text or ""
            continue
        if event is not None or user is None:
            event_posts.append(
                {"mission_time": mission, "ts": ts, "persona": persona, "platform": platform, "event": event}
            )
        else:
            replies += 1
            if elapsed is not None:
                latencies.append(float(elapsed))
        if rule:
            key = _rule_key(persona, rule)
            found = by_key.get(key)
            if found is not None:
                found["count"] += 1
            else:
                unknown_rules[(persona or "", rule)] += 1
            if key in fallback_keys and user is not None:
                fallbacks += 1
                asked = last_in.pop((persona, platform, chat, user), None)
                if asked is not None:
                    unanswered.append((persona or "", asked))

    latencies.sort()
    latency: dict[str, Any] = {"count": len(latencies)}
    if latencies:
        latency.update({f"p{p}": _percentile(latencies, p) for p in PERCENTILES})
        latency["max"] = latencies[-1]
    days: list[dict[str, Any]] = [
        {"day": day, "platform": plat, "in": c["in"], "out": c["out"]} for (day, plat), c in sorted(per_day.items())
    ]
    messages_in = sum(d["in"] for d in days)
    return {
        "database": str(db),
        "filters": filters.as_dict(),
        "totals": {
            "messages_in": messages_in,
            "messages_out": sum(d["out"] for d in days),
            "replies": replies,
            "event_posts": len(event_posts),
            "events_raised": events_raised,
        },
        "incoming_status": dict(sorted(statuses.items(), key=lambda kv: (-kv[1], kv[0]))),
        "messages_per_day": days,
        "event_posts": sorted(event_posts, key=lambda e: (e["mission_time"] or "", e["persona"] or "")),
        "rules": rules,
        "never_fired": [r["rule"] for r in rules if r["count"] == 0],
        "unknown_rules": [{"persona": p, "rule": r, "count": n} for (p, r), n in sorted(unknown_rules.items())],
        "fallback": {"replies": replies, "fallbacks": fallbacks, "rate": fallbacks / replies if replies else 0.0},
        "unanswered": [g.as_dict() for g in group_questions(unanswered)],
        "latency_ms": latency,
        "delivery": _delivery(con, filters),
        "subscribers": _subscribers(con, filters),
    }


def _table_columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def _delivery(con: sqlite3.Connection, filters: Filters) -> dict[str, Any]:
    """Outbox outcomes per adapter, failures by error, rate limits (429) and retries."""
    needed = {"adapter", "persona", "status", "attempts", "last_error", "created", "run"}
    if not needed <= _table_columns(con, "outbox"):
        return {"by_status": [], "errors": [], "rate_limited": 0, "retried": 0}
    clauses, args = [], []
    if filters.persona:
        clauses.append("persona = ?")
        args.append(filters.persona)
    if filters.run:
        clauses.append("run = ?")
        args.append(filters.run)
    if filters.since:
        clauses.append("created >= ?")
        args.append(filters.since.isoformat(timespec="microseconds"))
    if filters.until:
        clauses.append("created < ?")
        args.append(filters.until.isoformat(timespec="microseconds"))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    by_status = [
        {"adapter": a, "status": s, "count": n}
        for a, s, n in con.execute(
            f"SELECT adapter, status, count(*) FROM outbox{where} GROUP BY adapter, status ORDER BY adapter, status",
            args,
        )
    ]
    errors: Counter[tuple[str, str, str]] = Counter()
    rate_limited = retried = 0
    for row in con.execute(f"SELECT adapter, status, attempts, last_error FROM outbox{where}", args):
        adapter, status, error = str(row[0]), str(row[1]), _s(row[3])
        attempts = row[2] if isinstance(row[2], int) else 0
        if attempts > 1:
            retried += 1
        if error:
            errors[(adapter, status, error)] += 1
            if RATE_LIMITED.search(error):
                rate_limited += 1
    return {
        "by_status": by_status,
        "errors": [
            {"adapter": a, "status": s, "error": e, "count": n}
            for (a, s, e), n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "rate_limited": rate_limited,
        "retried": retried,
    }


def _subscribers(con: sqlite3.Connection, filters: Filters) -> list[dict[str, Any]]:
    """Subscribers per day and adapter, cumulative (the table keeps current subscriptions only)."""
    if not {"adapter", "persona", "created"} <= _table_columns(con, "subscriptions"):
        return []
    clauses, args = [], []
    if filters.persona:
        clauses.append("persona = ?")
        args.append(filters.persona)
    if filters.until:
        clauses.append("created < ?")
        args.append(filters.until.isoformat(timespec="microseconds"))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    totals: Counter[str] = Counter()
    out = []
    for day, adapter, n in con.execute(
        f"SELECT substr(created, 1, 10) AS day, adapter, count(*) FROM subscriptions{where}"
        " GROUP BY day, adapter ORDER BY day, adapter",
        args,
    ):
        totals[adapter] += n
        out.append({"day": day, "adapter": adapter, "new": n, "total": totals[adapter]})
    return out


def cmd_report(args: Any) -> int:
    """``personae report``."""
    import json
    import sys

    from ..language.loader import load_personas

    filters = Filters(
        persona=args.persona,
        since=parse_bound("--since", args.since, end=False) if args.since else None,
        until=parse_bound("--until", args.until, end=True) if args.until else None,
        run=args.run,
    )
    if filters.since and filters.until and filters.since >= filters.until:
        raise ConfigError(f"--since {args.since} is not before --until {args.until}")
    paths = args.personas or ["personas"]
    missing = [p for p in paths if not any(ch in p for ch in "*?[") and not Path(p).exists()]
    if missing:
        raise ConfigError(f"--personas: no such file or folder: {', '.join(missing)} (the rules are read from them)")
    html_path = Path(args.html) if args.html else None
    if html_path is not None and (html_path.is_dir() or not html_path.parent.is_dir()):
        where = "is a folder" if html_path.is_dir() else f"folder {html_path.parent} does not exist"
        raise ConfigError(f"--html {html_path}: {where}")
    personas = load_personas(paths)
    try:
        report = build_report(Path(args.db), personas, filters)
    except ReportError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if html_path is not None:
        from .report_html import render_html, write_atomic

        write_atomic(html_path, render_html(report))
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        from rich.console import Console

        from .report_text import print_report

        print_report(report, Console(highlight=False, width=None if sys.stdout.isatty() else 160))
    return 0
