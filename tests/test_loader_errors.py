"""Bad persona files: one clear message at the right file:line:col, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from personae.language.errors import PersonaeError
from personae.language.loader import load_persona, load_personas

BASE = "persona: p\nname: P\n"


def errors_of(path: Path) -> list[str]:
    with pytest.raises(PersonaeError) as info:
        load_persona(path)
    return [str(d) for d in info.value.diagnostics]


def test_unknown_key_with_suggestion(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {regexp: 'x'}\n    say: hi\n")
    assert errors_of(p) == [f"{p}:4:12: replies[0].when: unknown key 'regexp' (did you mean 'regex'?)"]


def test_unknown_top_level_key(write):
    p = write("p.yaml", BASE + "reply:\n  - when: {command: x}\n")
    assert errors_of(p) == [f"{p}:3:1: unknown key 'reply' (did you mean 'replies'?)"]


def test_malformed_yaml_points_at_problem(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {command: status\n    say: hi\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:5:") and "invalid YAML" in msg


def test_wrong_type(write):
    p = write("p.yaml", BASE + "state: [1, 2]\n")
    assert errors_of(p) == [f"{p}:3:8: state: expected a mapping, found a list"]


def test_missing_required_key(write):
    p = write("p.yaml", "persona: p\nreplies: []\n")
    assert errors_of(p) == [f"{p}:1:1: missing required key 'name'"]


def test_invalid_persona_id(write):
    p = write("p.yaml", "persona: Philae\nname: P\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:1:10: persona: 'Philae' is not a valid name")


def test_bad_regex(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {regex: '(?P<x>abc'}\n    say: hi\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:4:19: replies[0].when.regex: invalid regex: missing ), unterminated subpattern")


def test_template_syntax_error_in_block_scalar_points_at_line(write):
    p = write("p.yaml", BASE + "fallback:\n  say: |\n    line one\n    {% if %}\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:6:") and "template syntax error" in msg


def test_undefined_variable(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {command: x}\n    say: 'hi {{ usr.name }}'\n")
    assert errors_of(p) == [f"{p}:5:10: replies[0].say: undefined variable 'usr' in a reply (did you mean 'user'?)"]


def test_event_variable_not_available_in_reply(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {command: x}\n    say: '{{ event.site }}'\n")
    [msg] = errors_of(p)
    assert "undefined variable 'event' in a reply" in msg


def test_match_only_in_regex_rules(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {command: x}\n    say: '{{ match.x }}'\n")
    [msg] = errors_of(p)
    assert "'match' is only set in regex replies" in msg


def test_unknown_state_key(write):
    p = write("p.yaml", BASE + "state: {phase: a}\nreplies:\n  - when: {command: x}\n    say: '{{ state.phse }}'\n")
    assert errors_of(p) == [f"{p}:6:10: replies[0].say: unknown state key 'phse' (did you mean 'phase'?)"]


def test_unknown_set_key(write):
    p = write("p.yaml", BASE + "state: {phase: a}\nevents:\n  e:\n    set: {phasee: b}\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:6:11: events.e.set.phasee: unknown state key 'phasee'")
    assert "did you mean 'phase'" in msg


def test_sandbox_escape_attempt_is_rejected_at_load(write):
    p = write("p.yaml", BASE + "fallback:\n  say: \"{{ ''.__class__.__mro__ }}\"\n")
    assert errors_of(p) == [f"{p}:4:8: fallback.say: unsafe attribute '__class__': templates run in a sandbox"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ state|attr('__class__') }}", "unsafe attribute '__class__': templates run in a sandbox"),
        ("{{ state['__class__'] }}", "unsafe attribute '__class__': templates run in a sandbox"),
        ("{{ ('a' * 10**9)|length }}", "'*' would build a value larger than 100,000 characters"),
        ("{{ 7 ** 9999999 }}", "'**' would build a value larger than 100,000 characters"),
        ("{{ '%0999999d' % 1 }}", "'%' would build a value larger than 100,000 characters"),
        ("{{ lipsum() }}", "undefined variable 'lipsum' in a reply"),  # unseeded randomness
    ],
)
def test_templates_that_would_escape_or_exhaust_are_rejected_at_load(write, template, message):
    p = write("p.yaml", BASE + f'replies:\n  - when: {{command: x}}\n    say: "{template}"\n')
    assert errors_of(p) == [f"{p}:5:10: replies[0].say: {message}"]


def test_a_huge_value_built_from_data_is_refused_when_rendered():
    from personae.language.templates import TemplateRenderError, Templates

    text = Templates().text("{{ message.text * state.n }}")
    assert text.render({"message": {"text": "ab"}, "state": {"n": 3}}) == "ababab"
    with pytest.raises(TemplateRenderError, match="larger than 100,000 characters"):
        text.render({"message": {"text": "ab"}, "state": {"n": 10**8}})
    templates = Templates()
    for source, ctx in [("{{ '%*d' % (n, 1) }}", {"n": 10**6}), ("{{ (['a' * 1000] * n)|join }}", {"n": 1000})]:
        with pytest.raises(TemplateRenderError, match="larger than 100,000 characters"):
            templates.text(source).render(ctx)
    # Ordinary arithmetic and formatting are untouched (a '%%' or a dash in prose is no width).
    assert templates.text("{{ '%d%% - 250000 km to go' % p }}").render({"p": 5}) == "5% - 250000 km to go"
    assert templates.text("{{ '%5.2f' % x }} {{ x * 2 }}").render({"x": 3.14159}) == " 3.14 6.28318"


def test_unknown_phrase_bank(write):
    p = write("p.yaml", BASE + "phrases: {hello: [hi]}\nfallback:\n  say: \"{{ phrase('helo') }}\"\n")
    [msg] = errors_of(p)
    assert "unknown phrase bank 'helo' (did you mean 'hello'?)" in msg


def test_when_needs_exactly_one_kind(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {command: x, keywords: [y]}\n    say: hi\n")
    [msg] = errors_of(p)
    assert "give exactly one of command, regex, keywords, exact (found command, keywords)" in msg


def test_duplicate_yaml_key(write):
    p = write("p.yaml", BASE + "name: Q\n")
    assert errors_of(p) == [f"{p}:3:1: name: duplicate key 'name' (first defined at line 2)"]


def test_bad_cron(write):
    p = write("p.yaml", BASE + "schedule:\n  - cron: '61 * * * *'\n    say: hi\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:4:11: schedule[0].cron: invalid cron expression '61 * * * *'")


def test_empty_file(write):
    p = write("p.yaml", "")
    assert errors_of(p) == [f"{p}:1:1: file is empty"]


def test_binary_file(write):
    p = write("p.yaml", b"persona: p\n\x00\x01\x02\xff")
    assert errors_of(p) == [f"{p}:2:1: file is binary, not YAML text (NUL byte)"]


def test_non_utf8_file(write):
    p = write("p.yaml", b"persona: p\nname: \xe9t\xe9\n")
    assert errors_of(p) == [f"{p}:2:7: file is not UTF-8 text (binary?)"]


def test_huge_file(write):
    p = write("p.yaml", b"# " + b"x" * (10 * 1024 * 1024))
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:1:1: file is too large (10.5 MB")


def test_alias_bomb_is_refused(write):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    p = write("p.yaml", "\n".join(lines) + "\n")
    [msg] = errors_of(p)
    assert "alias expansion" in msg


def test_top_level_not_a_mapping(write):
    p = write("p.yaml", "- just\n- a list\n")
    assert errors_of(p) == [f"{p}:1:1: expected a mapping of keys at the top level, found list"]


def test_all_problems_of_a_file_are_reported_together(write):
    p = write(
        "p.yaml",
        BASE + "replies:\n  - when: {command: a}\n    say: '{{ nope }}'\n  - when: {regex: '['}\n    say: hi\n",
    )
    msgs = errors_of(p)
    assert len(msgs) == 2
    assert ":5:" in msgs[0] and ":6:" in msgs[1]


def test_duplicate_persona_ids_across_files(tmp_path, write):
    write("a.yaml", BASE)
    b = write("b.yaml", "name: Q\npersona: p\n")
    with pytest.raises(PersonaeError) as info:
        load_personas([tmp_path])
    [d] = info.value.diagnostics
    assert (d.file, d.line, d.column) == (str(b), 2, 10)
    assert "duplicate persona id 'p'" in d.message


def test_unknown_filter(write):
    p = write("p.yaml", BASE + "fallback:\n  say: '{{ persona.name | shout }}'\n")
    assert errors_of(p) == [f"{p}:4:8: fallback.say: template error: No filter named 'shout'."]


def test_condition_syntax_error(write):
    p = write("p.yaml", BASE + "replies:\n  - when: {command: x}\n    if: 'state.x =='\n    say: hi\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:5:9: replies[0].if: condition syntax error")
