"""The ``personae`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..language.errors import ConfigError, Diagnostic, PersonaeError
from .arguments import count, identifier, seed_arg, text

EXAMPLES = """\
examples:
  personae run                          start the bot described by bot.toml
  personae chat philae                  talk with Philae in the terminal
  echo /status | personae chat philae   script a conversation
  personae lint personas/               check persona scripts and timelines
  personae replay personas/timelines/rosetta.yaml --speed max --dry-run
  personae log --persona philae --limit 20
  personae report --html report.html    what people asked, what went unanswered
  personae test                         run the conversation tests in personas/tests/
  personae init mybot --name ada        scaffold a persona, a timeline, a test and bot.toml
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="personae",
        description="Give a voice to things that cannot speak: persona scripts, chat platforms, mission timelines.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"personae {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    lint = sub.add_parser(
        "lint",
        help="check persona scripts and timelines",
        description=(
            "Check persona scripts and timelines. Folders are searched recursively. "
            "Exit status 0 when there are no errors (warnings allowed), 1 otherwise."
        ),
    )
    lint.add_argument("paths", nargs="*", default=None, metavar="PATH", help="files or folders (default: personas/)")
    lint.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    lint.add_argument("--strict", action="store_true", help="treat warnings as errors")

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of persona files",
        description="Print the JSON Schema of persona files (or timelines), for editors.",
    )
    which = schema.add_mutually_exclusive_group()
    which.add_argument("--timeline", action="store_true", help="the schema of timeline files instead")
    which.add_argument("--test", action="store_true", help="the schema of persona test files instead")

    chat = sub.add_parser(
        "chat",
        help="talk with a persona in the terminal",
        description=(
            "Talk with a persona. On a terminal it prompts; with piped input it reads one message per line and "
            "prints each reply as 'Name: text'. A line '!event NAME key=value ...' raises an event instead."
        ),
    )
    chat.add_argument("persona", metavar="PERSONA", type=identifier, help="persona id, e.g. philae")
    chat.add_argument(
        "--personas", action="append", metavar="PATH", help="persona files or folders (repeatable; default: personas/)"
    )
    chat.add_argument(
        "--db", default="personae.db", metavar="FILE", help="SQLite file or postgresql:// URL (default: personae.db)"
    )
    chat.add_argument("--no-log", action="store_true", help="do not log or persist state")
    chat.add_argument("--user", default=None, metavar="NAME", type=text, help="your display name (default: your login)")
    chat.add_argument("--seed", type=seed_arg, default=0, help="seed for random picks (default: 0)")

    log = sub.add_parser("log", help="read the interaction log", description="Query the SQLite interaction log.")
    log.add_argument(
        "--db", metavar="FILE", help="SQLite file or postgresql:// URL (default: bot.toml's database, else personae.db)"
    )
    log.add_argument("--persona", metavar="ID", type=identifier, help="only this persona")
    log.add_argument("--direction", choices=["in", "out", "event"], help="only this direction")
    log.add_argument(
        "--since", metavar="ISO", type=text, help="only rows at or after this UTC time, e.g. 2026-11-24T10:00"
    )
    log.add_argument("--limit", type=count, default=50, metavar="N", help="last N rows (default: 50; 0 = all)")
    log.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format")

    from .parsers import add_init_command, add_report_command, add_runtime_commands, add_test_command

    add_runtime_commands(sub)
    add_report_command(sub)
    add_test_command(sub)
    add_init_command(sub)
    return p


