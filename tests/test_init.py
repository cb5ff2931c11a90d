"""``personae init``: a scaffold that passes lint and test as it stands, and never overwrites."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from personae.app.cli import main

FILES = ("bot.toml", "personas/{id}.yaml", "personas/timelines/{id}.yaml", "personas/tests/{id}.yaml")


def _personae(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("PERSONAE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "personae", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_init_scaffolds_a_project_that_passes_lint_and_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _personae("init", "mission", "--name", "Ada Bot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "mission"
    for f in FILES:
        assert (root / f.format(id="ada-bot")).is_file()
    out = done.stdout.splitlines()
    commands = [line.strip() for line in out[out.index("next, try:") + 1 :]]
    assert commands == [
        "cd mission && personae test --coverage",
        "cd mission && personae chat ada-bot --no-log",
        "cd mission && personae replay personas/timelines/ada-bot.yaml --speed max --dry-run",
    ]
    monkeypatch.chdir(root)
    assert main(["lint", "--strict", "personas", "bot.toml"]) == 0  # no error, no warning
    capsys.readouterr()
    assert main(["test", "--coverage"]) == 0
    report = capsys.readouterr().out
    assert "2 passed, 0 failed" in report
    assert "coverage: rules 8/8, events 2/2, phrases 2/2" in report
    # The commands it suggests work as printed (chat reads stdin: a real process with none).
    chat, replay = (c.removeprefix("cd mission && personae ").split() for c in commands[1:])
    done = _personae(*chat, cwd=root)
    assert done.returncode == 0, done.stderr
    assert main(replay) == 0
    assert "Liftoff from Kourou!" in capsys.readouterr().out
    assert not (root / "personae.db").exists()  # none of them wrote the live database


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "bot.toml").write_text("# mine\n", encoding="utf-8")
    done = _personae("init", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: bot.toml: already exists; personae init never overwrites (choose another folder)"
    ]
    assert (tmp_path / "bot.toml").read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / "personas").exists()


def test_init_twice_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--name", "Echo"]) == 0
    out = capsys.readouterr().out
    assert "next, try:\n  personae test --coverage\n" in out  # no "cd" when it is the current folder
    persona = tmp_path / "personas" / "echo.yaml"
    persona.write_text(persona.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert main(["init", "--name", "Echo"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "already exists; personae init never overwrites" in err[0]
    assert persona.read_text(encoding="utf-8").endswith("# edited\n")


@pytest.mark.parametrize("name", ["123", "---", "   ", "Ω"])
def test_init_refuses_a_name_without_an_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", f"--name={name}"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: --name: ") and "no usable persona id" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_init_keeps_a_name_with_quotes_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--name", 'Zed "the" #1: {{probe}}']) == 0
    assert main(["lint", "personas"]) == 0
    assert main(["test"]) == 0
    persona = (tmp_path / "personas" / "zed-the-1-probe.yaml").read_text(encoding="utf-8")
    assert 'name: "Zed \\"the\\" #1: {{probe}}"' in persona
