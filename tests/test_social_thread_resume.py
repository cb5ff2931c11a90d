"""kill -9 in the middle of a thread on Mastodon and Bluesky, then `personae replay --resume`.

A long event post becomes a thread of pieces. The fake holds the creation of
the second piece; the replay process is killed with SIGKILL while it waits
(the first piece is posted, the second is in flight). The held request is
then let through, so the server may create that piece although its client is
dead. The resumed run must finish the thread under the pieces already posted,
each piece answering the one before, with nothing posted twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakes.bluesky_api import FakeBluesky
from fakes.mastodon_api import FakeMastodon

TOKEN = "resume-test-mastodon-token"
HANDLE = "philae.bsky.social"
PASSWORD = "resume-test-app-password"
SENTENCES = [f"Sentence {i} of a long story about comet 67P and its two lobes." for i in range(1, 13)]
STORY = " ".join(SENTENCES)  # about 760 characters: 3 pieces at 300 (Mastodon's limit here, Bluesky's)

PERSONA = """\
persona: philae
name: Philae
events:
  essay:
    say: "{{ event.text }}"
"""


def setup(tmp_path: Path, adapter: str) -> dict[str, str]:
    (tmp_path / "philae.yaml").write_text(PERSONA, encoding="utf-8")
    event = f'{{at: "2014-11-12T15:00:00Z", event: essay, data: {{text: "{STORY}"}}}}'
    (tmp_path / "t.yaml").write_text(f"timeline: t\ncast: [philae]\nevents:\n  - {event}\n", encoding="utf-8")
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["philae.yaml"]\ndatabase = "bot.db"\n\n[[adapters]]\nname = "s"\n{adapter}\n',
        encoding="utf-8",
    )
    return {**os.environ, "MASTODON_TOKEN": TOKEN, "BLUESKY_PASSWORD": PASSWORD}


async def replay(tmp_path: Path, env: dict[str, str], *extra: str) -> asyncio.subprocess.Process:
    with open(tmp_path / "err.txt", "ab") as err:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "personae", "replay", "t.yaml", "--speed", "max", "--adapter", "s", *extra,
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """A hang guard, not a timing assertion."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def kill_mid_thread_and_resume(tmp_path: Path, fake: Any, adapter: str) -> str:
    """Replay until the second piece is in flight, SIGKILL, let the piece through, resume; the stderr."""
    env = setup(tmp_path, adapter)
    fake.hold_from = 1
    proc = await replay(tmp_path, env)
    try:
        await wait_for(lambda: len(fake.created) == 1 and fake.held >= 1, "the second piece in flight")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    fake.release()  # the server goes on with the dead client's request: the second piece exists, unknown to the bot
    await wait_for(lambda: len(fake.created) == 2, "the held piece created")
    err = (tmp_path / "err.txt").read_text()
    found = re.search(r"replay run (\S+)", err)
    assert found, err
    proc = await replay(tmp_path, env, "--resume", found.group(1))
    await asyncio.wait_for(proc.wait(), 120)
    err = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def words(texts: list[str]) -> list[str]:
    """The story's words as the pieces carry them, in order (how a piece was cut does not matter)."""
    return " ".join(texts).replace("\u2026", " ").split()


async def test_mastodon_thread_resumed_after_kill_9_posts_nothing_twice(tmp_path: Path) -> None:
    async with FakeMastodon(TOKEN, max_characters=300) as fake:
        err = await kill_mid_thread_and_resume(
            tmp_path,
            fake,
            f'type = "mastodon"\npersona = "philae"\ntoken_env = "MASTODON_TOKEN"\nbase_url = "{fake.base_url}"\n'
            "poll_interval = 0.2\nrequests_per_5min = 3000\n",
        )
        pieces = list(fake.created)
        repeats_answered = fake.posts_answered - len(pieces)
    assert len(pieces) == 3, err
    assert repeats_answered >= 1  # the resumed run's repeat of the second piece was answered from its key
    assert len({p.id for p in pieces}) == len({p.text for p in pieces}) == 3  # nothing twice
    assert words([p.text for p in pieces]) == STORY.split()
    assert pieces[0].in_reply_to_id is None
    for before, piece in itertools.pairwise(pieces):
        assert piece.in_reply_to_id == before.id  # each piece answers the one before, across the kill


async def test_bluesky_thread_resumed_after_kill_9_posts_nothing_twice(tmp_path: Path) -> None:
    async with FakeBluesky(HANDLE, PASSWORD) as fake:
        err = await kill_mid_thread_and_resume(
            tmp_path,
            fake,
            f'type = "bluesky"\npersona = "philae"\nhandle = "{HANDLE}"\npassword_env = "BLUESKY_PASSWORD"\n'
            f'base_url = "{fake.base_url}"\npoll_interval = 0.2\npoints_per_hour = 1000000\n',
        )
        pieces = list(fake.created)
        refused = fake.duplicates_refused
    assert len(pieces) == 3, err
    assert refused >= 1  # the resumed run's repeat of the second piece met the record already there
    assert len({p.uri for p in pieces}) == len({p.text for p in pieces}) == 3  # nothing twice
    assert words([p.text for p in pieces]) == STORY.split()
    root = pieces[0]
    assert root.parent is None
    for before, piece in itertools.pairwise(pieces):
        assert (piece.parent, piece.root) == (before.uri, root.uri)
