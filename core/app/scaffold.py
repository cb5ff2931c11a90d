"""``personae init``: a new project with one persona, a small timeline, its tests and a bot.toml.

What it writes passes ``personae lint`` and ``personae test`` as it stands.
It never overwrites a file: if any of them exists, nothing is written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..language.errors import ConfigError


@dataclass(frozen=True)
class Scaffold:
    """The files of a new project, by path relative to its folder."""

    persona: str
    files: dict[str, str]


def persona_id(name: str) -> str:
    """The id of a persona called ``name``: lower case, other characters as '-' (``Ada Bot`` → ``ada-bot``)."""
    slug = re.sub(r"[^a-z0-9_]+", "-", name.strip().lower()).strip("-")[:64].strip("-")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", slug):
        raise ConfigError(f"--name: '{name}' gives no usable persona id (start with a letter a-z)")
    return slug


def scaffold(name: str) -> Scaffold:
    """The files of a project whose persona is called ``name``."""
    pid = persona_id(name)
    q = json.dumps  # a JSON string is a valid YAML (and TOML) string, whatever the name holds
    persona = f"""\
# {pid}: a persona. Edit the replies and events, then run `personae test`.
persona: {pid}
name: {q(name)}
description: A small space probe that answers questions about its mission.
locale: en

state:
  phase: waiting        # waiting, cruise, arrived

phrases:
  greeting:
    - "Hello {{{{ user.name }}}}! {{{{ persona.name }}}} here."
    - "Hi {{{{ user.name }}}}, {{{{ persona.name }}}} listening."

events:
  launch:
    say: "Liftoff from {{{{ event.site }}}}! On my way."
    set: {{phase: cruise}}
  arrival:
    say: "Arrived at {{{{ event.target }}}}. What a view."
    set: {{phase: arrived}}

replies:
  - when: {{command: start}}
    say: "{{{{ phrase('greeting') }}}} Try /status or ask me where I am."
  - when: {{command: status}}
    if: "state.phase == 'waiting'"
    say: "Still on the ground, waiting for launch."
  - when: {{command: status}}
    say: "Phase: {{{{ state.phase }}}}."
  - when: {{regex: '(?i)\\bwhere are you\\b'}}
    if: "state.phase == 'waiting'"
    say: "On the launch pad."
  - when: {{regex: '(?i)\\bwhere are you\\b'}}
    say: "Out there, in the {{{{ state.phase }}}} phase."

fallback:
  say: "I'm only a small probe: try /status."
"""
    timeline = f"""\
# A small mission for {pid}: `personae replay personas/timelines/{pid}.yaml --speed max --dry-run`.
timeline: {pid}-mission
title: {q(name + "'s mission")}
cast: [{pid}]
events:
  - at: 2030-01-01T09:00:00Z
    event: launch
    data: {{site: Kourou}}
  - at: 2031-06-01T12:00:00Z
    event: arrival
    data: {{target: the comet}}
"""
    tests = f"""\
# Conversation tests for {pid}: `personae test` runs them, `personae test --coverage` lists what none reaches.
personas: [{pid}]
platform: console
user: {{name: Ada}}
start: 2030-01-01T08:00:00Z

tests:
  - name: answers before launch
    steps:
      - say: /status
        reply: "Still on the ground, waiting for launch."
        rule: replies[1]
      - say: where are you?
        reply: "On the launch pad."
        rule: replies[3]
      - say: what is the meaning of life?
        rule: fallback
      - say: /start
        match: "Ada"
      - say: /start
        match: "Ada"

  - name: follows the mission
    steps:
      - event: launch
        data: {{site: Kourou}}
        reply: "Liftoff from Kourou! On my way."
        state: {{phase: cruise}}
      - say: /status
        reply: "Phase: cruise."
        rule: replies[2]
      - advance: 30d
        nothing: true
      - event: arrival
        data: {{target: the comet}}
        match: "^Arrived at the comet"
      - say: where are you?
        reply: "Out there, in the arrived phase."
        rule: replies[4]
"""
    bot = f"""\
# `personae run` starts this bot: {q(name)} on the console, the mission replayed at full speed.
[bot]
personas = ["personas/*.yaml"]
database = "personae.db"
seed = 1

[[adapters]]
type = "console"
persona = "{pid}"
input = true

[[timelines]]
file = "personas/timelines/{pid}.yaml"
mode = "replay"
speed = "max"
"""
    return Scaffold(
        pid,
        {
            f"personas/{pid}.yaml": persona,
            f"personas/timelines/{pid}.yaml": timeline,
            f"personas/tests/{pid}.yaml": tests,
            "bot.toml": bot,
        },
    )


def write(root: Path, project: Scaffold) -> list[Path]:
    """Write ``project`` under ``root``; :class:`ConfigError` (nothing written) if any file exists."""
    targets = [root / rel for rel in project.files]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing:
        names = ", ".join(str(t) for t in existing)
        raise ConfigError(f"{names}: already exists; personae init never overwrites (choose another folder)")
    written: list[Path] = []
    try:
        for target, content in zip(targets, project.files.values(), strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("x", encoding="utf-8") as f:  # "x": fail rather than overwrite, even in a race
                f.write(content)
            written.append(target)
    except FileExistsError as exc:
        for w in written:
            w.unlink(missing_ok=True)
        raise ConfigError(f"{exc.filename}: already exists; personae init never overwrites") from None
    return written


def cmd_init(args: argparse.Namespace) -> int:
    """``personae init``."""
    root = Path(args.dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: exists and is not a folder")
    project = scaffold(args.name)
    written = write(root, project)
    for path in written:
        sys.stdout.write(f"created {path}\n")
    cd = "" if root.resolve() == Path.cwd().resolve() else f"cd {_shell_quote(str(root))} && "
    sys.stdout.write(
        "\nnext, try:\n"
        f"  {cd}personae test --coverage\n"
        f"  {cd}personae chat {project.persona} --no-log\n"
        f"  {cd}personae replay personas/timelines/{project.persona}.yaml --speed max --dry-run\n"
    )
    return 0


def _shell_quote(path: str) -> str:
    import shlex

    return shlex.quote(path)
