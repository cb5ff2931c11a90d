"""``personae test``: conversation tests for personas, end to end through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LANDER, ORBITER, ROOT
from personae.app.cli import main


def _personae(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("PERSONAE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "personae", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the lander and orbiter personas and an empty personas/tests/, as the working directory."""
    (tmp_path / "personas" / "tests").mkdir(parents=True)
    (tmp_path / "personas" / "lander.yaml").write_text(LANDER, encoding="utf-8")
    (tmp_path / "personas" / "orbiter.yaml").write_text(ORBITER, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tests(project: Path, text: str, name: str = "lander.yaml") -> Path:
    path = project / "personas" / "tests" / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["test", *args])
    out, err = capsys.readouterr()
    return code, out, err


PASSING = """\
    personas: [lander]
    user: {name: Ada}
    tests:
      - name: status and echo
        steps:
          - say: /status
            reply: "Phase cruise, battery 100%."
            rule: replies[0]
          - say: /echo hi there
            match: "^You said: hi"
          - say: hello there
            one_of: ["Hello Ada!", "Hi Ada!", "Hey Ada!"]
          - say: mumble
            rule: fallback
"""


def test_a_passing_suite_exits_0(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tests(project, PASSING)
    code, out, _ = _run(capsys)
    assert code == 0, out
    assert "1 test(s) in 1 file(s): 1 passed, 0 failed" in out
    assert not (project / "personae.db").exists()  # the live database is never touched


def test_a_failing_step_shows_expected_actual_and_where(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _tests(
        project,
        PASSING
        + """\
      - name: wrong answer
        steps:
          - say: /status
          - say: where are you?
            reply: "On the comet."
""",
    )
    code, out, _ = _run(capsys, str(path.relative_to(project)))
    assert code == 1
    assert "1 passed, 1 failed" in out
    assert "FAIL personas/tests/lander.yaml:15: wrong answer" in out
    line = next(x for x in out.splitlines() if "step 2" in x)
    assert line.strip() == "personas/tests/lander.yaml:18:9: step 2 (say 'where are you?'):"
    assert "expected: 'On the comet.'" in out
    assert "actual:   'Still aboard the orbiter.'  (lander, replies[3] at " in out


@pytest.mark.parametrize(
    ("say", "rule", "why"),
    [
        ("where are you?", "replies[2]", "replies[2] ({file}:{line}): condition false (if: state.phase == 'surface')"),
        ("/status", "replies[8]", "replies[8] ({file}:{line}) is shadowed by an earlier rule: replies[0]"),
        ("hello there", "replies[1]", "replies[1] ({file}:{line}): no trigger match"),
    ],
)
def test_why_the_expected_rule_did_not_answer(
    project: Path, capsys: pytest.CaptureFixture[str], say: str, rule: str, why: str
) -> None:
    _tests(
        project,
        f"""\
        personas: [lander]
        tests:
          - name: why
            steps:
              - say: "{say}"
                rule: {rule}
        """,
    )
    code, out, _ = _run(capsys)
    assert code == 1
    file = "personas/lander.yaml"
    index = int(rule.split("[")[1].rstrip("]"))
    # Each rule starts at its "- when:" line.
    line = [i for i, text in enumerate(LANDER.splitlines(), 1) if text.startswith("  - when:")][index]
    assert f"why: {why.format(file=file, line=line)}" in out


def test_events_delays_and_platform_variants(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "personas" / "slow.yaml").write_text(
        textwrap.dedent(
            """\
            persona: slow
            name: Slow
            events:
              touchdown:
                say: "Heard about {{ event.site }}, late."
                delay: 2h
            """
        ),
        encoding="utf-8",
    )
    _tests(
        project,
        """\
        personas: [lander, orbiter, slow]
        platform: discord
        start: 2014-11-12T15:00:00Z
        tests:
          - name: touchdown
            steps:
              - event: touchdown
                data: {site: Agilkia}
                expect:
                  - {from: lander, reply: "**Touchdown** at Agilkia!", rule: events.touchdown}
                  - {from: orbiter, reply: "I can see his legs at Agilkia!"}
                state: {phase: surface}
              - advance: 1h
                nothing: true
              - advance: 1h
                from: slow
                reply: "Heard about Agilkia, late."
              - say: where are you?
                reply: "On the comet, at Agilkia."
                rule: personas/lander.yaml:24  # a line inside replies[2]
        """,
    )
    code, out, _ = _run(capsys)
    assert code == 0, out


def test_pieces_follow_the_platform_limit(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = " ".join(["word"] * 1000)  # 4999 characters: two Telegram messages, one on the console
    _tests(
        project,
        f"""\
        personas: [lander]
        tests:
          - name: telegram splits
            platform: telegram
            steps:
              - say: /echo {long}
                pieces: 2
          - name: mastodon threads it in 500-character posts
            platform: mastodon
            steps:
              - say: /echo {long}
                pieces: 11
          - name: the console does not
            steps:
              - say: /echo {long}
                pieces: 2
        """,
    )
    code, out, _ = _run(capsys)
    assert code == 1
    assert "2 passed, 1 failed" in out
    assert "pieces: expected 2, 1 on console" in out


def test_admin_commands_obey_admins_only(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tests(
        project,
        """\
        personas: [lander]
        tests:
          - name: admin
            user: {name: Root, admin: true}
            steps:
              - say: /emit drain
                expect:
                  - {reply: "Battery at 90%."}
                  - {reply: "Event 'drain' raised.", rule: "builtin:emit"}
                state: {battery: 90}
          - name: not admin
            steps:
              - say: /emit drain
                reply: "Sorry, only the bot's admins can do that."
                state: {battery: 100}
        """,
    )
    code, out, _ = _run(capsys)
    assert code == 0, out


UPDATABLE = """\
    # A golden transcript: --update fills in what the lander says.
    personas: [lander]
    user: {name: Ada}

    tests:
      - name: golden
        steps:
          - say: /status   # no expectation yet
          - say: /echo kept
            match: "^You said"   # passes: left as written
          - say: where are you?
            reply: "wrong"
          - event: drain

      - name: state and rule
        steps:
          - say: /status
            rule: replies[3]
            state: {battery: 7}
"""


def test_update_rewrites_expectations_and_keeps_the_rest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _tests(project, UPDATABLE)
    code, out, err = _run(capsys, "--update")
    assert code == 0, out + err
    assert f"{path.relative_to(project)}: updated 4 step(s)" in err
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# A golden transcript: --update fills in what the lander says.\n")
    assert "# no expectation yet" in text
    assert 'match: "^You said"   # passes: left as written' in text
    assert "wrong" not in text
    assert "reply: Still aboard the orbiter." in text
    assert "reply: Battery at 90%." in text
    assert "rule: replies[0]" in text
    assert "state: {battery: 100}" in text
    assert "\n\n  - name: state and rule\n" in text  # the blank line between tests stays
    # The rewritten file passes as it stands, and a second --update changes nothing.
    assert _run(capsys)[0] == 0
    assert _run(capsys, "--update")[0] == 0
    assert path.read_text(encoding="utf-8") == text


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\ufeff\x85"),
        min_size=1,
        max_size=40,
    )
)
def test_update_round_trips_any_text(project: Path, capsys: pytest.CaptureFixture[str], words: str) -> None:
    """Whatever the persona says back (here an echo of arbitrary text), --update writes a test that passes."""
    path = _tests(
        project,
        f"""\
        personas: [lander]
        tests:
          - name: echo
            steps:
              - say: {json.dumps("/echo " + words, ensure_ascii=False)}
              - say: {json.dumps("repeat " + words, ensure_ascii=False)}
        """,
    )
    code, out, err = _run(capsys, "--update")
    assert code == 0, out + err
    code, out, err = _run(capsys)
    assert code == 0, out + err + path.read_text(encoding="utf-8")


def test_junit_output_parses(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tests(project, PASSING)
    _tests(
        project,
        """\
        personas: [orbiter]
        tests:
          - name: orbiter is wrong
            steps:
              - say: /status
                reply: "Landed."
        """,
        name="orbiter.yaml",
    )
    code, out, _ = _run(capsys, "--format", "junit")
    assert code == 1
    root = ET.fromstring(out)
    assert root.tag == "testsuites"
    assert root.get("tests") == "2" and root.get("failures") == "1"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"personas/tests/lander.yaml", "personas/tests/orbiter.yaml"}
    failed = suites["personas/tests/orbiter.yaml"].find("testcase")
    assert failed is not None and failed.get("name") == "orbiter is wrong"
    failure = failed.find("failure")
    assert failure is not None and "Orbiting." in (failure.text or "")
    assert suites["personas/tests/lander.yaml"].find("testcase/failure") is None


def test_coverage_lists_what_no_test_exercised(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tests(
        project,
        """\
        personas: [lander]
        tests:
          - name: only status
            steps:
              - say: /status
        """,
    )
    code, out, _ = _run(capsys, "--coverage")
    assert code == 0
    lines = out.splitlines()
    assert "coverage: rules 1/14, events 0/3, phrases 0/3" in lines
    echo = LANDER.splitlines().index("  - when: {command: [echo, say]}") + 1
    assert f"personas/lander.yaml:{echo}: rule lander replies[1] never answered or posted" in lines
    assert "personas/lander.yaml:21: rule lander fallback never answered or posted" not in lines
    assert any(x.endswith(": event touchdown (lander) never raised") for x in lines)
    assert "personas/lander.yaml:7: phrase lander greeting[0] never said" in lines
    assert not any("lander replies[0] never" in x for x in lines)
    assert any("orbiter replies[0] never" in x for x in lines)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("personas: [landr]\ntests: [{name: a, steps: [{say: hi}]}]\n", "1:12", "unknown persona 'landr'"),
        (
            "tests:\n  - name: a\n    steps:\n      - say: hi\n        rule: replies[42]\n",
            "5:15",
            "unknown rule 'replies[42]'",
        ),
        (
            "tests:\n  - name: a\n    steps:\n      - say: hi\n        rule: lander.yaml:900\n",
            "5:15",
            "no rule in lander.yaml at line 900",
        ),
        (
            "tests:\n  - name: a\n    steps:\n      - say: hi\n        reply: a\n        match: b\n",
            "4:9",
            "give at most one of reply, match, one_of",
        ),
        ("tests:\n  - name: a\n    steps:\n      - say: hi\n        match: '(('\n", "5:16", "invalid regex"),
        ("tests:\n  - name: a\n    steps:\n      - advance: 10 parsecs\n", "4:18", "'10 parsecs' is not a duration"),
        ("tests:\n  - name: a\n    steps:\n      - event: touchdwn\n", "4:16", "(did you mean 'touchdown'?)"),
        ("tests:\n  - name: a\n    steps:\n      - say: hi\n        replyy: x\n", "5:9", "unknown key 'replyy'"),
        ("tests:\n  - name: a\n    steps:\n      - say: hi\n        pieces: 0\n", "5:17", "pieces"),
        ("tests:\n  - name: a\n    steps:\n      - say: hi\n        state: {phaze: x}\n", "5:17", "'phaze'"),
        ("tests:\n  - name: a\n    steps:\n      - {say: hi, event: drain}\n", "4:9", "give exactly one of"),
        ("tests:\n  - name: a\n    steps: []\n", "3:12", "must not be empty"),
        ("tests:\n  - name: a\n    steps: [{say: hi, from: nobody}]\n", "3:29", "'nobody' is not in this test"),
        ("tests: [{name: a, platform: icq, steps: [{say: hi}]}]\n", "1:29", "unknown platform 'icq'"),
        ("persona: x\nname: X\n", "1:1", "not a test file"),
        ("tests: [unclosed\n", "2:1", "invalid YAML"),
    ],
)
def test_bad_test_files_give_one_clear_line(
    project: Path, capsys: pytest.CaptureFixture[str], text: str, where: str, message: str
) -> None:
    path = _tests(project, text, name="bad.yaml")
    code, out, err = _run(capsys, str(path.relative_to(project)))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"personas/tests/bad.yaml:{where}: "), lines[0]
    assert message in lines[0]


