"""``personae report``: end to end through the CLI, on databases written by ``personae chat``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from personae.app.cli import main
from personae.app.questions import group_questions, normalise
from personae.app.report_html import write_atomic
from personae.storage.store import LogRow, Store

ROOT = Path(__file__).resolve().parent.parent
PERSONAS = ROOT / "personas"
PERSONAE = [sys.executable, "-m", "personae"]

# Paraphrase sets a fallback answers: each must come out as one group.
AGE = ["how old are you", "what's your age", "How old are you?!", "what is your age"]
BUILDER = ["who built you", "who made you?", "Who created you"]
WEIGHT = ["how heavy are you", "how much do you weigh"]
# Unrelated questions: none may join another group.
ALONE = [
    "is there water on the comet",
    "what is your favourite colour",
    "how old is the comet",
    '<script>alert("x")</script></svg><a href="http://x.test/">',  # must reach the page as text
]
ANSWERED = ["/status", "where are you", "tell me about the harpoons"]


def personae(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("PERSONAE_DEBUG", None)
    return subprocess.run(
        [*PERSONAE, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_report(*args: str) -> Result:
    """``personae report ARGS`` through the CLI's entry point, in this process (a subprocess costs seconds)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", *args])
    return Result(code, out.getvalue(), err.getvalue())


