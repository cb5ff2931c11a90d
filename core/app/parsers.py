"""Argument definitions of the commands whose code is heavy to import (report, test, init).

``personae --help`` builds every subparser; keeping their arguments here, apart from the
code that runs them, lets it start without importing pydantic, Jinja, YAML or rapidfuzz.
"""

from __future__ import annotations

from typing import Any

from .arguments import identifier, text

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