def test_lint_checks_test_files_next_to_personas(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tests(project, PASSING)
    assert main(["lint", "personas"]) == 0
    _tests(project, "tests: [{name: a, steps: [{say: hi, rule: 'replies[77]'}]}]\n", name="bad.yaml")
    capsys.readouterr()
    assert main(["lint", "personas"]) == 1
    out = capsys.readouterr().out
    assert "personas/tests/bad.yaml:1:43: tests[0].steps[0].rule: unknown rule 'replies[77]'" in out


def test_bad_input_in_a_real_process_is_one_line_without_traceback(project: Path) -> None:
    (project / "personas" / "tests").rmdir()
    done = _personae("test", cwd=project)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: no such file or folder: personas/tests (personae init creates a persona with its tests)"
    )


def test_schema_of_test_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--test"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "personae persona tests"
    step = schema["$defs"]["Step"]["properties"]
    assert {"say", "event", "data", "advance", "reply", "match", "one_of", "nothing", "rule", "state"} <= set(step)


def test_the_shipped_personas_have_passing_tests_covering_every_rule_and_event() -> None:
    done = _personae("test", "--coverage", cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    summary = next(x for x in lines if x.startswith("coverage:"))
    rules, events = summary.split(", ")[:2]
    n, total = rules.removeprefix("coverage: rules ").split("/")
    assert n == total and int(total) > 90
    n, total = events.removeprefix("events ").split("/")
    assert n == total
    assert not any("never answered" in x or "never raised" in x for x in lines)
    assert not (ROOT / "personas" / "tests" / "personae.db").exists()
