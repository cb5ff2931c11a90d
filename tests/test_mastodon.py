"""The Mastodon adapter end to end: `personae run` with the real Mastodon.py against a fake instance on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.mastodon_api import FakeMastodon, FakeStatus, countable_length
from personae.adapters.base import AdapterConfig
from personae.adapters.mastodon import MastodonAdapter, html_to_text, strip_leading_mentions
from personae.delivery.dispatcher import Dispatcher
from personae.delivery.split import mastodon_length, split_message
from personae.storage.store import Store

TOKEN = "mastodon-secret-access-token-do-not-leak"
URL = "https://example.com/" + "a" * 60  # 80 characters, counted as 23

PERSONA = """\
persona: philae
name: Philae
locale: fr-FR
events:
  touchdown:
    say: "Touchdown at {{ event.site }}!"
  essay:
    say: "{{ event.text }}"
replies:
  - when: {command: status}
    say: "Phase cruise."
  - when: {keywords: [repeat]}
    say: "Repeat: {{ message.text }}"
  - when: {regex: '(?i)how far is (?P<what>\\w+)'}
    say: "{{ match.what }} is far."
  - when: {keywords: [essay]}
    say: >-
      First sentence of a long answer, see https://example.com/a/very/long/path/to/a/page/about/comets.
      Second sentence: the comet is dark, darker than coal. Third sentence: it smells of rotten eggs.
      Fourth: https://sci.esa.int/rosetta is where the data lives.
fallback:
  say: "I'm only a small lander."
