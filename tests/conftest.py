"""Shared fixtures: small persona scripts written to temporary folders."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LANDER = """\
persona: lander
name: Lander
description: A test lander.
state: {phase: cruise, battery: 100, location: aboard the orbiter}
chat_state: {questions: 0}
phrases:
  greeting: ["Hello {{ user.name }}!", "Hi {{ user.name }}!", "Hey {{ user.name }}!"]
events:
  touchdown:
    say: "Touchdown at {{ event.site }}!"
    set: {phase: surface, location: "{{ event.site }}"}
    platforms:
      discord: "**Touchdown** at {{ event.site }}!"
    emit: {event: landed, data: {site: "{{ event.site }}"}}
  drain:
    say: "Battery at {{ state.battery }}%."
    set: {battery: "{{ state.battery - 10 }}"}
replies:
  - when: {command: status}
    say: "Phase {{ state.phase }}, battery {{ state.battery }}%."
  - when: {command: [echo, say]}
    say: "You said: {{ message.args }}"
  - when: {regex: '(?i)\\bwhere are you\\b'}
    if: "state.phase == 'surface'"
    say: "On the comet, at {{ state.location }}."
  - when: {regex: '(?i)\\bwhere are you\\b'}
    say: "Still {{ state.location }}."
  - when: {regex: '(?i)how far is (?P<what>\\w+)'}
    say: "{{ match.what }} is far."
  - when: {keywords: [comete, "good night"]}
    say: "Comets! Question {{ chat.state.questions }}."
    set: {chat.questions: "{{ chat.state.questions + 1 }}"}
  - when: {exact: "hello there"}
    say: "{{ phrase('greeting') }}"
  - when: {keywords: [repeat]}
    say: "Repeat: {{ message.text }}"
  - when: {keywords: [status]}
    say: "keyword status (after the command rule)"
fallback:
  say: "I'm only a small lander."
"""

ORBITER = """\
persona: orbiter
name: Orbiter
events:
  landed:
    say: "I can see his legs at {{ event.site }}!"
replies:
  - when: {command: status}
    say: "Orbiting."
"""


def _sqlite_workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


@pytest.fixture(autouse=True)
def no_leaked_connections() -> Iterator[None]:
    """Fail the test that leaves an aiosqlite connection open.

    Its worker is a non-daemon thread, so one leaked connection makes the
    interpreter hang at exit, after every test has passed.
    """
    before = _sqlite_workers()
    yield
    deadline = time.monotonic() + 2.0
    while (leaked := _sqlite_workers() - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leaked, f"test left {len(leaked)} SQLite connection(s) open"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a file under tmp_path (dedented text or raw bytes) and return its path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def persona_dir(tmp_path: Path) -> Path:
    """A folder with the lander and orbiter test personas."""
    d = tmp_path / "personas"
    d.mkdir()
    (d / "lander.yaml").write_text(LANDER, encoding="utf-8")
    (d / "orbiter.yaml").write_text(ORBITER, encoding="utf-8")
    return d


# The session's PostgreSQL server, for every test module that asks for it.
from pgserver import postgres_server  # noqa: E402, F401
