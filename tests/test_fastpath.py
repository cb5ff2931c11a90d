"""The template fast path gives exactly what Jinja gives, or steps aside."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from personae.language.fastpath import Plan
from personae.language.templates import DIALECTS, TemplateRenderError, Templates

TEMPLATES = Templates()


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except TemplateRenderError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize(
    "source",
    [
        "Touchdown at {{ event.site }}!",
        "{{ state.count + 1 }}",
        "{{ a['b'] }} and {{ a.b.c - 2.5 }}{# a comment #}",
        "{{ 3 }}{{ 'x' }}{{ name }}",
    ],
)
def test_simple_templates_get_a_plan(source):
    assert TEMPLATES.text(source)._plan is not None


@pytest.mark.parametrize(
    "source",
    [
        "{{ event.site | upper }}",  # filters
        "{% if x %}y{% endif %}",  # statements
        "{{ phrase('greeting') }}",  # calls
        "{{ event.items }}",  # a dict attribute, not the key
        "{{ event.__class__ }}",
        "{{ self }}",  # bound by Jinja itself
        "{{ a[b] }}",  # a computed key
        "{{ a * 2 }}",
        "{{ -a }}",
    ],
)
def test_everything_else_goes_through_jinja(source):
    assert TEMPLATES.text(source)._plan is None


def test_a_plan_renders_without_jinja():
    tree = TEMPLATES.env().parse("Tick {{ event.n }} at {{ state['phase'] }}, {{ state.count + 1 }}.")
    plan = Plan.compile(tree)
    assert plan is not None
    ctx = {"event": {"n": 7}, "state": {"phase": "cruise", "count": 41}}
    assert plan.render(ctx, None, False) == "Tick 7 at cruise, 42."
    assert plan.render({"event": {}}, None, False) is None  # a missing key: Jinja decides


def test_escaping_matches_each_dialect():
    text = TEMPLATES.text("Hi {{ user.name }}")
    ctx = {"user": {"name": "<b>*Ann*</b> & co"}}
    assert text.render(ctx, "plain") == "Hi <b>*Ann*</b> & co"
    assert text.render(ctx, "html") == "Hi &lt;b&gt;*Ann*&lt;/b&gt; &amp; co"
    assert text.render(ctx, "markdown") == text.render_jinja(ctx, "markdown")
    assert "\\*Ann\\*" in text.render(ctx, "markdown")


def test_a_missing_key_still_gives_jinjas_error():
    text = TEMPLATES.text("At {{ event.site }}")
    with pytest.raises(TemplateRenderError, match="undefined"):
        text.render({"event": {}})


# -- property: for any simple template and any context, fast path == Jinja

NAMES = ["event", "state", "user", "nobody"]
KEYS = ["n", "site", "name", "count", "items", "a b"]
literal = st.text(alphabet=st.characters(blacklist_characters="{}%#", blacklist_categories=("Cs",)), max_size=12)


@st.composite
def paths(draw):
    expr = draw(st.sampled_from(NAMES))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3)):
        expr += f"[{key!r}]" if draw(st.booleans()) or " " in key else f".{key}"
    return expr


expressions = st.one_of(
    paths(),
    st.builds(lambda p, op, n: f"{p} {op} {n}", paths(), st.sampled_from("+-"), st.sampled_from(["1", "2.5", "'x'"])),
    st.sampled_from(["1", "2.5", "'<&>'"]),
)
sources = st.lists(st.one_of(literal, expressions.map(lambda e: "{{ " + e + " }}")), min_size=1, max_size=5).map(
    "".join
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.sampled_from(["<b>", "*bold*", "a & b", Markup("<i>ok</i>")]),
    st.lists(st.integers(), max_size=2),
)
values = st.recursive(leaves, lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=4), max_leaves=8)
contexts = st.dictionaries(st.sampled_from(NAMES), values, max_size=4)


@settings(max_examples=300, deadline=None)
@given(sources, contexts)
def test_fast_path_renders_exactly_as_jinja(source, ctx):
    text = TEMPLATES.text(source)
    for dialect in DIALECTS:
        assert outcome(text.render, ctx, dialect) == outcome(text.render_jinja, ctx, dialect)


def test_constant_and_templated_text_treat_newlines_alike():
    # A YAML block scalar (say: |) ends with a newline; Jinja's lexer drops it and reads CRLF as LF.
    constant = TEMPLATES.text("Hello\r\nthere\n")
    templated = TEMPLATES.text("Hello\r\n{{ who }}\n")
    assert constant.render({}) == "Hello\nthere"
    assert templated.render({"who": "there"}) == "Hello\nthere"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="{"), max_size=60))
def test_constant_text_renders_as_jinja_would(source):
    # Text without "{" skips Jinja entirely; it must still read as Jinja's lexer reads it.
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    want = ImmutableSandboxedEnvironment(keep_trailing_newline=False).from_string(source).render()
    assert TEMPLATES.text(source).render({}) == want
