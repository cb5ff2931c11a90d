"""Splitting long messages: within the limit as platforms count it, nothing lost, HTML still valid."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personae.delivery.split import split_message, units


class _Checked(HTMLParser):
    """Visible text and tag balance of one piece, as Telegram's HTML parser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.balanced = True

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False

    def handle_data(self, data):
        self.text.append(data)


def check_html(piece: str) -> str:
    """The visible text of ``piece``; fails if a tag or an entity is broken."""
    assert not re.search(r"&(?!#?\w+;)", piece), f"a cut entity in {piece!r}"
    assert piece.count("<") == piece.count(">"), f"a cut tag in {piece!r}"
    parser = _Checked()
    parser.feed(piece)
    parser.close()
    assert parser.balanced and not parser.stack, f"unbalanced tags in {piece!r}"
    return "".join(parser.text)


def no_space(text: str) -> str:
    return "".join(text.split())


def test_short_text_is_one_piece_untouched():
    assert split_message("  Hello\n\nthere  ", 4096) == ["  Hello\n\nthere  "]


def test_prefers_paragraphs_then_lines_then_sentences_then_words():
    para = "A" * 30 + ".\n\n" + "B" * 30 + "."
    assert split_message(para, 50) == ["A" * 30 + ".", "B" * 30 + "."]
    sentences = "One two three. Four five six. Seven eight nine."
    assert split_message(sentences, 32) == ["One two three. Four five six.", "Seven eight nine."]
    words = "alpha beta gamma delta epsilon zeta"
    assert split_message(words, 12) == ["alpha beta", "gamma delta", "epsilon zeta"]


def test_line_breaks_inside_a_piece_are_kept():
    text = "Line one\nLine two, longer\n\n" + "x " * 40
    pieces = split_message(text, 40)
    assert pieces[0] == "Line one\nLine two, longer"


def test_only_an_overlong_word_is_cut():
    assert split_message("Hi. " + "z" * 25, 10) == ["Hi.", "z" * 10, "z" * 10, "z" * 5]


def test_emoji_count_two_units():
    text = "🚀" * 10  # 10 code points, 20 UTF-16 units
    pieces = split_message(text, 8)
    assert all(units(p) <= 8 for p in pieces) and "".join(pieces) == text
    assert units("🚀a") == 3


def test_html_tags_are_closed_and_reopened_across_a_cut():
    text = '<b>Bold words here and <a href="https://esa.int">a link that goes on</a> and on</b> &amp; done.'
    pieces = split_message(text, 20, "html")
    assert len(pieces) > 1
    visible = [check_html(p) for p in pieces]
    assert all(len(v) <= 20 for v in visible)
    assert no_space("".join(visible)) == no_space(html.unescape(re.sub("<[^>]+>", "", text)))
    assert pieces[1].startswith("<b>")
    assert any(p.startswith('<b><a href="https://esa.int">') for p in pieces[1:])


def test_html_counts_visible_text_only():
    text = "<b>" + "x" * 30 + "</b>"  # 37 characters, 30 visible
    assert split_message(text, 30, "html") == [text]


# -- properties


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.integers(2, 60))
def test_pieces_fit_and_lose_nothing(text, limit):
    pieces = split_message(text, limit)
    if units(text) <= limit:
        assert pieces == [text]
        return
    assert all(0 < units(p) <= limit for p in pieces)
    assert no_space("".join(pieces)) == no_space(text)


words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=9
)


@st.composite
def html_messages(draw, depth=0):
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["text", "text", "tag"] if depth < 3 else ["text"]))
        if kind == "text":
            parts.append(html.escape(draw(words), quote=False) + draw(st.sampled_from([" ", ". ", "\n", ""])))
        else:
            inner = draw(html_messages(depth + 1))
            tag = draw(st.sampled_from(["b", "i", "u", "code", 'a href="https://x.test/?a=1&amp;b=2"']))
            parts.append(f"<{tag}>{inner}</{tag.split()[0]}>")
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(html_messages(), st.integers(4, 40))
def test_html_pieces_are_valid_fit_and_lose_nothing(text, limit):
    pieces = split_message(text, limit, "html")
    visible = [check_html(p) for p in pieces]
    assert all(units(v) <= limit for v in visible)
    assert no_space("".join(visible)) == no_space(check_html(text))


def test_limit_must_fit_one_emoji():
    with pytest.raises(ValueError):
        split_message("abc", 1)


def test_an_entity_counts_as_the_character_it_stands_for():
    pieces = split_message("&#128512;" * 30, 20, "html")  # an emoji: two units each
    assert all(units(html.unescape(p)) <= 20 for p in pieces) and "".join(pieces) == "&#128512;" * 30


def test_indentation_survives_a_cut():
    code = "<pre>" + "".join(f"    line{i:02d}\n" for i in range(10)) + "</pre>"
    pieces = split_message(code, 40, "html")
    assert len(pieces) > 1 and all(p.startswith("<pre>    line") for p in pieces)
