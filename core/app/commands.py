"""``personae run``, ``replay`` and ``emit``: build a bot from bot.toml and drive it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..language.errors import ConfigError, PersonaeError, did_you_mean

log = logging.getLogger("personae")


async def run_command(args: argparse.Namespace) -> int:
    """Dispatch to the runtime subcommands."""
    _setup_logging(getattr(args, "verbose", False))
    if args.command == "run":
        return await cmd_run(args)
    if args.command == "replay":
        return await cmd_replay(args)
    if args.command == "emit":
        return await cmd_emit(args)
    raise ConfigError(f"unknown command {args.command}")


def _redact_stderr(redactor: Any) -> None:
    """Mask secrets in everything this process writes to stderr from now on.

    Log records are masked where they are made; this also covers what reaches
    stderr without logging: warnings, a thread's traceback, a library's print.
    """
    from ..delivery.secrets import RedactingStream

    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr, redactor)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # HTTP clients log every request URL at INFO; those URLs carry tokens.
    for noisy in ("httpx", "httpcore", "telegram", "discord", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- building


@dataclass
class Setup:
    """Everything a command needs, built from bot.toml and the command line."""

    personas: dict[str, Any]
    adapters: list[Any]
    database: Path | str  # a SQLite file, or a postgresql:// URL
    seed: int
    config: Any
    persona_paths: list[str]


#: The default --speed of ``personae replay`` (``None`` in argparse, so a resume can tell it was not given).
_DEFAULT_SPEED = "3600"


def _parse_when(text: str | None, flag: str, *, end: bool = False) -> datetime | None:
    """An option's time; with ``end``, a bare date is its whole day (``--to 2014-11-15`` includes the 15th)."""
    from ..timing.timeline import parse_time
    from .replay import parse_end

    if not text:
        return None
    try:
        return parse_end(text) if end else parse_time(text, default_tz=UTC)
    except ValueError:
        raise ConfigError(
            f"{flag}: '{text}' is not an ISO 8601 date or time (e.g. 2014-11-12 or 2014-11-12T15:00Z)"
        ) from None


def build_adapters(
    config: Any,
    personas: Mapping[str, Any],
    *,
    only: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Any]:
    """Instantiate the adapters of bot.toml (or only those named)."""
    from personae.adapters.base import AdapterConfig, OptionError

    from .config import adapter_class

    environ = os.environ if environ is None else environ
    adapters = []
    names = [config.adapter_name(i) for i in range(len(config.model.adapters))]
    for wanted in only or ():
        if wanted not in names:
            raise ConfigError(
                f"--adapter: no adapter named '{wanted}' in {config.path}{did_you_mean(wanted, names)}"
                f" (known: {', '.join(names) or 'none'})"
            )
    unknown = [
        config.error(("adapters", i, "persona"), f"unknown persona '{e.persona}'{did_you_mean(e.persona, personas)}")
        for i, e in enumerate(config.model.adapters)
        if e.persona not in personas and not (only and names[i] not in only)
    ]
    if unknown:
        raise ConfigError("\n".join(map(str, unknown)))
    for i, entry in enumerate(config.model.adapters):
        name = names[i]
        if only and name not in only:
            continue
        try:
            cls = adapter_class(entry.type)
        except ConfigError as exc:
            raise config.error(("adapters", i, "type"), str(exc)) from None
        options = dict(entry.model_extra or {})
        if cls.option_names is not None:
            for key in options:
                if key not in cls.option_names:
                    raise config.error(
                        ("adapters", i, key),
                        f"unknown option '{key}' for {entry.type}{did_you_mean(key, cls.option_names)}",
                    )
        options.setdefault("display_name", personas[entry.persona].name)
        cfg = AdapterConfig(
            name, entry.persona, tuple(map(str, entry.channels)), tuple(map(str, entry.admins)), options
        )
        try:
            adapters.append(cls.create(cfg, environ))
        except OptionError as exc:
            raise config.error(("adapters", i, exc.key), str(exc)) from None
    return adapters


def _default_console(personas: Mapping[str, Any]) -> list[Any]:
    from personae.adapters.base import AdapterConfig
    from personae.adapters.console import ConsoleAdapter

    return [
        ConsoleAdapter(AdapterConfig(f"console-{pid}", pid, options={"display_name": p.name}))
        for pid, p in sorted(personas.items())
    ]