"""


@dataclass
class Run:
    """A `personae run` process and where its output goes."""

    proc: asyncio.subprocess.Process
    cwd: Path

    @property
    def out(self) -> str:
        return (self.cwd / "out.txt").read_text() + (self.cwd / "err.txt").read_text()


@contextlib.asynccontextmanager
async def personae_run(
    tmp_path: Path, fake: FakeMastodon, options: str = "", timeline: list[str] | None = None
) -> AsyncIterator[Run]:
    """`personae run` with one Mastodon adapter pointing at ``fake``; SIGTERM at the end."""
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "philae.yaml").write_text(PERSONA, encoding="utf-8")
    toml = (
        f'[bot]\npersonas = ["{tmp_path}/personas/*.yaml"]\ndatabase = "bot.db"\n\n'
        '[[adapters]]\ntype = "mastodon"\npersona = "philae"\ntoken_env = "PHILAE_MASTODON_TOKEN"\n'
        f'base_url = "{fake.base_url}"\nadmins = ["flight@elsewhere.example"]\npoll_interval = 0.1\n'
        "requests_per_5min = 3000\n"
        f"{options}\n"
    )
    if timeline:
        lines = [f'  - {{at: "2014-11-12T15:{i:02d}:00Z", {e}}}' for i, e in enumerate(timeline)]
        (tmp_path / "t.yaml").write_text(
            "timeline: t\ncast: [philae]\nevents:\n" + "\n".join(lines) + "\n", encoding="utf-8"
        )
        toml += '\n[[timelines]]\nfile = "t.yaml"\nspeed = "max"\n'
    (tmp_path / "bot.toml").write_text(toml, encoding="utf-8")
    env = {**os.environ, "PHILAE_MASTODON_TOKEN": TOKEN}
    with open(tmp_path / "out.txt", "wb") as out, open(tmp_path / "err.txt", "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "personae", "run", cwd=tmp_path, env=env, stdout=out, stderr=err,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    run = Run(proc, tmp_path)
    try:
        # Started: it polls notifications once it has read the account and the instance.
        await fake.wait_until(lambda: fake.requests.count(("GET", "/api/v1/notifications")) >= 2, timeout=30)
        yield run
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert "Traceback" not in run.out, run.out


def replies_to(fake: FakeMastodon, status: FakeStatus) -> list[FakeStatus]:
    return [s for s in fake.created if s.in_reply_to_id == status.id]


def mention_names(fake: FakeMastodon, status: FakeStatus) -> set[str]:
    return {a.acct for a in status.mentions}


async def test_event_posts_mentions_visibility_and_no_third_party_mentions(tmp_path):
    async with FakeMastodon(TOKEN) as fake:
        alice, bob, eve = fake.account("alice"), fake.account("bob"), fake.account("eve")
        fake.account("carol", "other.example")
        fake.account("dave", None)
        marvin = fake.account("marvin", bot=True)
        options = 'visibility = "unlisted"\nspoiler_text = "comet news"'
        async with personae_run(tmp_path, fake, options, ["event: touchdown, data: {site: Abydos}"]) as run:
            await fake.wait_until(lambda: len(fake.created) == 1)
            asked = fake.inject_mention(alice, "@philae /status")
            secret = fake.inject_mention(bob, "@philae how far is Mars?", visibility="direct")
            sneaky = fake.inject_mention(eve, "@philae repeat hello @carol@other.example and @dave and ＠dave")
            fake.inject_mention(marvin, "@philae /status")  # a bot: ignored by default
            await fake.wait_until(lambda: len(fake.created) == 4)
            await asyncio.sleep(0.5)  # anything more would be an answer to the bot
        post = fake.created[0]
        assert (post.text, post.visibility, post.spoiler_text, post.language) == (
            "Touchdown at Abydos!", "unlisted", "comet news", "fr"
        )  # fmt: skip
        assert post.in_reply_to_id is None and post.mentions == []
        [answer] = replies_to(fake, asked)
        # Answered in the thread, mentioning only the author; public is narrowed to the configured unlisted.
        assert answer.text == "@alice@elsewhere.example Phase cruise."
        assert (answer.visibility, mention_names(fake, answer)) == ("unlisted", {"alice@elsewhere.example"})
        [private] = replies_to(fake, secret)
        assert (private.text, private.visibility) == ("@bob@elsewhere.example Mars is far.", "direct")
        [echo] = replies_to(fake, sneaky)
        assert mention_names(fake, echo) == {"eve@elsewhere.example"}, echo.text
        # What the user wrote (a mention shows as @user in the HTML) still reads the same, but mentions no one.
        assert (
            echo.text.replace("\u2060", "") == "@eve@elsewhere.example Repeat: repeat hello @carol and @dave and ＠dave"
        )
        assert echo.text.count("\u2060") == 3
        assert len(fake.created) == 4  # nothing for the bot
        assert fake.unauthorized == 0
        db = (tmp_path / "bot.db").read_bytes()
        assert TOKEN not in run.out and TOKEN.encode() not in db
        con = sqlite3.connect(tmp_path / "bot.db")
        assert ("ignored: bot",) in con.execute("SELECT status FROM interactions WHERE direction = 'in'").fetchall()


async def test_long_posts_become_threads_at_the_instance_limit(tmp_path):
    exact = URL + " " + "b" * 76  # 23 + 1 + 76 = 100 as Mastodon counts, 157 characters
    over = URL + " " + "b" * 77
    words = " ".join(f"word{i} {URL}" if i % 7 == 0 else f"word{i}" for i in range(120))
    timeline = [f"event: essay, data: {{text: '{t}'}}" for t in (exact, over, words)]
    async with FakeMastodon(TOKEN, max_characters=100) as fake:
        alice = fake.account("alice")
        async with personae_run(tmp_path, fake, "", timeline):
            await fake.wait_until(lambda: any(s.text.rstrip().endswith("word119") for s in fake.created))
            asked = fake.inject_mention(alice, "@philae essay please", visibility="private")
            await fake.wait_until(lambda: any("rosetta" in s.text for s in fake.created))
        posts = fake.created
        assert posts[0].text == exact and posts[0].in_reply_to_id is None  # exactly the limit: one post
        assert countable_length(posts[0].text) == 100
        # One more character: two posts, the second answering the first.
        assert [p.text for p in posts[1:3]] == [URL, "b" * 77] and posts[2].in_reply_to_id == posts[1].id
        # A long post: a thread of pieces, each answering the one before, nothing lost.
        essay = [p for p in posts[3:] if not p.text.startswith("@")]
        assert len(essay) > 3
        assert all(p.in_reply_to_id == q.id for q, p in itertools.pairwise(essay))
        assert " ".join(p.text for p in essay) == words
        # A long reply: every piece mentions the author (and only them), stays private, and threads.
        answer = [p for p in posts if p.text.startswith("@alice")]
        assert len(answer) >= 3 and answer[0].in_reply_to_id == asked.id
        assert all(p.in_reply_to_id == q.id for q, p in itertools.pairwise(answer))
        assert {p.visibility for p in answer} == {"private"}
        assert all(mention_names(fake, p) == {"alice@elsewhere.example"} for p in answer)
        assert all(countable_length(p.text) <= 100 for p in posts)


async def test_a_lost_answer_is_retried_without_a_duplicate_and_a_429_is_waited_out(tmp_path):
    async with FakeMastodon(TOKEN) as fake:
        alice = fake.account("alice")
        async with personae_run(tmp_path, fake):
            fake.lose_next_answers = 1
            asked = fake.inject_mention(alice, "@philae /status")
            await fake.wait_until(lambda: fake.posts_answered >= 1)
            posts_before = fake.requests.count(("POST", "/api/v1/statuses"))
            fake.throttle(2.0)
            reset = time.time() + 2.0
            again = fake.inject_mention(alice, "@philae how far is Jupiter?", in_reply_to_id=asked.id)
            await fake.wait_until(lambda: len(replies_to(fake, again)) == 1)
            answered_at = time.time()
        # The status was created once although its answer was lost; the retry got the same status back.
        assert [s.text for s in replies_to(fake, asked)] == ["@alice@elsewhere.example Phase cruise."]
        assert posts_before >= 2
        assert fake.throttled >= 1
        assert answered_at >= reset - 0.01  # X-RateLimit-Reset honoured: nothing got through before it
        assert len(fake.created) == 2


async def test_two_bots_stop_after_the_reply_cap(tmp_path):
    async with FakeMastodon(TOKEN) as fake:
        marvin = fake.account("marvin", bot=True)
        async with personae_run(tmp_path, fake, "reply_to_bots = true\nmax_replies_per_thread = 3"):
            last = fake.inject_mention(marvin, "@philae hello")
            for _ in range(6):
                try:
                    await fake.wait_until(lambda last=last: bool(replies_to(fake, last)), timeout=3)
                except AssertionError:
                    break
                [mine] = replies_to(fake, last)
                last = fake.inject_mention(marvin, "@philae hello again", in_reply_to_id=mine.id)
        assert len(fake.created) == 3
        con = sqlite3.connect(tmp_path / "bot.db")
        assert ("ignored: thread cap",) in con.execute("SELECT status FROM interactions").fetchall()


async def test_a_resumed_thread_continues_under_the_piece_already_posted(tmp_path):
    # As after kill -9 between two pieces: piece 0 is sent (its id on record), piece 1 is pending.
    async with FakeMastodon(TOKEN) as fake:
        first = fake._create(fake.me, "piece one", "public", None, "", None)
        store = await Store(tmp_path / "r.db").open()
        try:
            key = "run1|event:x|m|timeline"
            await store.outbox_add(
                [
                    {"key": f"{key}|0", "persona": "philae", "adapter": "m", "chat": "timeline", "text": "piece one"},
                    {"key": f"{key}|1", "persona": "philae", "adapter": "m", "chat": "timeline", "text": "piece two"},
                ]
            )
            [row0, _] = await store.outbox_pending()
            await store.outbox_mark(row0.id, "sent", receipt=first.id)
            config = AdapterConfig("m", "philae", options={"token_env": "T", "base_url": fake.base_url})
            adapter = MastodonAdapter.create(config, {"T": TOKEN})
            dispatcher = Dispatcher(store, adapter)
            task = asyncio.create_task(dispatcher.run())
            dispatcher.notify()
            await asyncio.wait_for(dispatcher.drained(), 15)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await adapter.stop()
        finally:
            await store.close()
        [second] = fake.created
        assert (second.text, second.in_reply_to_id) == ("piece two", first.id)


# --------------------------------------------------------------------------- pure functions


def test_html_to_text_keeps_paragraphs_and_drops_elided_link_parts():
    content = (
        '<p><span class="h-card"><a href="https://x/@philae" class="u-url mention">@<span>philae</span></a></span>'
        ' look &amp; see <a href="https://example.com/long"><span class="invisible">https://</span>'
        '<span class="">example.com/lo</span><span class="invisible">ng</span></a></p><p>line<br />two</p>'
    )
    text = html_to_text(content)
    assert text == "@philae look & see example.com/lo\n\nline\ntwo"
    assert strip_leading_mentions("@philae @bob@x.example /status") == "/status"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
            st.sampled_from([URL, "https://a.io", "@bob@mastodon.example", "👍🏽", "e\u0301", "\n\n", " "]),
        ),
        max_size=40,
    ).map("".join),
    st.integers(min_value=24, max_value=200),
)
def test_mastodon_pieces_fit_as_mastodon_counts_them(text, limit):
    pieces = split_message(text, limit, measure="mastodon")
    for piece in pieces:
        # The fake counts with its own implementation of Mastodon's rule.
        assert countable_length(piece) <= limit or mastodon_length(piece) <= limit, piece
        assert mastodon_length(piece) <= limit
    # Nothing but whitespace at the cuts is lost.
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


def test_exact_limit_counts_urls_as_23():
    text = URL + " " + "b" * 76
    assert mastodon_length(text) == 100 and split_message(text, 100, measure="mastodon") == [text]
    assert split_message(text + "b", 100, measure="mastodon") == [URL, "b" * 77]
    assert datetime  # keep the import for type hints in helpers