def chat(db: Path, persona: str, lines: list[str], user: str = "ana") -> None:
    done = personae(
        "chat", persona, "--db", str(db), "--personas", str(PERSONAS), "--user", user, stdin="\n".join(lines) + "\n"
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of two chats with Philae: answered questions, paraphrased unanswered ones, an event."""
    db = tmp_path_factory.mktemp("report") / "log.db"
    chat(db, "philae", [*ANSWERED, *AGE[:2], *BUILDER, "!event touchdown site=Agilkia from_earth_km=500", *ALONE])
    chat(db, "philae", [*AGE[2:], *WEIGHT], user="bo")
    return db


def report_json(db: Path, *extra: str) -> dict[str, Any]:
    personas = () if "--personas" in extra else ("--personas", str(PERSONAS))
    done = run_report("--db", str(db), *personas, "--format", "json", *extra)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def group_of(report: dict[str, Any], text: str) -> dict[str, Any]:
    found = [g for g in report["unanswered"] if text in g["examples"]]
    assert len(found) == 1, (text, report["unanswered"])
    return found[0]


def test_unanswered_paraphrases_fall_in_one_group_most_frequent_first(logged: Path) -> None:
    report = report_json(logged)
    groups = report["unanswered"]
    age = group_of(report, "how old are you")
    assert "what's your age" in age["examples"]
    assert age["count"] == len(AGE) and sorted(age["examples"]) == sorted(AGE)
    assert groups[0] is not None and groups[0]["label"] == age["label"]
    builder = group_of(report, "who built you")
    assert builder["count"] == len(BUILDER) and sorted(builder["examples"]) == sorted(BUILDER)
    assert group_of(report, "how heavy are you")["count"] == len(WEIGHT)
    for text in ALONE:
        assert group_of(report, text)["count"] == 1, text
    counts = [g["count"] for g in groups]
    assert counts == sorted(counts, reverse=True)
    asked = len(AGE) + len(BUILDER) + len(WEIGHT) + len(ALONE)
    assert sum(counts) == asked
    assert report["fallback"]["fallbacks"] == asked
    assert report["fallback"]["replies"] == asked + len(ANSWERED)
    assert report["fallback"]["rate"] == pytest.approx(asked / (asked + len(ANSWERED)))
    # Nothing answered by a rule is listed as unanswered.
    assert not any(t in g["examples"] for g in groups for t in ANSWERED)


def test_replies_by_rule_list_rules_that_never_fired(logged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = report_json(logged)
    # The log holds the path the chat ran from; a report from another folder finds the same rules.
    monkeypatch.chdir(ROOT)
    relative = report_json(logged, "--personas", "personas")["rules"]

    def counts(rules: list[dict[str, Any]]) -> list[tuple[str, int]]:
        return [(Path(r["rule"]).name, r["count"]) for r in rules]

    assert counts(relative) == counts(report["rules"])
    philae = (PERSONAS / "philae.yaml").read_text(encoding="utf-8").splitlines()
    harpoon_line = next(i for i, line in enumerate(philae, 1) if "harpoon, harpoons" in line)
    night_line = next(i for i, line in enumerate(philae, 1) if "good night" in line)
    rules = {(Path(r["rule"]).name, r["kind"]): r["count"] for r in report["rules"]}
    assert rules[(f"philae.yaml:{harpoon_line}", "reply")] == 1
    assert rules[(f"philae.yaml:{night_line}", "reply")] == 0
    assert any(r.endswith(f"philae.yaml:{night_line}") for r in report["never_fired"])
    assert not any(r.endswith(f"philae.yaml:{harpoon_line}") for r in report["never_fired"])
    fallback = [r for r in report["rules"] if r["kind"] == "fallback" and r["persona"] == "philae"]
    assert fallback[0]["count"] == report["fallback"]["fallbacks"]
    # Rosetta said nothing in these chats but her reaction to philae_landed: her fallback never fired.
    assert any(r["persona"] == "rosetta" and r["kind"] == "fallback" and r["count"] == 0 for r in report["rules"])
    posts = report["event_posts"]
    assert [(p["persona"], p["event"]) for p in posts] == [("philae", "touchdown"), ("rosetta", "philae_landed")]
    assert posts[0]["mission_time"] < posts[1]["mission_time"]  # the emit is 2 minutes later on the mission clock
    day = report["messages_per_day"]
    assert sum(d["in"] for d in day) == len(ANSWERED) + len(AGE) + len(BUILDER) + len(WEIGHT) + len(ALONE)
    assert {d["platform"] for d in day} == {"console"}
    assert report["latency_ms"]["count"] == report["totals"]["replies"]
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]


def test_text_output_shows_the_groups(logged: Path) -> None:
    # One run in a real subprocess: the installed command, its exit status and its output.
    done = personae("report", "--db", str(logged), "--personas", str(PERSONAS))
    assert done.returncode == 0, done.stderr
    assert "Unanswered questions" in done.stdout
    assert "what's your age" in done.stdout
    assert "never fired" in done.stdout


def test_filters(logged: Path) -> None:
    assert report_json(logged, "--persona", "rosetta")["unanswered"] == []
    assert report_json(logged, "--persona", "rosetta")["totals"]["messages_in"] == 0
    later = report_json(logged, "--since", "2999-01-01")
    assert later["totals"]["messages_in"] == 0 and later["unanswered"] == []
    earlier = report_json(logged, "--until", "2000-01-01")
    assert earlier["totals"]["messages_out"] == 0
    # --until a date is its whole day.
    con = sqlite3.connect(logged)
    first = con.execute("SELECT min(ts) FROM interactions").fetchone()[0]
    con.close()
    whole_day = report_json(logged, "--since", first[:10], "--until", first[:10])
    assert whole_day["totals"]["messages_in"] > 0
    unknown = run_report("--db", str(logged), "--personas", str(PERSONAS), "--persona", "phiale")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: --persona: unknown persona 'phiale' (did you mean 'philae'?)"
    no_run = run_report("--db", str(logged), "--personas", str(PERSONAS), "--run", "nope")
    assert no_run.returncode == 1 and "run 'nope'" in no_run.stderr and len(no_run.stderr.splitlines()) == 1
    bad_time = run_report("--db", str(logged), "--personas", str(PERSONAS), "--since", "yesterday")
    assert bad_time.returncode == 1 and "--since" in bad_time.stderr and len(bad_time.stderr.splitlines()) == 1


def _foreign(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE interactions_old (x)")
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.commit()
    con.close()


def _odd_interactions(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE interactions (id INTEGER PRIMARY KEY, body TEXT)")
    con.commit()
    con.close()


def _no_tables(path: Path) -> None:
    sqlite3.connect(path).close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 1")
    con.close()


def _empty_personae(path: Path) -> None:
    async def create() -> None:
        async with Store(path):
            pass

    asyncio.run(create())


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (None, "no such database"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, not a database\n" * 50), "not a SQLite database"),
        (_foreign, "not a personae database"),
        (_odd_interactions, "not a personae database"),
        (_no_tables, "empty database"),
        (_empty_personae, "the log is empty"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
    ids=["missing", "zero-bytes", "text-file", "foreign", "foreign-interactions", "no-tables", "empty-log", "folder"],
)
def test_bad_database_one_line_exit_1(tmp_path: Path, make: Any, says: str) -> None:
    db = tmp_path / "x.db"
    if make is not None:
        make(db)
    html = tmp_path / "r.html"
    done = run_report("--db", str(db), "--personas", str(PERSONAS), "--html", str(html))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], done.stderr
    assert not html.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".r.html")) == []


def test_missing_personas_folder_is_one_line(logged: Path, tmp_path: Path) -> None:
    done = run_report("--db", str(logged), "--personas", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "no such file or folder" in done.stderr


def test_report_does_not_write_the_database(logged: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ro.db"
    shutil.copy(logged, copy)
    copy.chmod(0o444)
    before = copy.read_bytes()
    assert report_json(copy)["totals"]["messages_in"] > 0
    assert copy.read_bytes() == before


def test_delivery_failures_429s_and_subscribers(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"

    async def fill() -> None:
        async with Store(db) as store:
            store.log(LogRow("in", persona="philae", platform="telegram", chat="1", user="telegram:1", text="hi"))
            items = [
                {"key": f"k{i}", "persona": "philae", "adapter": a, "chat": c, "text": "hi", "run": "r1"}
                for i, (a, c) in enumerate([("telegram", "1"), ("telegram", "2"), ("discord", "9"), ("discord", "8")])
            ]
            await store.outbox_add(items)
            await store.outbox_mark_many(
                [
                    (1, "pending", "Telegram flood control: retry after 3s", None),
                    (1, "sent", None, "m1"),
                    (2, "pending", "Telegram flood control: retry after 3s", None),
                    (3, "failed", "Forbidden: bot was blocked by the user", None),
                    (4, "failed", "Forbidden: bot was blocked by the user", None),
                ]
            )
            for chat_id in ("1", "2", "3"):
                await store.subscribe("telegram", chat_id, "philae")
            await store.subscribe("discord", "9", "philae")

    asyncio.run(fill())
    report = report_json(db)
    d = report["delivery"]
    assert {(r["adapter"], r["status"], r["count"]) for r in d["by_status"]} == {
        ("telegram", "sent", 1),
        ("telegram", "pending", 1),
        ("discord", "failed", 2),
    }
    assert d["rate_limited"] == 1  # the pending one: a sent message keeps no error
    assert d["retried"] == 1
    assert d["errors"][0] == {
        "adapter": "discord",
        "status": "failed",
        "error": "Forbidden: bot was blocked by the user",
        "count": 2,
    }
    subs = {(s["adapter"], s["total"]) for s in report["subscribers"]}
    assert subs == {("telegram", 3), ("discord", 1)}
    html = tmp_path / "r.html"
    done = run_report("--db", str(db), "--personas", str(PERSONAS), "--html", str(html))
    assert done.returncode == 0, done.stderr
    assert "flood control" not in done.stdout or "rate limited (429): 1" in done.stdout
    assert "telegram subscribers" in html.read_text(encoding="utf-8")


class _Checker(HTMLParser):
    """Well-formedness (every non-void element closed in order) and every URL the page would fetch."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "wbr"})
    SVG_VOID = frozenset({"rect", "circle", "line", "path"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "srcset", "action", "poster")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def _html(logged: Path, folder: Path) -> Path:
    out = folder / "report.html"
    done = run_report("--db", str(logged), "--personas", str(PERSONAS), "--html", str(out))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in folder.iterdir()] == ["report.html"]  # no temporary file left behind
    return out


def test_html_is_well_formed_and_self_contained(logged: Path, tmp_path: Path) -> None:
    page = _html(logged, tmp_path).read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.problems == [] and checker.stack == []
    assert checker.tags[0] == "html" and page.startswith("<!DOCTYPE html>")
    assert not [u for u in checker.urls if re.match(r"\s*(https?:)?//", u, re.IGNORECASE)]
    assert "script" not in checker.tags and "link" not in checker.tags and "iframe" not in checker.tags
    assert "@import" not in page and "url(" not in page
    assert checker.tags.count("svg") >= 4
    assert "what&#x27;s your age" in page or "what's your age" in page


def test_html_replaces_an_old_report_whole(logged: Path, tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    target.write_text("old report", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "<html>" + "x" * 100_000 + "\ud800")  # fails half way through the write
    assert target.read_text(encoding="utf-8") == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
    done = run_report("--db", str(tmp_path / "missing.db"), "--personas", str(PERSONAS), "--html", str(target))
    assert done.returncode == 1
    assert target.read_text(encoding="utf-8") == "old report"


_PROBE = """<script>
document.body.setAttribute('data-probe', JSON.stringify(Array.from(document.querySelectorAll('svg.chart')).map(s => {
  const r = s.getBoundingClientRect();
  const marks = Array.from(s.querySelectorAll('rect,circle,path')).filter(m => {
    const b = m.getBBox(); return b.width > 0 && b.height > 0; }).length;
  return [r.width, r.height, marks];
})));
</script></body>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_renders_in_headless_chromium(logged: Path, tmp_path: Path) -> None:
    page = _html(logged, tmp_path)

    def chromium(*args: str) -> subprocess.CompletedProcess[str]:
        profile = tempfile.mkdtemp(dir=tmp_path)
        return subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    # The page as written: no console message at all (no script error, nothing blocked or fetched).
    plain = chromium("--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert "<svg" in plain.stdout, plain.stderr[-2000:]
    assert not [line for line in plain.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    # A copy with a probe: each chart is laid out with a size, and its bars and dots have an area.
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE), encoding="utf-8")
    done = chromium("--dump-dom", probed.as_uri())
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found is not None, done.stderr[-2000:]
    charts = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(charts) >= 4
    assert all(w > 100 and h > 20 and marks > 0 for w, h, marks in charts), charts


# -- grouping, in process


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(AGE + BUILDER + WEIGHT + ALONE),
    st.sampled_from(["", "?", "!!", " ?!", "..."]),
    st.booleans(),
    st.sampled_from(["", "  ", "\t"]),
)
def test_case_punctuation_and_spacing_never_split_a_question(text: str, tail: str, upper: bool, pad: str) -> None:
    variant = pad + (text.upper() if upper else text) + tail
    groups = group_questions([("p", text), ("p", variant)])
    assert len(groups) == 1 and groups[0].count == 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.text(max_size=40)), max_size=25))
def test_any_text_is_counted_once(asked: list[tuple[str, str]]) -> None:
    groups = group_questions(asked)
    assert sum(g.count for g in groups) == len(asked)
    assert [g.count for g in groups] == sorted((g.count for g in groups), reverse=True)
    assert all(g.label == g.examples[0] and set(g.personas) <= {"a", "b"} for g in groups)


def test_accents_and_typos_join_and_unrelated_stay_apart() -> None:
    assert normalise("Quel âge as-tu ?") == normalise("quel age as tu")
    groups = group_questions(
        [("p", t) for t in ["do you like music", "do u liek music", "Do you enjoy music?", "do you like jazz"]]
    )
    assert [(g.count, sorted(g.examples)) for g in groups] == [
        (3, ["Do you enjoy music?", "do u liek music", "do you like music"]),
        (1, ["do you like jazz"]),
    ]
    apart = ["how old is the comet", "is there water on the comet", "what time is it on the comet", "are there aliens"]
    assert [g.count for g in group_questions([("p", t) for t in apart])] == [1, 1, 1, 1]
    assert group_questions([("p", "???"), ("p", "👍"), ("p", "what is it")])[0].count == 1


def test_odd_values_in_the_log_are_reported_not_a_traceback(logged: Path, tmp_path: Path) -> None:
    db = tmp_path / "odd.db"
    shutil.copy(logged, db)
    con = sqlite3.connect(db)
    fallback = con.execute(
        "SELECT rule FROM interactions WHERE text LIKE 'I''m only a small lander%' LIMIT 1"
    ).fetchone()
    con.executemany(
        "INSERT INTO interactions (ts, direction, persona, platform, chat, user, text, rule, latency_ms, status)"
        " VALUES (?, ?, 'philae', 'console', 'c', 'u', ?, ?, ?, 'ok')",
        [
            (12345, "in", b"\xffhow old are you\xfe", None, None),
            ("2026-01-01T00:00:00.000+00:00", "out", 7, fallback[0], "fast"),
            (3.5, "in", 42, None, None),
            (3.5, "out", None, fallback[0], None),
        ],
    )
    con.commit()
    con.close()
    report = report_json(db)
    assert group_of(report, "how old are you")["count"] == len(AGE) + 1
    assert group_of(report, "42")["count"] == 1