def _load_setup(
    config_path: str | None,
    *,
    personas_arg: list[str] | None,
    db_arg: str | None,
    seed_arg: int | None,
    only: Sequence[str] | None,
) -> Setup:
    from ..language.loader import load_personas
    from .config import load_config

    config = None
    # An explicit --personas means "these personas, console out": bot.toml is used only when named.
    if config_path is not None or (personas_arg is None and Path("bot.toml").exists()):
        config = load_config(config_path or "bot.toml")
    persona_paths = personas_arg or (config.persona_paths() if config else ["personas"])
    personas = load_personas(persona_paths)
    if not personas:
        raise ConfigError(f"no personas found in {', '.join(persona_paths)}")
    if config is not None and config.model.adapters:
        adapters = build_adapters(config, personas, only=only)
    else:
        if only:
            raise ConfigError("--adapter needs a bot.toml with [[adapters]]")
        adapters = _default_console(personas)
    database = (
        _database(db_arg)
        if db_arg
        else (_database(config.model.bot.database, config) if config else Path("personae.db"))
    )
    seed = seed_arg if seed_arg is not None else (config.model.bot.seed if config else 0)
    return Setup(personas, adapters, database, seed, config, persona_paths)


def _database(setting: str, config: Any = None) -> Path | str:
    """The ``--db`` or ``bot.toml`` database: a URL as it is, a file relative to bot.toml's folder."""
    from ..storage.select import is_url

    if is_url(setting):
        return setting
    return config.resolve(setting) if config is not None else Path(setting)


def _stamp_printer(personas: Mapping[str, Any]) -> Any:
    from personae.adapters.console import mission_stamp

    from ..engine.messages import shown_lines

    def show(o: Any) -> None:
        name = personas[o.persona].name if o.persona in personas else o.persona
        stamp = mission_stamp(o.at.isoformat() if o.at else None)
        # The same lines the console adapter shows: the text, then one line per file.
        for line in shown_lines(o.text, o.media):
            sys.stdout.write(f"{stamp}  {name}: {line.replace(chr(10), ' ⏎ ')}\n")
        sys.stdout.flush()

    return show


async def _start_unless_stopped(bot: Any, stop: asyncio.Event, *, schedules: bool) -> bool:
    """Start ``bot``; False when a signal came first (a platform may be down, start retrying for ever)."""
    starting = asyncio.create_task(bot.start(schedules=schedules))
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    if starting.cancelled():
        return False
    starting.result()  # raises what the start raised (a refused token: AdapterStartError)
    return True


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


# --------------------------------------------------------------------------- replay


