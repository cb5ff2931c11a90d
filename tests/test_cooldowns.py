"""Cooldowns, ``no_repeat`` and per-user ``limits``: in the engine, kept across restarts, deterministic."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personae import Chat, Event, Incoming, User
from personae.engine.engine import Engine
from personae.language.errors import PersonaeError
from personae.language.loader import parse_persona
from personae.storage.store import Store
from personae.timing.clock import VirtualClock

T0 = datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)

PERSONA = """\
persona: bot
name: Bot
state:
  launches: 0
chat_state:
  greeted: 0
replies:
  - when: {keywords: hello}
    say: "Hello {{ user.name }}!"
    set: {chat.greeted: "{{ chat.state.greeted + 1 }}"}
    cooldown: 10m
  - when: {keywords: hello}
    say: "(hello again)"
  - when: {keywords: tip}
    say: "A tip for you."
    cooldown: {for: 1h, per: user}
    cooldown_say: "One tip an hour, {{ user.name }}."
  - when: {keywords: news}
    say: "Big news!"
    cooldown: {for: 30m, per: global}
  - when: {command: launch}
    say: launching
    emit: launch
    cooldown: 2h
    cooldown_say: "Still refuelling."
events:
  launch:
    say: "Lift-off {{ state.launches }}"
    set: {launches: "{{ state.launches + 1 }}"}
    cooldown: 1h
fallback:
  say: "Sorry?"
  cooldown: 5m
"""


NOTICE = "You're writing faster than I can answer. I'll be back with you in a little while."


def msg(text: str, *, chat: str = "c1", user: str = "u1", name: str = "Ann", n: int = 1) -> Incoming:
    return Incoming("bot", "console", Chat(chat), User(user, name), text, message_id=str(n))


def engine_for(text: str, clock: VirtualClock, store: Store | None = None, seed: int = 0) -> Engine:
    return Engine({"bot": parse_persona(text, "bot.yaml")}, clock=clock, store=store, seed=seed)


async def said(engine: Engine, text: str, **kw: str) -> list[str]:
    return [o.text for o in await engine.handle(msg(text, **kw))]


# --------------------------------------------------------------------------- cooldowns


async def test_a_resting_rule_is_skipped_per_chat_and_answers_again_when_it_is_over():
    clock = VirtualClock(T0)
    e = engine_for(PERSONA, clock)
    assert await said(e, "hello") == ["Hello Ann!"]
    assert await said(e, "hello") == ["(hello again)"]  # resting: the next rule answers
    assert await said(e, "hello", chat="c2") == ["Hello Ann!"]  # per chat: another chat is not affected
    clock.jump(T0 + timedelta(minutes=9, seconds=59))
    assert await said(e, "hello") == ["(hello again)"]
    clock.jump(T0 + timedelta(minutes=10))
    assert await said(e, "hello") == ["Hello Ann!"]
    assert e.chat_state("bot", "console:c1")["greeted"] == 2  # the skipped replies set nothing


async def test_a_per_user_cooldown_says_its_cooldown_say_without_setting_or_emitting():
    clock = VirtualClock(T0)
    e = engine_for(PERSONA, clock)
    assert await said(e, "tip") == ["A tip for you."]
    assert await said(e, "tip", chat="c2") == ["One tip an hour, Ann."]  # the same user elsewhere
    assert await said(e, "tip", user="u2", name="Bob") == ["A tip for you."]  # another user in the same chat
    assert await said(e, "/launch") == ["launching", "Lift-off 1"]
    clock.jump(T0 + timedelta(hours=1, minutes=30))
    assert await said(e, "/launch") == ["Still refuelling."]  # no emit while resting
    assert e.state("bot")["launches"] == 1
    clock.jump(T0 + timedelta(hours=2))
    assert await said(e, "/launch") == ["launching", "Lift-off 2"]


async def test_a_global_cooldown_holds_for_every_chat_and_user():
    clock = VirtualClock(T0)
    e = engine_for(PERSONA, clock)
    assert await said(e, "news") == ["Big news!"]
    assert await said(e, "news", chat="c9", user="u9") == ["Sorry?"]
    clock.jump(T0 + timedelta(minutes=30))
    assert await said(e, "news", chat="c9", user="u9") == ["Big news!"]


async def test_a_fallback_with_a_cooldown_goes_quiet_then_answers_again():
    clock = VirtualClock(T0)
    e = engine_for(PERSONA, clock)
    assert await said(e, "qwerty") == ["Sorry?"]
    assert await said(e, "asdf") == []
    clock.jump(T0 + timedelta(minutes=5))
    assert await said(e, "asdf") == ["Sorry?"]


async def test_an_event_reaction_with_a_cooldown_is_skipped_while_it_rests():
    clock = VirtualClock(T0)
    e = engine_for(PERSONA, clock)

    def launch(minutes: int) -> Event:
        return Event("launch", T0 + timedelta(minutes=minutes), {}, "test", None, 0, f"k{minutes}")

    assert [o.text for o in await e.dispatch(launch(0))] == ["Lift-off 1"]
    assert await e.dispatch(launch(59)) == []
    assert [o.text for o in await e.dispatch(launch(60))] == ["Lift-off 2"]
    assert e.state("bot")["launches"] == 2


async def test_a_schedule_entry_with_a_cooldown_skips_the_ticks_inside_it():
    text = "persona: bot\nname: Bot\nschedule:\n  - cron: '0 * * * *'\n    say: tick\n    cooldown: 90m\n"
    e = engine_for(text, VirtualClock(T0))
    entry = e.personas["bot"].schedule[0]
    posts = []
    for hour in range(5):
        at = T0 + timedelta(hours=hour)
        posts.append([o.text for o in await e.react(e.personas["bot"], entry.action, Event("schedule", at))])
    assert posts == [["tick"], [], ["tick"], [], ["tick"]]


async def test_explain_says_a_rule_is_cooling_down_and_for_how_long():
    clock = VirtualClock(T0)
    e = engine_for(PERSONA, clock)
    await e.handle(msg("hello"))
    await e.handle(msg("tip"))
    clock.jump(T0 + timedelta(minutes=4))
    hello = {v.rule: v.outcome for v in e.explain(msg("hello"))}
    assert hello["replies[0]"] == "cooling down: 6m left of its 10m cooldown in this chat"
    assert hello["replies[1]"] == "answers"
    tip = {v.rule: v.outcome for v in e.explain(msg("tip"))}
    resting = "cooling down: 56m left of its 1h cooldown for this user"
    assert tip["replies[2]"] == f"answers with its cooldown_say ({resting})"


# --------------------------------------------------------------------------- limits

LIMITED = """\
persona: bot
name: Bot
limits: {messages: 3, per: 1m}
replies:
  - when: {keywords: hi}
    say: "hi {{ user.name }}"
