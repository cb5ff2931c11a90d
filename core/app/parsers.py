"""Argument definitions of the commands whose code is heavy to import (run, replay, emit, report, test, init).

``personae --help`` builds every subparser; keeping their arguments here, apart from the
code that runs them, lets it start without importing pydantic, Jinja, YAML or rapidfuzz.
"""

from __future__ import annotations

from typing import Any

from .arguments import identifier, key_value, seed_arg, text

#: Where ``personae test`` looks for test files by default.
DEFAULT_TESTS = "personas/tests"
#: The persona name ``personae init`` gives when none is asked for.
DEFAULT_NAME = "Probe"


def add_report_command(sub: Any) -> None:
    """Add ``personae report`` to the command line's subparsers."""
    rep = sub.add_parser(
        "report",
        help="what happened, from the SQLite log",
        description=(
            "Summarise the interaction log (read-only): messages per day and platform, event posts on the mission "
            "timeline, replies by rule (and rules that never fired), the fallback rate and the unanswered questions "
            "grouped by similarity, latency, delivery failures and 429s, subscribers over time."
        ),
    )
    rep.add_argument("--db", default="personae.db", metavar="FILE", help="SQLite log (default: personae.db)")
    rep.add_argument(
        "--personas", action="append", metavar="PATH", help="persona files or folders (repeatable; default: personas/)"
    )
    rep.add_argument("--persona", metavar="ID", type=identifier, help="only this persona")
    rep.add_argument("--run", metavar="ID", type=text, help="only this run")
    rep.add_argument("--since", metavar="ISO", type=text, help="rows logged at or after this UTC time")
    rep.add_argument(
        "--until", metavar="ISO", type=text, help="rows logged before this UTC time (a date: its whole day)"
    )
    rep.add_argument("--format", choices=["text", "json"], default="text", help="terminal output (default: text)")
    rep.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with charts")


def add_test_command(sub: Any) -> None:
    """Register ``personae test``."""
    t = sub.add_parser(
        "test",
        help="run conversation tests for personas",
        description=(
            "Run conversation tests (YAML files, personas/tests/ by default) offline: a virtual clock, "
            "no network, no database. Exit status 0 when every test passes, 1 otherwise."
        ),
    )
    t.add_argument("paths", nargs="*", metavar="PATH", help=f"test files or folders (default: {DEFAULT_TESTS}/)")
    t.add_argument(
        "--personas", action="append", metavar="PATH", help="persona files or folders (repeatable; default: personas/)"
    )
    t.add_argument("--format", choices=["text", "junit"], default="text", help="text, or JUnit XML on stdout for CI")
    t.add_argument("--update", action="store_true", help="rewrite failing expectations from what the personas say")
    t.add_argument("--coverage", action="store_true", help="list the rules, events and phrases no test exercised")
    t.add_argument("-k", dest="select", metavar="TEXT", help="only tests whose name contains TEXT")


def add_init_command(sub: Any) -> None:
    """Register ``personae init``."""
    p = sub.add_parser(
        "init",
        help="scaffold a persona, a timeline, a test file and bot.toml",
        description=(
            "Create a new project in DIR (default: the current folder): one persona, a small timeline with its "
            "cast, a test file covering the persona, and a bot.toml. Never overwrites a file."
        ),
    )
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to create it (default: .)")
    p.add_argument("--name", default=DEFAULT_NAME, type=text, help=f"the persona's name (default: {DEFAULT_NAME})")


def add_runtime_commands(sub: Any) -> None:
    """Register ``run``, ``replay`` and ``emit``."""
    run = sub.add_parser(
        "run",
        help="start the bot described by bot.toml",
        description=(
            "Start every adapter, timeline and schedule in bot.toml. Ctrl-C (SIGINT) or SIGTERM stops it "
            "gracefully: input stopped, queued messages delivered (up to 10 s), adapters disconnected, log flushed."
        ),
    )
    run.add_argument("--config", default="bot.toml", metavar="FILE", help="bot configuration (default: bot.toml)")
    run.add_argument("--until-done", action="store_true", help="exit when the replayed timelines are finished")
    run.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")

    rp = sub.add_parser(
        "replay",
        help="replay a timeline on a virtual clock",
        description=(
            "Replay a timeline (YAML, CSV or .ics) on a virtual clock. Each post is printed with its mission time. "
            "A replay that is killed can be finished with --resume RUN: nothing is posted twice and nothing skipped "
            "(at most the one message in flight at the kill can repeat)."
        ),
    )
    rp.add_argument("timeline", metavar="TIMELINE", help="timeline file")
    rp.add_argument(
        "--speed",
        default=None,
        help="mission seconds per real second, or 'max' (default: 3600; with --resume, the run's unless given)",
    )
    rp.add_argument("--from", dest="start", metavar="DATE", help="start at this mission time (ISO 8601, UTC)")
    rp.add_argument("--to", dest="end", metavar="DATE", help="stop after this mission time (a date: after that day)")
    rp.add_argument(
        "--adapter",
        action="append",
        metavar="NAME",
        type=identifier,
        help="deliver through this bot.toml adapter (repeatable)",
    )
    rp.add_argument("--dry-run", action="store_true", help="print the transcript; write nothing, send nothing")
    rp.add_argument("--resume", metavar="RUN", type=identifier, help="finish an interrupted replay run")
    rp.add_argument("--seed", type=seed_arg, default=None, help="seed for random picks (default: bot.toml's, else 0)")
    rp.add_argument("--config", default=None, metavar="FILE", help="bot configuration (default: bot.toml if present)")
    rp.add_argument(
        "--personas",
        action="append",
        metavar="PATH",
        help="persona files or folders (default: from bot.toml, else personas/)",
    )
    rp.add_argument(
        "--db",
        default=None,
        metavar="FILE",
        help="SQLite file or postgresql:// URL (default: from bot.toml, else personae.db)",
    )
    rp.add_argument("--no-schedules", action="store_true", help="do not run the personas' cron schedules")
    rp.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")

    em = sub.add_parser(
        "emit",
        help="raise one event now and deliver the reactions",
        description="Raise EVENT with key=value data, deliver the reactions through bot.toml's adapters, and exit.",
    )
    em.add_argument("event", metavar="EVENT", type=identifier)
    em.add_argument("data", nargs="*", metavar="KEY=VALUE", type=key_value, help="event data, e.g. site=Agilkia")
    em.add_argument("--persona", metavar="ID", type=identifier, help="only this persona reacts")
    em.add_argument("--config", default="bot.toml", metavar="FILE", help="bot configuration (default: bot.toml)")
    em.add_argument("--dry-run", action="store_true", help="print the reactions; write nothing, send nothing")
    em.add_argument(
        "--to",
        metavar="URL",
        help="post the event to a running bot's [http] intake instead (e.g. http://127.0.0.1:8787); prints its id",
    )
    em.add_argument(
        "--secret-env",
        default="PERSONAE_HTTP_SECRET",
        metavar="NAME",
        help="with --to: the environment variable holding the secret (default: PERSONAE_HTTP_SECRET)",
    )