async def cmd_replay(args: argparse.Namespace) -> int:
    """``personae replay``."""
    from ..delivery.secrets import Redactor, install_log_redaction
    from ..storage.select import shown, store_for
    from ..timing.clock import VirtualClock
    from ..timing.timeline import load_timeline
    from .replay import content_hash, new_run_id, nothing_to_play, replay
    from .runtime import Bot, BotOptions
    from .screen import open_screen

    speed = _parse_speed(args.speed or _DEFAULT_SPEED)
    start = _parse_when(args.start, "--from")
    end = _parse_when(args.end, "--to", end=True)
    if start and end and start > end:
        raise ConfigError(f"--from {args.start} is after --to {args.end}")
    if args.dry_run and args.resume:
        raise ConfigError("--dry-run and --resume cannot be combined (a dry run writes nothing to resume)")
    path = Path(args.timeline)
    if not path.exists():
        raise ConfigError(f"{path}: no such timeline file")
    timeline = load_timeline(path)
    if not args.resume:
        empty = nothing_to_play(timeline, start, end, f"--from {args.start}", f"--to {args.end}")
        if empty:
            raise ConfigError(empty)
    setup = _load_setup(args.config, personas_arg=args.personas, db_arg=args.db, seed_arg=args.seed, only=args.adapter)

    from ..language.lint import unplayable

    problems = unplayable(setup.personas.values(), timeline)
    if problems:
        raise PersonaeError(problems)

    store = None
    run = args.resume or new_run_id()
    resume_at: datetime | None = None
    relog = True
    digest = content_hash(timeline)
    options = {
        "timeline": str(path.resolve()),
        "speed": args.speed or _DEFAULT_SPEED,
        "from": args.start,
        "to": args.end,
        "seed": setup.seed,
    }
    if not args.dry_run:
        store = await store_for(setup.database).open()
        try:
            if args.resume:
                record = await store.replay_get(run)
                if record is None:
                    raise ConfigError(f"--resume: no replay run '{run}' in {shown(setup.database)}")
                saved = record["options"]
                if record["timeline_hash"] not in (None, digest):
                    raise ConfigError(
                        f"--resume: {path} is not the timeline run {run} replayed ({saved.get('timeline')}):"
                        " its events differ, so the run cannot be finished with it"
                    )
                if record["status"] == "done":
                    await store.close()
                    sys.stderr.write(f"replay {run} already finished\n")
                    return 0
                start, end = _parse_when(saved.get("from"), "--from"), _parse_when(saved.get("to"), "--to", end=True)
                _same_as_saved(run, args, saved, start, end)
                # A new --speed applies (how fast to finish is the resumer's choice); the rest is the run's.
                speed = _parse_speed(args.speed or saved.get("speed") or _DEFAULT_SPEED)
                setup.seed = int(saved.get("seed", setup.seed))
                if record["position"]:
                    resume_at = datetime.fromisoformat(record["position"])
                # A run from before schema v3 has no hash, and its log rows no key: they would be written twice.
                relog = record["timeline_hash"] is not None
            else:
                await store.replay_start(run, timeline.id, options, timeline_hash=digest)
        except BaseException:
            await store.close()
            raise
    first = timeline.events[0].at
    clock_start = min(first, start) if start else first
    fast_until = max(filter(None, [start, resume_at]), default=None)
    clock = VirtualClock(clock_start, speed, fast_until=fast_until)
    redactor = Redactor()
    install_log_redaction(redactor)
    _redact_stderr(redactor)
    bot = Bot(
        setup.personas,
        setup.adapters,
        store=store,
        clock=clock,
        options=BotOptions(seed=setup.seed, persist_state=False, run=run),
        transcript=_stamp_printer(setup.personas) if args.dry_run else None,
        redactor=redactor,
    )
    if store is not None:
        bot.outlet.linger = 0.02 if speed is None else 0.0

        async def written(at: datetime | None) -> None:
            if at is not None:
                await store.replay_progress(run, at.isoformat())

        bot.outlet.on_written = written
        sys.stderr.write(
            f"replay run {run}" + (f" (resuming from {resume_at.isoformat()})" if resume_at else "") + "\n"
        )
    in_window = [e for e in timeline.window(start, end)]
    stop = asyncio.Event()
    _install_signals(stop)
    screen = open_screen(setup.adapters, now=clock.now, on_quit=stop.set)
    progress = screen.progress(len(in_window), timeline.id)
    try:
        if not await _start_unless_stopped(bot, stop, schedules=False):
            return 130  # stopped while a platform was still unreachable
        task = asyncio.create_task(
            replay(
                bot,
                timeline,
                run=run,
                start=start,
                end=end,
                resume_at=resume_at,
                schedules=not args.no_schedules,
                progress=progress,
                relog=relog,
            )
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            sys.stderr.write(f"\nstopped; finish it with: personae replay {args.timeline} --resume {run}\n")
            return 130
        stopper.cancel()
        task.result()
    finally:
        progress.close()
        await bot.stop()
        if store is not None:
            await store.close()
        await screen.close()
    return 0


def _same_as_saved(
    run: str, args: argparse.Namespace, saved: Mapping[str, Any], start: datetime | None, end: datetime | None
) -> None:
    """Refuse a --seed, --from or --to that would make a resumed run a different one (they were ignored)."""
    given = [
        ("--seed", args.seed, saved.get("seed"), args.seed is not None and args.seed != saved.get("seed")),
        ("--from", args.start, saved.get("from"), args.start and _parse_when(args.start, "--from") != start),
        ("--to", args.end, saved.get("to"), args.end and _parse_when(args.end, "--to", end=True) != end),
    ]
    for flag, value, was, differs in given:
        if differs:
            before = f"{flag} {was}" if was is not None else f"no {flag}"
            raise ConfigError(
                f"--resume: run {run} was started with {before}, not {flag} {value}; a resumed run keeps it"
                f" (leave {flag} out, or start a new run)"
            )


def _parse_speed(text: str | float) -> float | None:
    if isinstance(text, str) and text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--speed: '{text}' is not a number or 'max'") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--speed: '{text}' is not a positive number (or 'max')")
    return value


