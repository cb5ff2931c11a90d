"""The ``personae test`` command: find test files, run them, report (text, JUnit XML, coverage)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO
from xml.etree import ElementTree as ET

from ..engine.persona import Persona
from ..language.errors import ConfigError, Diagnostic, PersonaeError
from .parsers import DEFAULT_TESTS
from .persona_tests import Case, CaseResult, Coverage, TestSource, check, coverage, load_test_file, run_case, test_files

#: Where ``personae test`` looks when given no path.


async def cmd_test(args: argparse.Namespace) -> int:
    """``personae test``."""
    from ..language.loader import load_personas

    paths = args.paths or [DEFAULT_TESTS]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        hint = " (personae init creates a persona with its tests)" if not args.paths else ""
        raise ConfigError(f"no such file or folder: {', '.join(missing)}{hint}")
    files = test_files(paths)
    if not files:
        raise ConfigError(f"no test files (*.yaml) in {', '.join(paths)}")
    persona_paths = args.personas or ["personas"]
    personas = load_personas(persona_paths)
    if not personas:
        raise ConfigError(f"no personas found in {', '.join(persona_paths)}")
    loaded: list[TestSource] = []
    cases: list[Case] = []
    diags: list[Diagnostic] = []
    for f in files:
        try:
            test = load_test_file(f)
        except PersonaeError as exc:
            diags.extend(exc.diagnostics)
            continue
        found, problems = check(test, personas)
        diags.extend(problems)
        loaded.append(test)
        cases.extend(found)
    if diags:
        raise PersonaeError(diags)
    if args.select:
        cases = [c for c in cases if args.select.lower() in c.name.lower()]
    t0 = time.perf_counter()
    results = [await run_case(c, personas) for c in cases]
    elapsed = time.perf_counter() - t0
    updated = 0
    if args.update:
        from .test_update import update_file

        for test in loaded:
            mine = [r for r in results if r.case.source is test.source]
            if mine:
                n = update_file(Path(test.file), mine, personas)
                if n:
                    sys.stderr.write(f"{test.file}: updated {n} step(s)\n")
                updated += n
        # What --update rewrote now holds; what it cannot fix (a persona error) still fails.
        for r in results:
            r.failures = [f for f in r.failures if not f.fixable]
    if args.format == "junit":
        sys.stdout.write(junit(results) + "\n")
    else:
        report(results, elapsed, sys.stdout)
    if args.coverage:
        print_coverage(coverage(personas, results), sys.stdout if args.format == "text" else sys.stderr)
    return 0 if all(r.passed for r in results) else 1


def _where(result: CaseResult, path: Sequence[str | int]) -> str:
    pos = result.case.source.where(tuple(path))
    return f"{result.case.source.file}:{pos.line}:{pos.column}"


def report(results: Sequence[CaseResult], elapsed: float, out: TextIO) -> None:
    """One line per failing step (``file:line:col: ...`` and its details), then a summary."""
    for r in results:
        if r.passed:
            continue
        out.write(f"FAIL {r.case.where}: {r.case.name}\n")
        for f in r.failures:
            out.write(f"  {_where(r, f.path)}: {f.message}\n")
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    files = len({r.case.source.file for r in results})
    summary = f"{len(results)} test(s) in {files} file(s): {passed} passed, {failed} failed ({elapsed:.2f} s)"
    out.write(summary + "\n")


def junit(results: Sequence[CaseResult]) -> str:
    """JUnit XML: one ``testsuite`` per test file, one ``testcase`` per test."""
    root = ET.Element("testsuites", name="personae", tests=str(len(results)))
    suites: dict[str, ET.Element] = {}
    for r in results:
        file = r.case.source.file
        suite = suites.get(file)
        if suite is None:
            suite = suites[file] = ET.SubElement(root, "testsuite", name=file, tests="0", failures="0", time="0")
        suite.set("tests", str(int(suite.get("tests", "0")) + 1))
        suite.set("time", f"{float(suite.get('time', '0')) + r.seconds:.4f}")
        case = ET.SubElement(
            suite,
            "testcase",
            name=r.case.name,
            classname=file,
            file=file,
            line=str(r.case.source.where(r.case.path).line),
            time=f"{r.seconds:.4f}",
        )
        if r.failures:
            suite.set("failures", str(int(suite.get("failures", "0")) + 1))
            first = r.failures[0]
            head = " ".join(line.strip() for line in first.message.splitlines()[:2])
            failure = ET.SubElement(case, "failure", message=f"{_where(r, first.path)}: {head}", type="AssertionError")
            failure.text = "\n".join(f"{_where(r, f.path)}: {f.message}" for f in r.failures)
    root.set("failures", str(sum(not r.passed for r in results)))
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def print_coverage(cov: Coverage, out: TextIO) -> None:
    """``coverage:`` totals, then one ``file:line: ...`` line per thing no test exercised."""
    n_rules, n_events, n_phrases = cov.totals
    out.write(
        f"coverage: rules {n_rules - len(cov.rules)}/{n_rules}, events {n_events - len(cov.events)}/{n_events}, "
        f"phrases {n_phrases - len(cov.phrases)}/{n_phrases}\n"
    )
    for p, a in cov.rules:
        out.write(f"{a.where}: rule {p.id} {a.name} never answered or posted\n")
    for p, name in cov.events:
        out.write(f"{_event_where(p, name)}: event {name} ({p.id}) never raised\n")
    for p, bank, i in cov.phrases:
        out.write(f"{_phrase_where(p, bank, i)}: phrase {p.id} {bank}[{i}] never said\n")


def _event_where(p: Persona, name: str) -> str:
    action = p.events.get(name)
    return action.where if action is not None else p.file


def _phrase_where(p: Persona, bank: str, i: int) -> str:
    from ..language.source import load_yaml

    try:
        pos = load_yaml(Path(p.file)).where(("phrases", bank, i))
    except PersonaeError:
        return p.file
    return f"{p.file}:{pos.line}"


def loaded_personas(paths: Sequence[str]) -> Mapping[str, Persona]:
    """The personas under ``paths`` (for callers outside the command)."""
    from ..language.loader import load_personas

    return load_personas(paths)
