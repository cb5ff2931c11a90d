"""Property tests: open-ended input (user text, persona files, templates) never breaks anything."""

from __future__ import annotations

import asyncio
import re
import string
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LANDER
from personae import Chat, Incoming, User
from personae.engine.engine import Engine
from personae.engine.router import Router, Trigger, parse_command
from personae.engine.safe_regex import compile_regex
from personae.language.errors import PersonaeError
from personae.language.lint import lint
from personae.language.loader import parse_persona

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LANDER_PERSONA = parse_persona(LANDER)


def run(coro):
    return asyncio.run(coro)


def handle(engine: Engine, text: str) -> list[str]:
    incoming = Incoming("lander", "console", Chat("c"), User("u", "U"), text, message_id="1", bot_username="LanderBot")
    return [o.text for o in run(engine.handle(incoming))]


@SETTINGS
@given(st.text())
def test_arbitrary_user_text_never_raises(text):
    engine = Engine({"lander": LANDER_PERSONA})
    out = handle(engine, text)
    assert len(out) <= 1
    assert not engine.problems


ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=40)  # lone surrogates too


@settings(max_examples=60, deadline=None)
@given(ANY_TEXT, ANY_TEXT)
def test_any_user_text_and_name_is_logged_intact_or_made_valid(text, name):
    # A platform's JSON can carry a lone surrogate ("\\ud800"): it must neither raise nor
    # jam the SQLite log, and valid text must be stored exactly as sent.
    import sqlite3

    from personae.language.text import valid_unicode
    from personae.storage.store import Store

    async def go(db: Path) -> None:
        async with Store(db) as store:
            engine = Engine({"lander": LANDER_PERSONA}, store=store)
            await engine.handle(Incoming("lander", "console", Chat("c"), User("u", name), text, message_id="1"))

    with tempfile.TemporaryDirectory() as d:
        run(go(Path(d) / "log.db"))
        rows = (
            sqlite3.connect(Path(d) / "log.db")
            .execute("SELECT direction, text, user_name FROM interactions ORDER BY id")
            .fetchall()
        )
    assert rows[0] == ("in", valid_unicode(text), valid_unicode(name))
    assert [r[0] for r in rows] in (["in"], ["in", "out"])
    if text == valid_unicode(text):
        assert rows[0][1] == text


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=80))
def test_user_text_is_echoed_literally_never_evaluated(payload):
    engine = Engine({"lander": LANDER_PERSONA})
    text = "repeat " + payload
    # The "status" keyword rule comes later in the file; a payload that is a command
    # (or another earlier trigger) legitimately wins, so only check the keyword path.
    out = handle(engine, text)
    if out and out[0].startswith("Repeat: "):
        from personae.language.text import valid_unicode

        assert out[0] == "Repeat: " + valid_unicode(text)  # literal; only NUL becomes U+FFFD


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_file_never_tracebacks_in_lint(text):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "x.yaml").write_text(text, encoding="utf-8", errors="surrogatepass" if False else "strict")
        result = lint([d])
        for diag in result.diagnostics:
            assert diag.file.endswith("x.yaml") and diag.line >= 1 and diag.column >= 1


KEYS = [
    "persona",
    "name",
    "replies",
    "when",
    "say",
    "regex",
    "keywords",
    "command",
    "exact",
    "events",
    "set",
    "state",
    "emit",
    "if",
    "platforms",
    "fallback",
    "schedule",
    "cron",
    "phrases",
    "delay",
    "data",
    "event",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["{{ state.x }}", "{% if %}", "[", "(?P<x>", "0 9 * * *", "{{ ''.__class__ }}"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=30,
)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), documents, max_size=8))
def test_arbitrary_yaml_documents_never_traceback_in_lint(doc):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "x.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        result = lint([d])
        assert all(diag.line >= 1 for diag in result.diagnostics)