# --------------------------------------------------------------------------- run


async def cmd_run(args: argparse.Namespace) -> int:
    """``personae run``."""
    from ..delivery.secrets import Redactor, install_log_redaction
    from ..delivery.sharing import Sharing
    from ..language.loader import load_personas
    from ..storage.select import store_for
    from ..timing.clock import Clock, SystemClock, VirtualClock
    from ..timing.timeline import load_timeline
    from .config import load_config
    from .replay import content_hash, live, new_run_id, nothing_to_play, replay, shared_run_id
    from .runtime import Bot, BotOptions, Commands, watch_files
    from .screen import Progress, open_screen
    from .shared_replay import SharedRun, play_shared

    config = load_config(args.config, files=True)
    bot_cfg = config.model.bot
    personas = load_personas(config.persona_paths())
    if not personas:
        # Paths in bot.toml are relative to its folder: show where they were looked for.
        where = ", ".join(str(Path(p).absolute()) for p in config.persona_paths())
        raise ConfigError(f"{config.path}: bot.personas: no personas found in {where} (paths are relative to bot.toml)")
    if not config.model.adapters:
        raise ConfigError(f'{config.path}: no [[adapters]]: add at least one (type = "console" needs no token)')
    adapters = build_adapters(config, personas)
    timelines = []
    for i, entry in enumerate(config.model.timelines):
        path = config.resolve(entry.file)
        if not path.exists():
            raise config.error(("timelines", i, "file"), f"no such file: {path}")
        timelines.append((entry, load_timeline(path)))
    from ..language.lint import unplayable

    problems = [d for _, t in timelines for d in unplayable(personas.values(), t)]
    if problems:
        raise PersonaeError(problems)
    replays = [(e, t) for e, t in timelines if e.mode == "replay"]
    lives = [(e, t) for e, t in timelines if e.mode == "live"]
    if len(replays) > 1 or (replays and lives):
        raise config.error(
            ("timelines",), "one replayed timeline at a time, and not mixed with live ones (they need different clocks)"
        )

    clock: Clock = SystemClock()
    run_id: str | None = None
    if replays:
        entry, timeline = replays[0]
        since = f"from {entry.from_.isoformat()}" if entry.from_ else "the start"
        until = f"to {entry.to.isoformat()}" if entry.to else "the end"
        empty = nothing_to_play(timeline, entry.from_, entry.to, since, until)
        if empty:
            index = config.model.timelines.index(entry)
            raise config.error(("timelines", index, "from" if entry.from_ else "to"), empty)
        speed = None if entry.speed == "max" else float(entry.speed)
        start = entry.from_.astimezone(UTC) if entry.from_ else None
        first = timeline.events[0].at
        clock = VirtualClock(min(first, start) if start else first, speed, fast_until=start)
        run_id = new_run_id()

    redactor = Redactor()
    install_log_redaction(redactor)
    _redact_stderr(redactor)
    store = await store_for(_database(bot_cfg.database, config)).open()
    session = None
    if replays and store.coordination is not None:
        # The workers of a shared database play the replay as one run: the same id in each (and
        # after a restart), played by the holder of its lock (see personae.app.shared_replay).
        # Replies to chats keep a session of this process's own.
        entry, timeline = replays[0]
        session, run_id = run_id, shared_run_id(content_hash(timeline), bot_cfg.seed, entry.from_, entry.to)
    commands = Commands(subscribe=bot_cfg.subscribe_command, unsubscribe=bot_cfg.unsubscribe_command)

    def reload() -> Mapping[str, Any]:
        return load_personas(config.persona_paths())

    bot = Bot(
        personas,
        adapters,
        store=store,
        clock=clock,
        options=BotOptions(
            seed=bot_cfg.seed,
            max_depth=bot_cfg.max_depth,
            commands=commands,
            persist_state=not replays,
            run=run_id,
            session=session,
            sharing=Sharing(lease=bot_cfg.lease),
        ),
        redactor=redactor,
        reload=reload,
    )
    if not replays:
        await bot.engine.restore()
    from .replay_control import Replayable, ReplayControl

    bot.replays = ReplayControl(
        bot,
        [Replayable(t, None if e.speed == "max" else float(e.speed), e.schedules) for e, t in timelines],
    )
    stop = asyncio.Event()
    _install_signals(stop)
    screen = open_screen(adapters, now=clock.now, on_quit=stop.set)
    tasks: list[asyncio.Task[Any]] = []
    progress: Progress | None = None
    failed_start = True  # a refused start is one error line, with no "stopped." after it
    intake = None
    try:
        if config.model.http is not None:
            # Listening before the adapters start: /healthz answers, /readyz says what is missing,
            # and posted events are stored (played once the bot runs).
            intake = await _start_intake(config, bot, redactor)
        schedules = not replays and all(e.schedules for e, _ in timelines)
        started = await _start_unless_stopped(bot, stop, schedules=schedules)
        failed_start = False
        if not started:
            return 0  # a signal while a platform was still unreachable
        if intake is not None:
            intake.play()
        names = ", ".join(f"{a.name}" for a in adapters)
        sys.stderr.write(f"personae running: {len(personas)} persona(s), adapters: {names}. Ctrl-C to stop.\n")
        if bot_cfg.reload:

            async def on_change() -> None:
                try:
                    fresh = reload()
                except PersonaeError as exc:
                    for d in exc.diagnostics:
                        sys.stderr.write(f"{d}\n")
                    sys.stderr.write("reload failed: still running the last good version\n")
                    return
                bot.engine.reload(fresh)
                sys.stderr.write(f"reloaded {len(fresh)} persona(s)\n")

            def files() -> list[Path]:
                from ..language.loader import persona_files

                return persona_files(config.persona_paths())

            tasks.append(watch_files(files, on_change))
        done: asyncio.Task[Any] | None = None
        if replays:
            entry, timeline = replays[0]
            saved = {
                "timeline": str(config.resolve(entry.file)),
                "speed": entry.speed,
                "from": entry.from_.isoformat() if entry.from_ else None,
                "to": entry.to.isoformat() if entry.to else None,
                "seed": bot_cfg.seed,
            }
            total = len(timeline.window(entry.from_, entry.to))
            progress = bot.metrics.track(screen.progress(total, timeline.id), total)
        if replays and store.coordination is not None:
            shared = SharedRun(
                run_id or "",
                timeline,
                saved,
                content_hash(timeline),
                entry.from_,
                entry.to,
                entry.schedules,
                poll=bot.options.sharing.poll,
            )
            done = asyncio.create_task(play_shared(bot, store.coordination, shared, progress=progress))
            tasks.append(done)
        elif replays:
            await store.replay_start(run_id or "", timeline.id, saved, timeline_hash=content_hash(timeline))
            done = asyncio.create_task(
                replay(
                    bot,
                    timeline,
                    run=run_id or "",
                    start=entry.from_,
                    end=entry.to,
                    schedules=entry.schedules,
                    progress=progress,
                )
            )
            tasks.append(done)
        else:
            for entry, timeline in lives:
                await live(bot, timeline, missed=entry.missed)
            tasks.append(asyncio.create_task(bot.scheduler.run()))
        waiter = asyncio.create_task(stop.wait())
        while True:
            pending = {waiter} | ({done} if done is not None and not done.done() else set())
            finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if waiter in finished:
                break
            if done is not None and done in finished:
                played = done.result()
                if progress:
                    progress.close()
                # The replayed mission is over, and its clock stops with it: answers from now
                # on are stamped with its last instant, not with a date the clock ran on to.
                ended = bot.scheduler.last_due or clock.now()
                if played is None:  # another worker of the shared database played it
                    entry, timeline = replays[0]
                    ended = timeline.window(entry.from_, entry.to)[-1].at
                    sys.stderr.write(f"replay run {run_id} was played by a worker of this database\n")
                if isinstance(clock, VirtualClock):
                    clock.halt(ended)
                listening = f"; mission clock stopped at {ended:%Y-%m-%d %H:%M UTC}; still listening (Ctrl-C to stop)"
                sys.stderr.write("timeline finished" + ("" if args.until_done else listening) + "\n")
                if args.until_done:
                    break
                # No more scheduled posts (a running clock would go through every cron date), just answers.
                bot.stop_schedules()
                tasks.append(asyncio.create_task(bot.scheduler.run()))
                done = None
        waiter.cancel()
    finally:
        if progress:
            progress.close()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if intake is not None:
            await intake.stop()
        await bot.stop()
        await store.close()
        await screen.close()
        if not failed_start:
            sys.stderr.write("stopped.\n")
    return 0


