"""Fuzzed persona files: lint never shows a traceback, and every problem is a ``file:line:col`` inside the file."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personae.app.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [p.read_bytes() for p in sorted((ROOT / "personas").glob("*.yaml"))]

HOSTILE = [
    b"9" * 4301,
    b"-" + b"7" * 5000,
    b"0x" + b"f" * 5000,
    b"1" + b"0" * 400 + b".5e999",
    b"1e99999",
    b".nan",
    b"[" * 300 + b"]" * 300,
    b"{a: " * 300 + b"1" + b"}" * 300,
    b"&a [*a]",
    b"!!python/object/apply:os.system [echo hi]",
    b"!!python/name:os.system",
    b"!!binary aGVsbG8=",
    b"!!set {a, b}",
    b"!!timestamp 2001-12-14t21:59:43.10-05:00",
    b"!!omap [a: 1]",
    b"!custom 3",
    b"? [complex, key]\n: 1",
    b"<<: 1",
    b"*undefined",
    b"\x00\x01\x02",
    b"\xff\xfe\xfa",
    b"\xef\xbb\xbf",
    b"\t",
    b"x" * 100_000,
    b"'" * 3,
    b"%YAML 1.1\n---",
    b"--- |\n  text\n...",
    b"1:2:3:4:5",
    b"0b" + b"1" * 20000,
    b"0o" + b"7" * 10000,
    b"\xe2\x80\xa8",
    b"\x1b[31m",
]


def billion_laughs(levels: int = 7) -> bytes:
    lines = [b"a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        refs = b", ".join([b"*a%d" % (i - 1)] * 9)
        lines.append(b"a%d: &a%d [%s]" % (i, i, refs))
    return b"\n".join(lines) + b"\n"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from([*SHIPPED, billion_laughs(), b"persona: p\nname: P\n"]))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            # Land on a line start or just after a ': ' so the snippet is often a value.
            line_starts = [m.end() for m in re.finditer(rb"\n|: ", text)] or [0]
            at = draw(st.sampled_from(line_starts))
        cut = draw(st.integers(0, 20))
        snippet = draw(st.sampled_from(HOSTILE) | st.binary(max_size=12))
        text = text[:at] + snippet + text[at + cut :]
    return text


LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def check_output(path: Path, data: bytes, out: str, err: str) -> None:
    assert "Traceback" not in out + err
    lines = data.split(b"\n")
    diag_lines = [ln for ln in (out + err).splitlines() if ln.startswith(str(path))]
    summary = [ln for ln in (out + err).splitlines() if not ln.startswith(str(path))]
    assert all(s.startswith("1 file(s):") for s in summary), summary
    for ln in diag_lines:
        m = LINE.match(ln)
        assert m, ln
        line, col = int(m["line"]), int(m["col"])
        assert 1 <= line <= len(lines), ln
        assert 1 <= col <= len(lines[line - 1]) + 1, ln


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_lint_of_a_mutated_persona_never_crashes(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "p.yaml"
    path.write_bytes(data)
    check_output(path, data, *run_lint(path))


def where(path: Path, data: bytes, *, subprocess_run: bool = False) -> list[str]:
    path.write_bytes(data)
    if subprocess_run:
        r = subprocess.run(
            [sys.executable, "-m", "personae", "lint", str(path)], capture_output=True, text=True, timeout=120
        )
        out, err = r.stdout, r.stderr
    else:
        out, err = run_lint(path)
    check_output(path, data, out, err)
    return [ln for ln in (out + err).splitlines() if ln.startswith(str(path))]


def run_lint(path: Path) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["lint", str(path)])
    assert code in (0, 1)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("snippet", "line", "col", "words"),
    [
        (b"9" * 4301, 3, 12, "4301 digits"),
        (b"[" * 2000 + b"]" * 2000, 3, 12 + 98, "nested"),
        (b"&a [*a]", 3, 16, "recursive"),
    ],
)
def test_problems_are_reported_where_they_are(tmp_path, snippet, line, col, words):
    data = b"persona: p\nname: P\nstate: {x: " + snippet + b"}\n"
    got = where(tmp_path / "p.yaml", data, subprocess_run=words == "4301 digits")  # the one seen as a traceback
    assert len(got) == 1, got
    assert got[0].startswith(f"{tmp_path / 'p.yaml'}:{line}:{col}: "), got
    assert words in got[0]


def test_billion_laughs_is_refused_at_a_position(tmp_path):
    got = where(tmp_path / "p.yaml", billion_laughs())
    assert got and "alias" in got[0]
