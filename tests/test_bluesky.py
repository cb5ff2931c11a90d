"""The Bluesky adapter end to end: `personae run` with the real atproto SDK against a fake PDS on 127.0.0.1."""

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
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.bluesky_api import FakeBluesky, FakePost, grapheme_length
from personae.adapters.base import AdapterConfig
from personae.adapters.bluesky import BlueskyAdapter, find_facets, record_key
from personae.delivery.dispatcher import Dispatcher
from personae.delivery.split import BLUESKY_MAX_BYTES, graphemes, split_message
from personae.storage.store import Store

HANDLE = "philae.bsky.social"
PASSWORD = "abcd-efgh-ijkl-mnop-app-password"
LIST = ("GET", "app.bsky.notification.listNotifications")

PERSONA = """\
persona: philae
name: Philae
locale: fr-FR
events:
  touchdown:
    say: "Touché à {{ event.site }} ! #Philae #comète https://sci.esa.int/rosetta — merci @rosetta.bsky.social"
  essay:
    say: "{{ event.text }}"
replies:
  - when: {command: status}
    say: "Phase cruise."
  - when: {keywords: [repeat]}
    say: "Répète : {{ message.text }}"
  - when: {keywords: [essay]}
    say: >-
      Première phrase d'une longue réponse, voir https://example.com/a/very/long/path/to/a/page/about/comets.
      Deuxième phrase : la comète est sombre, plus sombre que le charbon. Troisième : elle sent l'œuf pourri.
      Quatrième : https://sci.esa.int/rosetta garde les données. Cinquième : #67P tourne en douze heures et demie.
      Sixième : la suite au prochain épisode, avec encore quelques mots pour dépasser la limite de la plateforme.
fallback:
  say: "Je ne suis qu'un petit atterrisseur."
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
    tmp_path: Path, fake: FakeBluesky, options: str = "", timeline: list[str] | None = None
) -> AsyncIterator[Run]:
    """`personae run` with one Bluesky adapter pointing at ``fake``; SIGTERM at the end."""
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "philae.yaml").write_text(PERSONA, encoding="utf-8")
    toml = (
        f'[bot]\npersonas = ["{tmp_path}/personas/*.yaml"]\ndatabase = "bot.db"\n\n'
        f'[[adapters]]\ntype = "bluesky"\npersona = "philae"\nhandle = "{HANDLE}"\n'
        f'password_env = "PHILAE_BLUESKY_PASSWORD"\nbase_url = "{fake.base_url}"\n'
        'admins = ["flight.bsky.social"]\npoll_interval = 0.1\npoints_per_hour = 1000000\n'
        f"{options}\n"
    )
    if timeline:
        lines = [f'  - {{at: "2014-11-12T15:{i:02d}:00Z", {e}}}' for i, e in enumerate(timeline)]
        (tmp_path / "t.yaml").write_text(
            "timeline: t\ncast: [philae]\nevents:\n" + "\n".join(lines) + "\n", encoding="utf-8"
        )
        toml += '\n[[timelines]]\nfile = "t.yaml"\nspeed = "max"\n'
    (tmp_path / "bot.toml").write_text(toml, encoding="utf-8")
    env = {**os.environ, "PHILAE_BLUESKY_PASSWORD": PASSWORD}
    with open(tmp_path / "out.txt", "wb") as out, open(tmp_path / "err.txt", "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "personae", "run", cwd=tmp_path, env=env, stdout=out, stderr=err,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    run = Run(proc, tmp_path)
    try:
        # Started: it polls notifications once logged in.
        await fake.wait_until(lambda: fake.requests.count(LIST) >= 2, timeout=30)
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


def no_secrets(fake: FakeBluesky, run: Run, tmp_path: Path) -> None:
    """Neither the app password nor any session token in the output or the database."""
    tokens = {*fake.issued, *(a.removeprefix("Bearer ") for a in fake.seen_auth if a)}
    assert tokens, "the adapter never authenticated"
    db = (tmp_path / "bot.db").read_bytes()
    for secret in (PASSWORD, *tokens):
        assert secret not in run.out and secret.encode() not in db
        for part in secret.split(".")[1:]:  # a JWT's payload and signature on their own
            assert part not in run.out and part.encode() not in db


def facets(post: FakePost) -> list[tuple[str, str]]:
    return post.facet_texts()


async def test_event_posts_replies_in_thread_facets_and_no_third_party_mentions(tmp_path):
    async with FakeBluesky(HANDLE, PASSWORD) as fake:
        rosetta = fake.actor("rosetta.bsky.social")
        alice, eve = fake.actor("alice.bsky.social"), fake.actor("eve.bsky.social")
        fake.actor("carol.bsky.social")
        async with personae_run(tmp_path, fake, "", ["event: touchdown, data: {site: Abydos}"]) as run:
            await fake.wait_until(lambda: len(fake.created) == 1)
            asked = fake.inject_post(alice, f"@{HANDLE} /status")
            await fake.wait_until(lambda: len(fake.replies_to(asked)) == 1)
            [answer] = fake.replies_to(asked)
            # Alice answers the bot's reply: a reply notification, answered deeper in the same thread.
            fake.expire_sessions()  # the PDS forgets the session: the adapter logs in again
            again = fake.inject_post(alice, "what next?", reply_to=answer)
            sneaky = fake.inject_post(eve, f"@{HANDLE} repeat hello @carol.bsky.social #Ça https://é.example/ü")
            await fake.wait_until(lambda: len(fake.replies_to(again)) == 1 and len(fake.replies_to(sneaky)) == 1)
        post = fake.created[0]
        assert post.text == "Touché à Abydos ! #Philae #comète https://sci.esa.int/rosetta — merci @rosetta.bsky.social"
        assert post.parent is None and post.record["langs"] == ["fr-FR"]
        # Facets from the byte offsets cover exactly the link, the tags and the persona's own mention.
        assert facets(post) == [
            ("tag", "#Philae"),
            ("tag", "#comète"),
            ("link", "https://sci.esa.int/rosetta"),
            ("mention", "@rosetta.bsky.social"),
        ]
        assert post.record["facets"][3]["features"][0]["did"] == rosetta.did
        assert (answer.text, answer.parent, answer.root) == ("Phase cruise.", asked.uri, asked.uri)
        [deeper] = fake.replies_to(again)
        assert (deeper.text, deeper.root) == ("Je ne suis qu'un petit atterrisseur.", asked.uri)
        [echo] = fake.replies_to(sneaky)
        # What the user wrote reads the same, but mentions no one; its tag and link still work.
        assert echo.text.replace("\u2060", "") == "Répète : repeat hello @carol.bsky.social #Ça https://é.example/ü"
        assert [kind for kind, _ in facets(echo)] == ["tag", "link"]
        assert facets(echo) == [("tag", "#Ça"), ("link", "https://é.example/ü")]
        assert fake.sessions_created >= 2
        assert len(fake.created) == 4
        no_secrets(fake, run, tmp_path)


async def test_long_posts_become_threads_at_exactly_300_graphemes(tmp_path):
    # 300 graphemes, many more code points and bytes: emoji with modifiers and ZWJ, combining marks.
    unit = "👩🏽‍🚀e\u0301\u0323 "  # 3 graphemes: astronaut, e with two marks, space
    exact = (unit * 100)[:-1] + "!"
    assert grapheme_length(exact) == 300 and len(exact) > 600
    over = exact + "?"
    heavy = " ".join(["👨‍👩‍👧‍👦"] * 160)  # 319 graphemes and 4,000 bytes: over both limits
    timeline = [f'event: essay, data: {{text: "{t}"}}' for t in (exact, over, heavy)]
    async with FakeBluesky(HANDLE, PASSWORD) as fake:
        alice = fake.actor("alice.bsky.social")
        async with personae_run(tmp_path, fake, "", timeline):
            await fake.wait_until(lambda: sum("👨‍👩‍👧‍👦" in p.text for p in fake.created) >= 2)
            asked = fake.inject_post(alice, f"@{HANDLE} essay please")
            await fake.wait_until(lambda: any("Sixième" in p.text for p in fake.created))
        posts = fake.created
        assert posts[0].text == exact and posts[0].parent is None  # exactly the limit: one post
        # One grapheme more: two posts, the second answering the first (root and parent).
        first, second = posts[1], posts[2]
        assert first.parent is None and (second.parent, second.root) == (first.uri, first.uri)
        assert first.text + " " + second.text == over or first.text + second.text == over
        family = [p for p in posts if "👨‍👩‍👧‍👦" in p.text]
        assert len(family) == 2 and all(len(p.text.encode()) <= BLUESKY_MAX_BYTES for p in family)
        # A long reply: a thread under the post answered, each piece answering the one before.
        answer = [p for p in posts if p.root == asked.uri]
        assert len(answer) >= 2 and answer[0].parent == asked.uri
        assert all(p.parent == q.uri for q, p in itertools.pairwise(answer))
        assert all(grapheme_length(p.text) <= 300 for p in posts)
        # Links are never cut, and their facets point at them.
        links = [t for p in answer for kind, t in facets(p) if kind == "link"]
        assert links == ["https://example.com/a/very/long/path/to/a/page/about/comets", "https://sci.esa.int/rosetta"]


async def test_a_lost_answer_is_not_posted_twice_and_a_429_is_waited_out(tmp_path):
    async with FakeBluesky(HANDLE, PASSWORD) as fake:
        alice = fake.actor("alice.bsky.social")
        async with personae_run(tmp_path, fake) as run:
            fake.lose_next_answers = 1
            asked = fake.inject_post(alice, f"@{HANDLE} /status")
            await fake.wait_until(lambda: len(fake.replies_to(asked)) == 1 and fake.lose_next_answers == 0)
            fake.throttle(2.0)
            reset = time.time() + 2.0
            again = fake.inject_post(alice, f"@{HANDLE} /status again")
            await fake.wait_until(lambda: len(fake.replies_to(again)) == 1)
            answered_at = time.time()
            await asyncio.sleep(0.3)
        assert [p.text for p in fake.replies_to(asked)] == ["Phase cruise."]
        assert fake.throttled >= 1
        assert answered_at >= int(reset) - 0.01  # ratelimit-reset honoured: nothing got through before it
        assert len(fake.created) == 2
        con = sqlite3.connect(tmp_path / "bot.db")
        statuses = [s for (s,) in con.execute("SELECT status FROM outbox")]
        assert statuses == ["sent", "sent"]
        no_secrets(fake, run, tmp_path)


async def test_replies_stop_at_the_thread_cap(tmp_path):
    async with FakeBluesky(HANDLE, PASSWORD) as fake:
        marvin = fake.actor("marvin.bsky.social")
        async with personae_run(tmp_path, fake, "max_replies_per_thread = 3"):
            last = fake.inject_post(marvin, f"@{HANDLE} hello")
            for _ in range(6):
                try:
                    await fake.wait_until(lambda last=last: bool(fake.replies_to(last)), timeout=2)
                except AssertionError:
                    break
                [mine] = fake.replies_to(last)
                last = fake.inject_post(marvin, "hello again", reply_to=mine)
        assert len(fake.created) == 3
        con = sqlite3.connect(tmp_path / "bot.db")
        assert ("ignored: thread cap",) in con.execute("SELECT status FROM interactions").fetchall()


async def test_a_piece_created_before_a_crash_is_not_posted_again_and_the_thread_continues(tmp_path):
    # As after kill -9 right after createRecord of piece 1 succeeded, before the outbox knew:
    # piece 0 is sent (its URI on record), piece 1 exists on the PDS but is pending here, piece 2 is new.
    async with FakeBluesky(HANDLE, PASSWORD) as fake:
        store = await Store(tmp_path / "r.db").open()
        try:
            key = "run1|event:x|b|timeline"
            config = AdapterConfig(
                "b", "philae", options={"handle": HANDLE, "password_env": "P", "base_url": fake.base_url}
            )
            adapter = BlueskyAdapter.create(config, {"P": PASSWORD})
            await adapter.start(_ignore)
            from personae.adapters.base import Delivery

            first = await adapter.send(Delivery(1, "timeline", "piece one", key=f"{key}|0"))
            await adapter.send(
                Delivery(2, "timeline", "piece two", key=f"{key}|1", part=1, previous=first.message_ids[0])
            )
            await adapter.stop()
            await store.outbox_add(
                [
                    {"key": f"{key}|{n}", "persona": "philae", "adapter": "b", "chat": "timeline", "text": t}
                    for n, t in enumerate(["piece one", "piece two", "piece three"])
                ]
            )
            [row0, _, _] = await store.outbox_pending()
            await store.outbox_mark(row0.id, "sent", receipt=first.message_ids[0])
            adapter = BlueskyAdapter.create(config, {"P": PASSWORD})  # a new process: nothing cached
            await adapter.start(_ignore)
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
        assert [p.text for p in fake.created] == ["piece one", "piece two", "piece three"]
        assert fake.duplicates_refused == 1
        one, two, three = fake.created
        assert (two.parent, three.parent, three.root) == (one.uri, two.uri, one.uri)


async def _ignore(incoming: object) -> None:
    return None


# --------------------------------------------------------------------------- pure functions


def test_record_keys_are_valid_tids_and_stable():
    keys = {record_key(f"run|event:{i}|b|timeline|0") for i in range(2000)}
    assert len(keys) == 2000
    assert all(re.fullmatch(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}", k) for k in keys)
    assert record_key("same") == record_key("same")


def test_facets_take_byte_offsets_and_skip_defused_mentions():
    text = "Ça va ? #Rosetta, voir https://esa.int/é). @\u2060bob.bsky.social @rosetta.bsky.social #123 #7P."
    found = [(f.kind, text.encode()[f.start : f.end].decode(), f.value) for f in find_facets(text)]
    assert found == [
        ("tag", "#Rosetta", "Rosetta"),
        ("link", "https://esa.int/é", "https://esa.int/é"),
        ("mention", "@rosetta.bsky.social", "rosetta.bsky.social"),
        ("tag", "#7P", "7P"),
    ]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
            st.sampled_from(
                ["https://example.com/" + "a" * 40, "#tag", "@bob.bsky.social", "👨‍👩‍👧‍👦", "e\u0301", "\n\n", " "]
            ),
        ),
        max_size=60,
    ).map("".join),
    st.integers(min_value=2, max_value=300),
)
def test_bluesky_pieces_fit_in_graphemes_and_bytes(text, limit):
    pieces = split_message(text, limit, measure="bluesky")
    for piece in pieces:
        assert grapheme_length(piece) <= limit and len(piece.encode()) <= BLUESKY_MAX_BYTES, piece
        assert graphemes(piece) == grapheme_length(piece)
    # Nothing but whitespace at the cuts is lost.
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


def test_session_tokens_are_redacted_and_replaced_at_each_refresh():
    from personae.delivery.secrets import Redactor

    redactor = Redactor([PASSWORD])
    old, new = "eyJ0eXAiOiJhdCtqd3QifQ.stale-access-jwt-claims.sig1", "eyJ0eXAiOiJhdCtqd3QifQ.new-token-payload.sig2"
    redactor.track("b", old)
    assert "stale-access-jwt-claims" not in redactor(f"Authorization: Bearer {old}")
    redactor.track("b", new)  # a refresh: the new tokens are masked, the revoked ones no longer need to be
    assert "new-token-payload" not in redactor(new) and PASSWORD not in redactor(PASSWORD)
    assert "stale-access-jwt-claims" in redactor("stale-access-jwt-claims")