@SETTINGS
@given(st.integers(min_value=0, max_value=len(LANDER) - 1), st.text(max_size=3))
def test_mutated_persona_never_tracebacks(pos, insert):
    text = LANDER[:pos] + insert + LANDER[pos + 1 :]
    try:
        parse_persona(text)
    except PersonaeError as exc:
        assert exc.diagnostics


@SETTINGS
@given(st.text(max_size=60))
def test_arbitrary_templates_load_or_fail_cleanly_and_render_safely(template):
    source = (
        "persona: t\nname: T\nstate: {x: 1}\nreplies:\n  - when: {command: go}\n    say: "
        + yaml.safe_dump(template).split("\n...")[0].strip()
        + "\n"
    )
    try:
        persona = parse_persona(source)
    except PersonaeError as exc:
        assert exc.diagnostics
        return
    engine = Engine({"t": persona})
    out = run(engine.handle(Incoming("t", "console", Chat("c"), User("u", "U"), "/go")))
    assert len(out) <= 1  # rendered, or reported in engine.problems; never raised


# The router's indexes must give exactly what a linear scan of all rules gives.
WORDS = ["ab", "abc", "cab", "Comète", "bca", "a b", "xyz"]
regexes = (
    st.sampled_from(
        [
            r"(?i)\babc\b",
            r"abc",
            r"(?i)c.b",
            r"ab+c",
            r"(?i)comète",
            r"(?i)bca|xyz",
            r"^ab",
            r"(?i)(?P<w>\w+) xyz",
            r"KAB",
            r"(?i)kab",
        ]
    )
    | st.builds(
        # Several required literals per pattern, some shared by other patterns, some not: the
        # index files each pattern under one of them and must still find every match.
        lambda flags, a, b, c: flags + re.escape(a) + r"(?P<g>\w+)" + re.escape(b) + "(?:x )?" + re.escape(c),
        st.sampled_from(["", "(?i)"]),
        st.sampled_from(["abc ", "ab", "xyz"]),
        st.sampled_from([" c ", " cab "]),
        st.text(alphabet="abcK xy", min_size=0, max_size=6),
    )
    | st.builds(
        # Literals of every length from 3: the index files those of 4+ under two of their
        # trigrams and samples half the text, so offsets and parities must all be covered.
        lambda flags, lit: flags + re.escape(lit),
        st.sampled_from(["", "(?i)"]),
        st.text(alphabet="abcK xy", min_size=3, max_size=8),
    )
)
triggers = st.one_of(
    st.builds(lambda r: Trigger(regex=compile_regex(r)), regexes),
    st.builds(lambda k: Trigger(keywords=(k,)), st.sampled_from(WORDS)),
    st.builds(lambda c: Trigger(commands=(c,)), st.sampled_from(["ab", "abc", "x"])),
    st.builds(lambda e: Trigger(exact=(e,)), st.sampled_from(WORDS)),
)
texts = (
    st.lists(
        st.sampled_from(
            [*WORDS, "/ab", "/abc@Bot", " ", "K", "\u212aab", "ABC", "é", "x", "abc ", " c ", " cab ", "x "]
        ),
        max_size=8,
    ).map("".join)
    | st.text(alphabet=string.ascii_letters + " /@éèÈK\u212a\u0130\u0131\u017f", max_size=20)
    | st.text(alphabet="abcKkAB xy", max_size=24)
)


def naive(triggers: list[Trigger], text: str) -> list[int]:
    from personae.language.text import squash, words

    cmd = parse_command(text, "/!")
    toks = words(text)
    joined = " " + " ".join(toks) + " "

    def matches(t: Trigger) -> bool:
        by_command = cmd is not None and cmd.name in t.commands
        by_exact = squash(text) in [squash(e) for e in t.exact]
        by_keyword = any(" " + " ".join(words(k)) + " " in joined for k in t.keywords if words(k))
        by_regex = t.regex is not None and t.regex.python.search(text) is not None
        return by_command or by_exact or by_keyword or by_regex

    return [i for i, t in enumerate(triggers) if matches(t)]


