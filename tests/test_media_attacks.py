"""Media, attacked from outside: files a persona must not send, odd files, and what the terminals show."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path, PurePath

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_media import MA_TOKEN, personae_run, png, until, wav

from fakes.mastodon_api import FakeMastodon
from personae import Chat, Incoming, User
from personae.engine.engine import Engine
from personae.language.lint import lint as run_lint
from personae.language.loader import check_source, parse_persona
from personae.language.source import parse_yaml
from personae.timing.clock import VirtualClock

T0 = datetime(2014, 11, 12, 15, 34, tzinfo=UTC)
HANG = 60  # seconds: a generous guard, never a timing assertion


def personae(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess; never a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "personae", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def test_lint_refuses_files_outside_the_persona_folder_directories_and_empty_files(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    png(folder / "media" / "ok.png")
    png(tmp_path / "secret.png")  # next to the persona folder, not in it
    (folder / "media" / "dir.png").mkdir()
    (folder / "media" / "empty.png").write_bytes(b"")
    (folder / "media" / "link.png").symlink_to(tmp_path / "secret.png")
    (folder / "media" / "inner.png").symlink_to(folder / "media" / "ok.png")  # a link that stays inside is fine
    (folder / "philae.yaml").write_text(
        "persona: philae\nname: Philae\nevents:\n  touchdown:\n    say: Touchdown!\n    media:\n"
        f"      - file: {tmp_path / 'secret.png'}\n        alt: absolute\n"
        "      - file: ../secret.png\n        alt: climbing out\n"
        "      - file: media/../../secret.png\n        alt: climbing out through media\n"
        "      - file: media/link.png\n        alt: a link out\n"
        "      - file: media/dir.png\n        alt: a directory\n"
        "      - file: media/empty.png\n        alt: nothing\n"
        "      - file: media/inner.png\n        alt: a link inside\n"
        "      - file: media/./ok.png\n        alt: fine\n",
        encoding="utf-8",
    )
    done = personae("lint", "personas", cwd=tmp_path)
    assert done.returncode == 1
    out = done.stdout
    lines = [line for line in out.splitlines() if "events.touchdown.media[" in line]
    assert len(lines) == 6, out  # one line for each bad file, none for the two good ones
    assert "philae.yaml:7:9: events.touchdown.media[0].file: media file '/" in out
    assert "must be a path relative to the persona file" in lines[0]
    for n, line in zip((1, 2, 3), lines[1:4], strict=True):
        assert f"philae.yaml:{7 + 2 * n}:9: events.touchdown.media[{n}].file:" in line
        assert "is outside the persona's folder" in line
    assert "media[4].file: media file 'media/dir.png' is a directory, not a file" in out
    assert "media[5].file: media file 'media/empty.png' is empty (0 bytes)" in out
    assert "media[6]" not in out and "media[7]" not in out


NAMES = st.lists(st.sampled_from(["..", ".", "media", "deep", "ok.png", "nope.png"]), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=NAMES)
def test_a_persona_loads_a_file_only_when_it_is_in_its_folder(tmp_path: Path, parts: list[str]) -> None:
    root = tmp_path / "root"
    folder = root / "personas"
    for where in (root, folder, folder / "media", folder / "media" / "deep", root / "media"):
        png(where / "ok.png")
    name = "/".join(parts)
    text = f"persona: p\nname: P\nfallback:\n  say: hi\n  media: {{file: '{name}', alt: a picture}}\n"
    persona, diags = check_source(parse_yaml(text, str(folder / "p.yaml")))
    file = (folder / name).resolve()
    # As the system sees it: `deep/../ok.png` is no file when there is no `deep`.
    fine = PurePath(name).name.endswith(".png") and (folder / name).is_file() and file.is_relative_to(folder.resolve())
    assert (persona is not None and not diags) == fine, (name, [str(d) for d in diags])
    if fine:
        assert persona is not None and persona.fallback is not None
        assert [m.path for m in persona.fallback.media] == [str(file)]
    else:
        assert len(diags) == 1 and diags[0].line == 5, [str(d) for d in diags]


async def test_a_resting_rule_says_its_cooldown_say_without_the_picture(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    text = (
        "persona: p\nname: P\nreplies:\n  - when: {keywords: [picture]}\n    say: Here it is.\n"
        "    media: {file: a.png, alt: A comet}\n    cooldown: 10m\n    cooldown_say: Not again so soon.\n"
    )
    engine = Engine({"p": parse_persona(text, str(tmp_path / "p.yaml"))}, clock=VirtualClock(T0))

    async def ask(n: int) -> list[tuple[str, int]]:
        msg = Incoming("p", "console", Chat("c"), User("u", "Ann"), "picture", message_id=str(n))
        return [(o.text, len(o.media)) for o in await engine.handle(msg)]

    assert await ask(1) == [("Here it is.", 1)]
    assert await ask(2) == [("Not again so soon.", 0)]


MEDIA_PERSONA = """\
persona: e
name: E
events:
  land:
    say: Landed
    media: {file: m/a.png, alt: the comet}
  song:
    say: ""
    media: [m/a.png, {file: m/s.wav, alt: a hum}]