fallback:
  say: "?"
"""


async def test_past_the_limit_one_notice_then_silence_logged_as_ignored(tmp_path: Path):
    clock = VirtualClock(T0)
    db = tmp_path / "bot.db"
    async with Store(db) as store:
        e = engine_for(LIMITED, clock, store)
        answers = [await said(e, "hi", n=str(i)) for i in range(6)]
        assert await said(e, "hi", user="u2", name="Bob") == ["hi Bob"]  # another user has an allowance of their own
        clock.jump(T0 + timedelta(seconds=59))
        assert await said(e, "hi") == []
        clock.jump(T0 + timedelta(minutes=1))
        assert await said(e, "hi") == ["hi Ann"]  # the window moved on: answered again
    assert answers == [["hi Ann"]] * 3 + [[NOTICE], [], []]
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT direction, status, text FROM interactions WHERE user='u1' ORDER BY id").fetchall()
    ins = [status for direction, status, _ in rows if direction == "in"]
    assert ins == ["ok"] * 3 + ["ignored: rate limited"] * 4 + ["ok"]


async def test_the_notice_is_said_at_most_once_per_window_even_as_slots_free_up():
    # Writing just past the limit must not earn a notice for every slot that frees up (twice the budget).
    clock = VirtualClock(T0)
    e = engine_for(LIMITED, clock)
    got = []
    for seconds in (0, 10, 20, 30, 60, 65, 70, 80, 95):
        clock.jump(T0 + timedelta(seconds=seconds))
        got.append(await said(e, "hi"))
    assert got == [["hi Ann"]] * 3 + [[NOTICE], ["hi Ann"], [], ["hi Ann"], ["hi Ann"], [NOTICE]]


async def test_a_limit_notice_may_be_a_template_or_nothing():
    clock = VirtualClock(T0)
    text = LIMITED.replace("per: 1m}", "per: 1m, notice: 'Slow down, {{ user.name }}.'}")
    e = engine_for(text, clock)
    assert [await said(e, "hi") for _ in range(5)][3:] == [["Slow down, Ann."], []]
    quiet = engine_for(LIMITED.replace("per: 1m}", "per: 1m, notice: ''}"), VirtualClock(T0))
    assert [await said(quiet, "hi") for _ in range(5)][3:] == [[], []]


async def test_explain_says_the_user_is_rate_limited():
    e = engine_for(LIMITED, VirtualClock(T0))
    for _ in range(3):
        await e.handle(msg("hi"))
    verdicts = {v.rule: v.outcome for v in e.explain(msg("hi"))}
    assert verdicts["limits"] == "rate limited: this user already sent 3 message(s) in the last 1m"
    assert verdicts["replies[0]"] == verdicts["limits"]


# --------------------------------------------------------------------------- no_repeat

JOKES = """\
persona: bot
name: Bot
no_repeat: {default}
phrases:
  bank: [p0, p1, p2, p3, p4]