@settings(max_examples=400, deadline=None)
@given(st.lists(triggers, min_size=1, max_size=12), texts)
def test_router_index_agrees_with_linear_scan(trigs, text):
    router = Router(trigs)
    cmd = parse_command(text, "/!")
    indexed = [i for i in router.candidates(text, cmd) if router.hit(i, text, cmd) is not None]
    assert indexed == naive(trigs, text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="abcK xy", min_size=3, max_size=10), min_size=1, max_size=6),
    st.data(),
)
def test_regex_prefilter_finds_a_literal_at_any_offset(literals, data):
    # The text always contains one of the literals, at an arbitrary offset and parity.
    icase = data.draw(st.booleans())
    router = Router([Trigger(regex=compile_regex(("(?i)" if icase else "") + re.escape(lit))) for lit in literals])
    chosen = data.draw(st.integers(0, len(literals) - 1))
    prefix = data.draw(st.text(alphabet="abcKk xyz", max_size=9))
    suffix = data.draw(st.text(alphabet="abcKk xyz", max_size=9))
    text = prefix + (literals[chosen].upper() if icase else literals[chosen]) + suffix
    hits = [i for i in router.candidates(text, None) if router.hit(i, text, None) is not None]
    assert chosen in hits
    assert hits == [i for i, lit in enumerate(literals) if re.search(("(?i)" if icase else "") + re.escape(lit), text)]


PHRASES = ["what is the ", "how far is ", "tell me about ", "abc"]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_router_finds_matches_of_patterns_sharing_phrases(data):
    # Patterns share their opening phrase (as FAQ personas do) and differ by a topic; each is
    # filed under one required literal, and every pattern a text matches must still be found.
    n = data.draw(st.integers(1, 8))
    icase = data.draw(st.booleans())
    shapes = []
    for _ in range(n):
        phrase = data.draw(st.sampled_from(PHRASES))
        topic = data.draw(st.text(alphabet="xyzqK", min_size=1, max_size=6))
        optional = data.draw(st.sampled_from(["", "the ", "ab "]))
        shapes.append((phrase, topic, optional))
    flags = "(?i)" if icase else ""
    rules = [
        Trigger(
            regex=compile_regex(
                flags + re.escape(p) + r"(?P<w>\w+) " + (f"(?:{re.escape(o)})?" if o else "") + re.escape(t)
            )
        )
        for p, t, o in shapes
    ]
    router = Router(rules)
    chosen = data.draw(st.integers(0, n - 1))
    p, t, o = shapes[chosen]
    word = data.draw(st.sampled_from(["comet", "x", "size"]))
    body = p + word + " " + (o if o and data.draw(st.booleans()) else "") + t
    text = data.draw(st.text(alphabet="ab xyz", max_size=6)) + (body.upper() if icase else body)
    hits = [i for i in router.candidates(text, None) if router.hit(i, text, None) is not None]
    assert chosen in hits
    assert hits == [i for i, rule in enumerate(rules) if rule.regex is not None and rule.regex.python.search(text)]


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=12) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), yaml_values, min_size=1, max_size=5), st.booleans())
def test_libyaml_and_pyyaml_give_the_same_source(data, flow):
    # Plain files are composed by libyaml (fast), the others by PyYAML: both must give the
    # same data, positions and scalar styles, or diagnostics would move between the two.
    import yaml

    from personae.language import source as src

    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    if not src._fast_path(text):
        return
    fast = src._parse(src._CLoader(text), "t.yaml")
    loader = src._Loader(text, "t.yaml")
    try:
        slow = src._parse(loader, "t.yaml")
    finally:
        loader.dispose()
    assert (fast.data, fast.values, fast.keys, fast.styles) == (slow.data, slow.values, slow.keys, slow.styles)