#: Seconds a thread may hold the GIL while another waits (CPython's default is 0.005).
#: A busy event loop releases and retakes the GIL at every poll, and each release
#: restarts a waiting thread's timer, so with the default the SQLite worker thread
#: can wait seconds for its turn and the log and outbox fall behind. A shorter
#: interval lets the waiting thread force its turn. bench/ uses the same value.
SWITCH_INTERVAL = 0.0002


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``personae`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        import asyncio  # imported here: `personae --help` should not pay for it (nor json, csv, getpass)

        return int(asyncio.run(_dispatch(args)) or 0)
    except KeyboardInterrupt:
        return 130
    except PersonaeError as exc:
        print_diagnostics(exc.diagnostics)
        return 1
    except ConfigError as exc:
        # One line per problem: a bot.toml reports all of its problems at once.
        sys.stderr.writelines(f"error: {line}\n" for line in str(exc).splitlines() or [""])
        return 1
    except OSError as exc:
        # A file the command was given cannot be read or written (too long a name, a folder, ...).
        sys.stderr.write(f"error: {_os_error(exc)}\n")
        return 1
    except Exception as exc:
        # A bug: say so in one line; PERSONAE_DEBUG=1 shows where.
        if os.environ.get("PERSONAE_DEBUG"):
            raise
        sys.stderr.write(
            f"error: internal error, please report it: {type(exc).__name__}: {exc} (PERSONAE_DEBUG=1 shows where)\n"
        )
        return 1


def _os_error(exc: OSError) -> str:
    """``path: reason`` for an OSError, without Python's ``[Errno N]`` prefix."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes) else str(exc.filename)
    if len(name) > 80:
        name = name[:77] + "..."
    return f"{name}: {reason}"


async def _dispatch(args: argparse.Namespace) -> int:
    from ..storage.store import StoreError

    try:
        if args.command == "lint":
            return cmd_lint(args)
        if args.command == "schema":
            return cmd_schema(args)
        if args.command == "chat":
            return await cmd_chat(args)
        if args.command == "log":
            return await cmd_log(args)
        if args.command == "report":
            from .report import cmd_report

            return cmd_report(args)
        if args.command == "test":
            from .test_command import cmd_test

            return await cmd_test(args)
        if args.command == "init":
            from .scaffold import cmd_init

            return cmd_init(args)
        from .commands import run_command

        return await run_command(args)
    except StoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


def print_diagnostics(diags: Sequence[Diagnostic], stream: Any = None) -> None:
    """One ``file:line:col: message`` line per diagnostic, on stderr."""
    stream = stream or sys.stderr
    for d in diags:
        stream.write(f"{d}\n")


def cmd_lint(args: argparse.Namespace) -> int:
    """``personae lint``."""
    from ..language.lint import lint

    paths = args.paths or ["personas"]
    missing = [p for p in paths if not any(ch in p for ch in "*?[") and not Path(p).exists()]
    if missing:
        raise ConfigError(f"no such file or folder: {', '.join(missing)}")
    result = lint(paths)
    # A note (what a check could not look at) never fails lint, even --strict.
    failing = [d for d in result.diagnostics if d.severity != "note"] if args.strict else result.errors
    if args.format == "json":
        import json

        sys.stdout.write(json.dumps([d.as_dict() for d in result.diagnostics], indent=2, ensure_ascii=False) + "\n")
    else:
        for d in result.diagnostics:
            sys.stdout.write(f"{d}\n")
        n_err = len(result.errors)
        n_note = sum(d.severity == "note" for d in result.diagnostics)
        n_warn = len(result.diagnostics) - n_err - n_note
        summary = (
            f"{result.files} file(s): {len(result.personas)} persona(s), {len(result.timelines)} timeline(s); "
            f"{n_err} error(s), {n_warn} warning(s)" + (f", {n_note} note(s)" if n_note else "")
        )
        sys.stderr.write(summary + "\n")
    return 1 if failing else 0


def cmd_schema(args: argparse.Namespace) -> int:
    """``personae schema``."""
    if args.test:
        from ..language.test_schema import json_schema as test_schema

        schema = test_schema()
    elif args.timeline:
        from ..timing.timeline import TimelineFile

        schema = TimelineFile.model_json_schema(by_alias=True)
        schema["title"] = "personae timeline"
    else:
        from ..language.schema import json_schema

        schema = json_schema()
    import json

    sys.stdout.write(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
    return 0


def _default_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "you")


async def cmd_chat(args: argparse.Namespace) -> int:
    """``personae chat``."""
    from ..engine.engine import Engine
    from ..engine.messages import User
    from ..language.errors import did_you_mean
    from ..language.loader import load_personas
    from ..storage.select import store_for
    from .chat import ChatSession

    personas = load_personas(args.personas or ["personas"])
    from ..language.lint import refusals

    # What lint rejects across files (an emit loop) is refused here too, with the same lines.
    refused = refusals(personas.values())
    if refused:
        raise PersonaeError(refused)
    if args.persona not in personas:
        hint = did_you_mean(args.persona, personas) or f" (known: {', '.join(sorted(personas)) or 'none'})"
        raise ConfigError(f"unknown persona '{args.persona}'{hint}")
    store = None if args.no_log else await store_for(args.db).open()
    try:
        engine = Engine(personas, store=store, seed=args.seed, platforms={"console": "plain"})
        await engine.restore()
        name = args.user or _default_user()
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        session = ChatSession(engine, args.persona, user=User(f"console:{name}", name), interactive=interactive)
        await session.run(sys.stdin)
    finally:
        if store is not None:
            await store.close()
    return 0


async def cmd_log(args: argparse.Namespace) -> int:
    """``personae log``."""
    from ..storage.select import store_for

    since = None
    if args.since:
        from datetime import UTC

        from ..timing.timeline import parse_time

        try:
            since = parse_time(args.since, default_tz=UTC).isoformat()
        except ValueError:
            raise ConfigError(f"--since: '{args.since}' is not an ISO 8601 time (e.g. 2026-11-24T10:00)") from None
    db = args.db
    if db is None:
        # Where `personae run` wrote it: the database bot.toml names, as `replay` and `emit` read it.
        from .commands import _database
        from .config import load_config

        config = load_config("bot.toml") if Path("bot.toml").exists() else None
        db = _database(config.model.bot.database, config) if config else "personae.db"
    async with store_for(db, readonly=True) as store:
        rows = await store.query_log(
            persona=args.persona, direction=args.direction, since=since, limit=args.limit or None
        )
    if args.format == "json":
        import json

        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    elif args.format == "csv":
        import csv
        import io

        buf = io.StringIO()
        fields = list(rows[0]) if rows else ["id", "ts", "direction", "persona", "text"]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(show_lines=False, header_style="bold")
        cols = ("ts", "dir", "persona", "platform", "chat", "user", "event", "text", "rule", "status", "ms")
        for col in cols:
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                (r["ts"] or "")[:19].replace("T", " "),
                r["direction"],
                r["persona"] or "",
                r["platform"] or "",
                r["chat"] or "",
                r["user_name"] or r["user"] or "",
                r["event"] or "",
                r["text"] or "",
                Path(r["rule"]).name if r["rule"] else "",
                "" if r["status"] in (None, "ok") else r["status"],
                "" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}",
            )
        # Piped output keeps whole lines rather than wrapping at 80 columns.
        Console(highlight=False, width=None if sys.stdout.isatty() else 240).print(table)
    return 0