replies:
  - when: {{keywords: joke}}
    say: [j0, j1, j2, j3, j4, j5]
    no_repeat: {n}
  - when: {{keywords: phrase}}
    say: "{{{{ phrase('bank') }}}}"
"""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), n=st.integers(1, 5), chats=st.lists(st.sampled_from("abc"), max_size=30))
async def test_a_say_list_never_repeats_its_last_picks_and_the_seed_decides(seed: int, n: int, chats: list[str]):
    async def run() -> list[tuple[str, str]]:
        e = engine_for(JOKES.format(default=0, n=n), VirtualClock(T0), seed=seed)
        return [(c, (await said(e, "joke", chat=c))[0]) for c in chats]

    picks = await run()
    assert picks == await run()  # same seed, same messages: same picks
    for chat in "abc":
        seen = [p for c, p in picks if c == chat]
        for i, p in enumerate(seen):
            assert p not in seen[max(0, i - n) : i], (chat, seen)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), count=st.integers(2, 20))
async def test_a_phrase_bank_avoids_its_last_picks_per_chat_with_the_persona_default(seed: int, count: int):
    e = engine_for(JOKES.format(default=3, n=0), VirtualClock(T0), seed=seed)
    picks = [(await said(e, "phrase"))[0] for _ in range(count)]
    for i, p in enumerate(picks):
        assert p not in picks[max(0, i - 3) : i], picks


async def test_no_repeat_off_keeps_the_plain_seeded_pick():
    plain = engine_for(JOKES.format(default=0, n=0), VirtualClock(T0), seed=7)
    picks = [(await said(plain, "joke"))[0] for _ in range(40)]
    assert any(a == b for a, b in itertools.pairwise(picks))  # repeats happen without it


# --------------------------------------------------------------------------- kept across restarts


async def test_cooldowns_limits_and_latest_picks_survive_a_restart(tmp_path: Path):
    text = PERSONA.replace("replies:\n", "limits: {messages: 4, per: 1h}\nno_repeat: 2\nreplies:\n", 1).replace(
        'say: "Big news!"', "say: [n0, n1, n2]"
    )
    db = tmp_path / "bot.db"
    clock = VirtualClock(T0)
    async with Store(db) as store:
        e = engine_for(text, clock, store)
        await e.restore()
        assert await said(e, "hello") == ["Hello Ann!"]
        assert await said(e, "tip") == ["A tip for you."]
        assert await said(e, "tip") == ["One tip an hour, Ann."]
        assert await said(e, "hello") == ["(hello again)"]  # Ann's fourth message of the hour
        first = await said(e, "news", user="u2")
        assert await said(e, "tip", user="u2", name="Bob") == ["A tip for you."]
    clock.jump(T0 + timedelta(minutes=5))
    async with Store(db) as store:
        e = engine_for(text, clock, store)
        await e.restore()
        assert await said(e, "hello") == [NOTICE]  # the fifth: past the limit
        assert await said(e, "hello") == []
        assert await said(e, "hello", user="u4", name="Dee") == ["(hello again)"]  # chat c1 still resting
        assert await said(e, "tip", user="u4", name="Dee", chat="c2") == ["A tip for you."]
        assert await said(e, "tip", user="u2", name="Bob") == ["One tip an hour, Bob."]  # per user, still resting
        clock.jump(T0 + timedelta(minutes=30))
        second = await said(e, "news", user="u5")
    clock.jump(T0 + timedelta(hours=1))
    async with Store(db) as store:
        e = engine_for(text, clock, store)
        await e.restore()
        assert await said(e, "tip") == ["A tip for you."]  # an hour on: Ann's allowance and tip cooldown are back
        third = await said(e, "news", user="u6")
    assert len({*first, *second, *third}) == 3  # no_repeat 2 of 3 options: the restarts did not forget


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("cooldown: 10 parsecs", "5:15: replies[0].cooldown: '10 parsecs' is not a duration: unknown unit 'parsecs'"),
        ("cooldown: 10 mintes", "(did you mean '10 minutes'?)"),
        ("cooldown: 0", "5:15: replies[0].cooldown: must be longer than zero"),
        ("cooldown: {for: 1h, per: chanel}", "5:30: replies[0].cooldown.per: 'chanel' is not a cooldown scope"),
        ("cooldown: {fr: 1h}", "5:16: replies[0].cooldown: unknown key 'fr' (did you mean 'for'?)"),
        ("cooldown_say: later", "5:5: replies[0].cooldown_say: cooldown_say needs a cooldown"),
        ("no_repeat: -1", "5:16: replies[0].no_repeat: must be at least 0, found -1"),
        ("no_repeat: many", "5:16: replies[0].no_repeat: expected an integer, found a string"),
    ],
)
def test_bad_cooldown_values_are_one_positioned_error(yaml: str, message: str):
    text = f"persona: bot\nname: Bot\nreplies:\n  - when: {{keywords: hi}}\n    {yaml}\n    say: hi\n"
    with pytest.raises(PersonaeError) as caught:
        parse_persona(text, "bot.yaml")
    lines = [str(d) for d in caught.value.diagnostics]
    assert len(lines) == 1 and message in lines[0], lines


# --------------------------------------------------------------------------- the runtime


async def test_built_in_commands_count_against_the_limit_too(tmp_path: Path):
    # A flood of /subscribe must not spend the platform budget either.
    from personae.adapters.base import AdapterConfig
    from personae.adapters.null import NullAdapter
    from personae.app.runtime import Bot, BotOptions

    captured: list[str] = []
    adapter = NullAdapter(AdapterConfig("sink", "bot"))
    async with Store(tmp_path / "bot.db") as store:
        bot = Bot(
            {"bot": parse_persona(LIMITED, "bot.yaml")},
            [adapter],
            store=store,
            clock=VirtualClock(T0),
            options=BotOptions(persist_state=False),
            transcript=lambda o: captured.append(o.text),
        )
        for n, text in enumerate(["/subscribe", "/unsubscribe", "/subscribe", "/unsubscribe", "hi", "/subscribe"]):
            await bot.on_message(Incoming("bot", "null", Chat("c1"), User("u1", "Ann"), text, str(n), adapter="sink"))
        await bot.stop()
    assert captured == [
        "Subscribed: Bot's news will arrive here.",
        "Unsubscribed. Farewell!",
        "Subscribed: Bot's news will arrive here.",
        NOTICE,
    ]


async def test_only_messages_the_persona_answers_count_against_the_limit():
    # In a group the bot hears everyone: talk it would not answer spends nothing, and gets no notice.
    e = engine_for(LIMITED, VirtualClock(T0))
    for n in range(10):
        chatter = Incoming("bot", "console", Chat("g", "group"), User("u1", "Ann"), "blah", str(n), fallback=False)
        assert await e.handle(chatter) == []
    assert [await said(e, "hi") for _ in range(4)] == [["hi Ann"]] * 3 + [[NOTICE]]


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["hello", "tip", "news", "/launch", "hi", "zzz"]),
        st.sampled_from(["c1", "c2"]),
        st.sampled_from(["u1", "u2"]),
        st.integers(0, 20),  # minutes that pass before the message
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), steps=STEPS)
async def test_any_conversation_is_the_same_twice_and_no_rule_answers_while_it_rests(seed: int, steps: list):
    text = PERSONA.replace("replies:\n", "limits: {messages: 6, per: 30m}\nno_repeat: 1\nreplies:\n", 1).replace(
        'say: "Big news!"', "say: [n0, n1, n2]"
    )

    async def run() -> list[tuple[datetime, str, str, list[str]]]:
        clock = VirtualClock(T0)
        e = engine_for(text, clock, seed=seed)
        out = []
        for n, (said_text, chat, user, minutes) in enumerate(steps):
            clock.jump(clock.now() + timedelta(minutes=minutes))
            answer = await e.handle(msg(said_text, chat=chat, user=user, n=n))
            out.append((clock.now(), chat, user, [o.text for o in answer]))
        return out

    first = await run()
    assert first == await run()
    hellos = [(at, chat) for at, chat, _, texts in first if any(t.startswith("Hello") for t in texts)]
    for (a, chat_a), (b, chat_b) in itertools.combinations(hellos, 2):
        assert chat_a != chat_b or b - a >= timedelta(minutes=10)
    news = [at for at, _, _, texts in first if any(t in ("n0", "n1", "n2") for t in texts)]
    assert all(b - a >= timedelta(minutes=30) for a, b in itertools.pairwise(news))
    for user in ("u1", "u2"):
        answered = [at for at, _, u, texts in first if u == user and texts]
        for i, at in enumerate(answered):
            # At most 6 answers plus one notice in any 30 minutes.
            assert sum(1 for x in answered[: i + 1] if at - x < timedelta(minutes=30)) <= 7