"""


def test_chat_and_a_dry_run_show_each_file_as_a_line_and_no_empty_text(tmp_path: Path) -> None:
    png(tmp_path / "m" / "a.png")
    wav(tmp_path / "m" / "s.wav")
    (tmp_path / "e.yaml").write_text(MEDIA_PERSONA, encoding="utf-8")
    (tmp_path / "t.yaml").write_text(
        "timeline: t\ncast: [e]\nevents:\n  - {at: 2014-11-12T08:00:00Z, event: land}\n"
        "  - {at: 2014-11-12T09:00:00Z, event: song}\n",
        encoding="utf-8",
    )
    chat = personae("chat", "e", "--personas", "e.yaml", "--no-log", cwd=tmp_path, stdin="!event land\n!event song\n")
    assert chat.stdout.splitlines() == [
        "E: Landed",
        'E: [image: a.png — "the comet"]',
        "E: [image: a.png]",
        'E: [audio: s.wav — "a hum"]',
    ]
    dry = personae("replay", "t.yaml", "--personas", "e.yaml", "--speed", "max", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "2014-11-12 08:00 UTC  E: Landed",
        '2014-11-12 08:00 UTC  E: [image: a.png — "the comet"]',
        "2014-11-12 09:00 UTC  E: [image: a.png]",
        '2014-11-12 09:00 UTC  E: [audio: s.wav — "a hum"]',
    ]


async def test_a_file_deleted_while_the_bot_runs_fails_that_post_for_good_and_the_bot_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    png(folder / "media" / "67p.png")
    (folder / "philae.yaml").write_text(
        "persona: philae\nname: Philae\nreplies:\n  - when: {keywords: [picture]}\n    say: Here it is.\n"
        "    media: {file: media/67p.png, alt: A comet}\nfallback:\n  say: I'm only a small lander.\n",
        encoding="utf-8",
    )
    async with FakeMastodon(MA_TOKEN) as fake:
        (tmp_path / "bot.toml").write_text(
            f'[bot]\npersonas = ["{folder}/*.yaml"]\ndatabase = "bot.db"\n\n'
            '[[adapters]]\ntype = "mastodon"\npersona = "philae"\ntoken_env = "MA"\n'
            f'base_url = "{fake.base_url}"\npoll_interval = 0.1\nrequests_per_5min = 3000\n',
            encoding="utf-8",
        )
        alice = fake.account("alice")
        async with personae_run(tmp_path, {"MA": MA_TOKEN}) as proc:
            await until(lambda: fake.requests.count(("GET", "/api/v1/notifications")) >= 2, "polling")
            (folder / "media" / "67p.png").unlink()  # after the load, before the send
            fake.inject_mention(alice, "@philae a picture please")
            fake.inject_mention(alice, "@philae how are you")
            await until(lambda: len(fake.created) >= 1, "the next reply")
            assert proc.returncode is None  # still running
        assert [s.text.split(" ", 1)[1] for s in fake.created] == ["I'm only a small lander."]
        assert fake.uploads == {}
    with contextlib.closing(sqlite3.connect(tmp_path / "bot.db")) as db:
        rows = db.execute("SELECT status, text, last_error FROM outbox ORDER BY id").fetchall()
    failed = [r for r in rows if r[0] != "sent"]
    assert len(failed) == 1 and failed[0][0] == "failed", rows
    assert "Here it is." in failed[0][1] and "67p.png" in failed[0][2], rows  # kept, with why


def test_media_lint_reads_nothing_outside_the_folder(tmp_path: Path) -> None:
    # Lint must not even stat a file it refuses: no size, no alt-text line for it.
    folder = tmp_path / "personas"
    folder.mkdir()
    png(tmp_path / "big.png", 2_000_000)
    (folder / "p.yaml").write_text(
        "persona: p\nname: P\nfallback:\n  say: hi\n  media: ../big.png\n",
        encoding="utf-8",
    )
    done = personae("lint", "personas", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.count("\n") == 1 and "outside the persona's folder" in done.stdout, done.stdout
    assert os.path.exists(tmp_path / "big.png")


def test_schema_errors_in_media_are_plain_words_at_the_key_that_is_wrong(tmp_path: Path) -> None:
    png(tmp_path / "m" / "a.png")
    eleven = "".join(f"      - {{file: m/a.png, alt: a{i}}}\n" for i in range(11))
    (tmp_path / "p.yaml").write_text(
        "persona: p\nname: P\nevents:\n  e:\n    say: x\n    media:\n" + eleven
        + f"  f:\n    say: y\n    media: {{file: m/a.png, alt: \"{'x' * 1501}\"}}\n"
        + "  g:\n    say: y\n    media: {file: m/a.png, alt: [1]}\n"
        + "  h:\n    say: y\n    media: {file: '', alt: empty}\n",
        encoding="utf-8",
    )  # fmt: skip
    out = personae("lint", "p.yaml", cwd=tmp_path).stdout
    assert "p.yaml:7:7: events.e.media: too many: at most 10 items, found 11" in out
    assert "p.yaml:20:33: events.f.media.alt: too long: at most 1,500 characters, found 1,501" in out
    assert "p.yaml:23:33: events.g.media.alt: expected a string, found a list" in out
    assert "p.yaml:26:19: events.h.media.file: must not be empty" in out
    assert "should have" not in out  # no pydantic wording


def test_only_types_the_networks_take_load_whatever_the_case_of_the_extension(tmp_path: Path) -> None:
    # The system calls an SVG, TIFF or PSD an image; no network here posts one.
    bad, good = ["a.svg", "a.tiff", "a.psd", "a.bmp", "a.mid", "a.avi"], ["a.PNG", "b.JpEg", "c.MP3", "d.webm"]
    for name in bad + good:
        (tmp_path / name).write_bytes(b"not empty")

    def persona_with(names: list[str]) -> str:
        items = "".join(f"    - {{file: {n}, alt: x}}\n" for n in names)
        return f"persona: p\nname: P\nfallback:\n  say: hi\n  media:\n{items}"

    _, diags = check_source(parse_yaml(persona_with(bad + good), str(tmp_path / "p.yaml")))
    assert [(d.line, d.message.split("'")[1]) for d in diags] == [(6 + i, n) for i, n in enumerate(bad)]
    assert all("is not an image, audio or video file the platforms take" in d.message for d in diags)
    assert "images .jpg .jpeg .png .gif .webp" in diags[0].message
    persona = parse_persona(persona_with(good), str(tmp_path / "p.yaml"))
    assert persona.fallback is not None
    assert [m.mime for m in persona.fallback.media] == ["image/png", "image/jpeg", "audio/mpeg", "video/webm"]


def test_lint_knows_which_kinds_may_share_a_post_on_each_network(tmp_path: Path) -> None:
    # Telegram groups audio only with audio; Mastodon takes up to four images, or one video or sound.
    png(tmp_path / "a.png")
    wav(tmp_path / "s.wav")
    wav(tmp_path / "t.wav")
    (tmp_path / "p.yaml").write_text(
        "persona: p\nname: P\nevents:\n"
        "  mixed:\n    say: x\n    media: [{file: a.png, alt: a}, {file: s.wav, alt: s}]\n"  # 6
        "  sounds:\n    say: x\n    media: [{file: s.wav, alt: s}, {file: t.wav, alt: t}]\n"  # 9
        "  pictures:\n    say: x\n    media: [{file: a.png, alt: a}, {file: a.png, alt: b}]\n"
        "  one:\n    say: x\n    media: {file: s.wav, alt: s}\n",
        encoding="utf-8",
    )
    toml = tmp_path / "bot.toml"
    adapters = "".join(f'\n[[adapters]]\ntype = "{t}"\npersona = "p"\n' for t in ("telegram", "mastodon", "discord"))
    toml.write_text(f'[bot]\npersonas = ["{tmp_path}/p.yaml"]\n{adapters}', encoding="utf-8")
    found = [d for d in run_lint([tmp_path / "p.yaml", toml]).diagnostics if d.severity == "error"]
    assert sorted((d.line, d.message.split()[0]) for d in found) == [
        (6, "mastodon"),
        (6, "telegram"),
        (9, "mastodon"),
    ]
    assert "audio" in found[0].message