async def _start_intake(config: Any, bot: Any, redactor: Any) -> Any:
    """Start the ``[http]`` server of ``bot``; prints where it listens."""
    from .intake import Intake, IntakeSettings

    http = config.model.http
    secret = os.environ.get(http.secret_env, "").strip()
    if not secret:
        raise config.error(("http", "secret_env"), f"environment variable {http.secret_env} is not set")
    for i, entry in enumerate(config.model.adapters):
        extra = entry.model_extra or {}
        if entry.type == "telegram" and extra.get("mode") == "webhook" and extra.get("port") == http.port != 0:
            raise config.error(
                ("http", "port"),
                f"port {http.port} is the Telegram webhook's (adapter {config.adapter_name(i)}): choose another",
            )
    redactor.add(secret)
    settings = IntakeSettings(secret, http.listen, http.port, http.max_body, http.rate)
    intake = Intake(bot, settings)
    try:
        host, port = await intake.start()
    except ConfigError as exc:
        raise config.error(("http", "port"), str(exc)) from None
    sys.stderr.write(f"http: listening on http://{host}:{port} (POST /events, GET /healthz /readyz /metrics)\n")
    return intake


# --------------------------------------------------------------------------- emit


async def cmd_emit(args: argparse.Namespace) -> int:
    """``personae emit``."""
    if args.to is not None:
        if args.dry_run:
            raise ConfigError("--dry-run and --to cannot be combined (--to asks a running bot to play the event)")
        from .emit_client import post_event

        secret = os.environ.get(args.secret_env, "").strip()
        if not secret:
            raise ConfigError(
                f"environment variable {args.secret_env} is not set (the secret of the bot's [http] section;"
                " --secret-env names another variable)"
            )
        sys.stdout.write(await post_event(args.to, secret, args.event, dict(args.data), args.persona) + "\n")
        return 0
    from ..delivery.secrets import Redactor, install_log_redaction
    from ..engine.messages import Event
    from ..storage.select import store_for
    from .runtime import Bot, BotOptions

    setup = _load_setup(args.config, personas_arg=None, db_arg=None, seed_arg=None, only=None)
    at = datetime.now(UTC)
    # Logged with status "cli": the event came from the command line (a chat's `!event` says "chat").
    event = Event(args.event, at, dict(args.data), "cli", None, 0, f"cli:{at.isoformat()}:{args.event}")
    if args.persona:
        if args.persona not in setup.personas:
            raise ConfigError(f"unknown persona '{args.persona}'{did_you_mean(args.persona, setup.personas)}")
        from dataclasses import replace

        event = replace(event, persona=args.persona)
    handled = [
        p for p in setup.personas.values() if event.name in p.events and (not event.persona or p.id == event.persona)
    ]
    if not handled:
        known = sorted({e for p in setup.personas.values() for e in p.events})
        raise ConfigError(f"no persona handles event '{event.name}'{did_you_mean(event.name, known)}")
    redactor = Redactor()
    install_log_redaction(redactor)
    _redact_stderr(redactor)
    store = None if args.dry_run else await store_for(setup.database).open()
    bot = Bot(
        setup.personas,
        setup.adapters,
        store=store,
        options=BotOptions(seed=setup.seed),
        transcript=_stamp_printer(setup.personas) if args.dry_run else None,
        redactor=redactor,
    )
    try:
        await bot.start(schedules=False)
        await bot.deliver(await bot.engine.dispatch(event))
        await bot.drain()
    finally:
        await bot.stop()
        if store is not None:
            await store.close()
    for p in bot.engine.problems:
        sys.stderr.write(f"{p.where}: error: {p.message}\n")
    if bot.scheduler.waiting:
        when = bot.scheduler.next_due
        sys.stderr.write(
            f"note: {bot.scheduler.waiting} delayed reaction(s), the first due {when:%Y-%m-%d %H:%M UTC}, not run:"
            " `personae emit` exits now; a running bot (`personae run`, admin /emit) posts them\n"
        )
    return 1 if bot.engine.problems else 0
