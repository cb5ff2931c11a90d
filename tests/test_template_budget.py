"""Author templates built to exhaust resources: lint proves what it can, a render stays in its budget.

Each hostile template either is reported by ``personae lint`` (which itself
runs under a 1 GiB address-space limit), or fails when rendered with one
``file:line`` budget error while ``personae chat`` goes on answering.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from personae.language.templates import TemplateRenderError, Templates

LINT_MEMORY = 384 * 1024**2  # lint must work in a few hundred MB of address space (it needs about 40 MB)
CHAT_MEMORY = 1024**3
HANG_GUARD = 120  # seconds: generous, the machine is shared
MAX_ITERATIONS = 10_000  # the budget README documents
MAX_OUTPUT = 65_536

# Hostile values come from state, so lint cannot fold them: these are caught when rendered.
RUNTIME_STATE = "state: {big: 1000000000, n: 99999, m: 200, k: 60, x: 'x', tab: \"\\t\"}\n"
RUNTIME = [
    "{% for a in range(state.m) %}{% for b in range(state.m) %}{% endfor %}{% endfor %}",  # nested loops
    "{% for a in range(state.n) %}{% endfor %}",
    "{{ range(state.big)|sum }}",
    "{{ ('%' ~ state.big ~ 's')|format('x') }}",
    "{{ state.x|center(state.big) }}",
    "{{ state.x.ljust(state.big) }}",
    "{{ state.x.rjust(state.big, '-') }}",
    "{{ state.x.zfill(state.big) }}",
    "{{ state.tab.expandtabs(state.big) }}",
    "{{ '{:{}}'.format(state.x, state.big) }}",
    "{{ '{a:>{b}}'.format_map({'a': state.x, 'b': state.big}) }}",
    "{{ ('{0:99999}' * 100).format(state.x) }}",
    "{{ '%*s' % (state.big, state.x) }}",
    "{{ '%.*f' % (state.big, 1.5) }}",
    "{{ ('%99999s' * 100) % ((state.x,) * 100) }}",
    "{% macro m(i) %}{{ m(i + 1) if i < state.big else '' }}{% endmacro %}{{ m(0) }}",  # deep recursion
    # 2**60 calls, none deeper than 60
    "{% macro f(i) %}{% if i < state.k %}{{ f(i + 1) }}{{ f(i + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
    "{% for x in [[state.x]] recursive %}{{ loop([x, x]) }}{% endfor %}",  # a recursive loop that never ends
    "{{ ((state.x ~ '\\n') * 1000)|indent(state.big) }}",
    "{{ ((state.x ~ '\\n') * 50000)|indent(state.x * 1000) }}",
    "{{ (state.x * 50000)|replace(state.x, state.x * 50000) }}",
    "{{ (state.x * 1000)|replace('', state.x * 1000) }}",
    "{{ (state.x * 1000).replace(state.x, state.x * 1000) }}",
    "{{ range(1000)|join(state.x * 1000) }}",
    "{{ (state.x * 1000).join(range(1000)|map('string')) }}",
    "{% set ns = namespace(s=state.x) %}{% for i in range(state.k) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ns.s}}",
    "{% set ns = namespace(s=state.x) %}{% for i in range(state.k) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ns.s}}",
    "{% set ns = namespace(v=7) %}{% for i in range(state.k) %}{% set ns.v = ns.v * ns.v %}{% endfor %}{{ ns.v % 10 }}",
    "{{ (state.x|string) * state.big }}",
    "{{ ([state.x] * state.big)|length }}",
    "{{ (7 ** state.big) % 10 }}",
    "{{ (state.x * 99999)|wordwrap(1) }}",
    "{{ ((state.x ~ ' ') * 5000)|wordwrap(2, true, state.x * 1000) }}",
    "{{ [1]|batch(state.big, 0)|list|length }}",
    "{{ [1]|slice(state.big)|list|length }}",
    "{{ (({'a': state.x}|dictsort) * state.big)|length }}",
    "{% for i in range(9000) %}{{ state.x * 100 }}{% endfor %}",  # 900,000 characters of output
    "{% macro m() %}{% for i in range(state.m * 40) %}" + "y" * 200 + "{% endfor %}{% endmacro %}{{ m()|length }}",
    "{% set l = [state.x * 1000] * 50 %}{% set l2 = [l] * 1000 %}{{ l2|string|length }}",  # shared references
    "{% set l = [state.x * 1000] * 50 %}{{ [l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l] }}",
    "{% for i in range(9999) %}{{ (state.x * 99999)|wordwrap(79)|length }}{% endfor %}",  # CPU
    "{{ [[[[state.x]]]]|tojson(indent=state.big) }}",
    "{{ ('a.com ' * 5000)|urlize(target=state.x * 1000) }}",
    "{{ (state.x.encode() * state.big)|length }}",
    "{{ (1).to_bytes(state.big, 'big')|length }}",
    "{{ (state.x * 1000).translate({120: state.x * 1000}) }}",
    "{{ ('{:%' ~ state.big ~ 'Y}').format(now) }}",
    "{% set l = [0] * 9 %}{% set ll = [l] * (state.m * 45) %}{{ ll|sum(start=[])|length }}",  # quadratic copying
    "{% set l = [0] * 10000 %}{{ ([l] * state.m)|sort|length }}",  # a few KB of references, 2,000,000 items
    "{% block b %}{{ self.b() }}{% endblock %}",
    "{% macro m() %}{{ caller() }}{% endmacro %}{% macro c() %}{% call m() %}{{ c() }}{% endcall %}{% endmacro %}"
    "{{ c() }}",
]

# Constant hostile templates: lint proves them, and refuses the persona.
CONSTANT = [
    ("{% for a in range(9999) %}{% for b in range(9999) %}{% endfor %}{% endfor %}", "loops would run"),
    ("{{ '%1000000000s'|format('x') }}", "'format' would build"),
    ("{{ '%.1000000000f' % 1.5 }}", "'%' would build"),
    ("{{ 'x'|center(1000000000) }}", "'center' would build"),
    ("{{ 'x'.ljust(10**9) }}", "'ljust' would build"),
    ("{{ 'x'.zfill(10**9) }}", "'zfill' would build"),
    ("{{ '\\t'.expandtabs(10**9) }}", "'expandtabs' would build"),
    ("{{ '{:1000000000}'.format('x') }}", "'format' would build"),
    ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "macro 'm' always calls itself (m → m)"),
    ("{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}x{{ a() }}{% endmacro %}", "(a → b → a)"),
    ("{{ 'x'|indent(10**9, true) }}", "'indent' would build"),
    ("{{ ('x' * 1000)|replace('x', 'y' * 1000) }}", "'replace' would build"),
    ("{{ [1, 2]|join('x' * 99999) }}", "'join' would build"),
    ("{{ range(99999)|sum }}", "range() of 99,999 numbers"),
    ("{{ ('a' * 10**9)|length }}", "'*' would build"),
    ("{{ [1]|batch(10**9, 0)|list }}", "'batch' would build"),
    ("{{ [1]|slice(10**9)|list }}", "'slice' would build"),
    ("{{ (1).to_bytes(10**9, 'big') }}", "'to_bytes' would build"),
    ("{{ 'ab' * 40000 ~ 'cd' * 40000 }}", "'~' would build"),
    ("{{ ('x' * 99999)|wordwrap(1) }}", "'wordwrap' would make more than"),
    ("{% for a in range(200) %}{% for b in range(200) %}{% endfor %}{% endfor %}", "loops would run 40,200"),
    ("{% for a in range(9000) %}0123456789{% endfor %}", "would write 90,000 characters"),
    ("{{ 'x' * 70000 }}", "would write 70,000 characters"),
]


def persona(state: str, templates: list[str]) -> str:
    lines = ["persona: p", "name: P", state.rstrip("\n"), "replies:", "  - when: {command: ok}", "    say: ok"]
    for i, template in enumerate(templates):
        lines += [f"  - when: {{command: t{i}}}", "    say: |-", f"      {template}"]
    return "\n".join(lines) + "\n"


def reply_line(text: str, i: int) -> int:
    return text.splitlines().index(f"  - when: {{command: t{i}}}") + 1


def run(*args: str, stdin: str = "", memory: int) -> subprocess.CompletedProcess[str]:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-m", "personae", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        preexec_fn=limited,
    )


def test_lint_proves_constant_template_bombs_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = persona("state: {}", [t for t, _ in CONSTANT])
    path.write_text(text)
    r = run("lint", str(path), memory=LINT_MEMORY)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    out = r.stdout + r.stderr
    for i, (_, message) in enumerate(CONSTANT):
        line = reply_line(text, i) + 1  # the say: below its rule
        found = [x for x in out.splitlines() if x.startswith(f"{path}:{line}:") and f"replies[{i + 1}].say" in x]
        assert len(found) == 1 and message in found[0], (i, found, out)


def test_runtime_template_bombs_fail_with_one_error_and_chat_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = persona(RUNTIME_STATE, RUNTIME)
    path.write_text(text)
    # Lint cannot prove these (the sizes are data), and must say so quickly, in bounded memory.
    lint = run("lint", str(path), memory=LINT_MEMORY)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    stdin = "".join(f"/t{i}\n/ok\n" for i in range(len(RUNTIME)))
    r = run("chat", "p", "--personas", str(path), "--no-log", stdin=stdin, memory=CHAT_MEMORY)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.splitlines() == ["P: ok"] * len(RUNTIME)  # every next message answered
    errors = r.stderr.splitlines()
    assert len(errors) == len(RUNTIME), r.stderr  # one error per bomb
    for i, error in enumerate(errors):
        assert error.startswith(f"{path}:{reply_line(text, i)}: error: over budget: "), (i, RUNTIME[i], error)


def test_budget_errors_name_the_limit() -> None:
    templates = Templates()
    cases = {
        "{% for a in range(n) %}{% for b in range(n) %}{% endfor %}{% endfor %}": f"more than {MAX_ITERATIONS:,}",
        "{% macro m(i) %}{{ m(i + 1) if i < n else '' }}{% endmacro %}{{ m(0) }}": "nested more than 50 deep",
        "{% for i in range(n // 10) %}{{ 'x' * 5000 }}{% endfor %}": f"wrote more than {MAX_OUTPUT:,} characters",
        "{{ 'x'|center(n * n * n) }}": "'center' would build a value larger than 100,000 characters",
    }
    for source, message in cases.items():
        with pytest.raises(TemplateRenderError, match="over budget: .*" + message.replace("(", r"\(")):
            templates.text(source).render({"n": 200})


# -- property: templates within the budget render exactly as plain Jinja renders them

SNIPPETS = [
    "plain text ",
    "{{ a }}",
    "{{ a + 1 }} {{ a * 3 }} {{ a - 2 }} {{ a // 3 if a else 0 }}",
    "{{ b ~ '!' }}{{ b * 2 }}",
    "{{ b|upper }}{{ b|center(12) }}{{ b|indent(2, true) }}",
    "{{ xs|join(', ') }}|{{ xs|sum }}|{{ xs|length }}",
    "{{ '%5d' % a }}{{ '%-8s|' % b }}{{ '%.2f' % (a / 7) }}",
    "{{ '{:>8}'.format(b) }}{{ '{0}-{0}'.format(a) }}",
    "{{ b.replace('a', 'bb') }}{{ b.ljust(6, '.') }}{{ b.zfill(4) }}",
    "{% for x in xs %}[{{ loop.index }}:{{ x }}]{% else %}none{% endfor %}",
    "{% for i in range(a % 7) %}{% for j in range(i) %}{{ j }}{% endfor %};{% endfor %}",
    "{% macro m(v) %}<{{ v }}>{% endmacro %}{{ m(b) }}{{ m(a) }}",
    "{% set ns = namespace(t='') %}{% for x in xs %}{% set ns.t = ns.t ~ x %}{% endfor %}{{ ns.t }}",
    "{{ xs|batch(2)|list }}{{ xs|slice(2)|list }}{{ xs|reverse|list }}",
    "{{ (b ~ ' ') * 3|wordwrap(5) }}{{ b|replace('', '-') }}",
    "{{ {'k': a, 'j': b}|dictsort }}{{ xs|map('string')|join }}",
    "{{ b|format }}{{ '%s and %s'|format(a, b) }}{{ b|truncate(9) }}",
    "{% for x in [xs, xs] recursive %}{% if x is iterable %}({{ loop(x) }}){% else %}{{ x }}{% endif %}{% endfor %}",
]

context = st.fixed_dictionaries(
    {
        "a": st.integers(-1000, 1000),
        "b": st.text(alphabet="abc <&>*_x", max_size=12),
        "xs": st.lists(st.integers(-50, 50), max_size=6),
    }
)


def _reference(autoescape: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=autoescape, trim_blocks=True, lstrip_blocks=True
    )


REFERENCE = {"plain": _reference(False), "html": _reference(True)}
TEMPLATES = Templates()


def outcome(render, *args):  # type: ignore[no-untyped-def]
    try:
        return ("ok", render(*args))
    except Exception:
        return ("error",)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=4).map("".join), context)
def test_templates_within_the_budget_render_as_plain_jinja(source: str, ctx: dict[str, object]) -> None:
    text = TEMPLATES.text(source)
    for dialect, reference in REFERENCE.items():
        expected = outcome(reference.from_string(source).render, ctx)
        assert outcome(text.render_jinja, ctx, dialect) == expected
        assert outcome(text.render, ctx, dialect) == expected
