"""The voice lint through `personae lint`, on texts its first tests did not look at: cooldown_say, the
limits notice, alt text, and media on a real file with `alt_text: required`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_media import png, wav

from personae.language.voice_lint import BannedWords, fold

HANG = 60  # seconds: a generous guard, never a timing assertion


def lint(cwd: Path, *paths: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "personae", "lint", *paths], cwd=cwd, capture_output=True, text=True, timeout=HANG
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout.splitlines()


def test_alt_text_required_on_a_real_file_reports_each_missing_alt_once(tmp_path: Path) -> None:
    png(tmp_path / "m" / "a.png")
    wav(tmp_path / "m" / "s.wav")
    (tmp_path / "r.yaml").write_text(
        "persona: r\nname: R\nvoice:\n  alt_text: required\n"
        "replies:\n"
        "  - when: {keywords: [a]}\n    say: hi\n    media: m/a.png\n"  # 8
        "  - when: {keywords: [b]}\n    say: hi\n"
        "    media: [{file: m/a.png, alt: '  '}]\n"  # 11
        "    platforms:\n      bluesky: {media: [{file: m/a.png}]}\n"  # 13
        "      telegram: {media: [m/s.wav]}\n",  # 14
        encoding="utf-8",
    )
    lines = lint(tmp_path, "r.yaml")
    problems = [line for line in lines if ": " in line and "file(s)" not in line]
    assert problems == [
        "r.yaml:8:5: replies[0].media: image 'm/a.png' has no alt text: say what it shows under 'alt:'",
        "r.yaml:11:14: replies[1].media[0].file: image 'm/a.png' has no alt text: say what it shows under 'alt:'",
        "r.yaml:13:26: replies[1].platforms.bluesky.media[0].file: image 'm/a.png' has no alt text: "
        "say what it shows under 'alt:'",
        "r.yaml:14:26: replies[1].platforms.telegram.media[0]: media 'm/s.wav' has no alt text "
        "(voice.alt_text: required): add 'alt:' saying what it shows",
    ], lines
    # Without the voice section, the images still need alt text; the sound does not.
    text = (tmp_path / "r.yaml").read_text().replace("voice:\n  alt_text: required\n", "")
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    assert sum("has no alt text" in line for line in lint(tmp_path, "r.yaml")) == 3


def test_every_text_a_persona_may_post_is_checked_cooldown_say_notice_and_alt_text(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "q.yaml").write_text(
        "persona: q\nname: Q\n"
        "voice:\n  banned_words: [darn, Straße]\n  max_length: {telegram: 20}\n"
        "limits: {messages: 3, per: 1m, notice: 'Darn, {{ user.name }}: please slow down a little'}\n"  # 6
        "replies:\n  - when: {keywords: [hi]}\n    say: ok\n    cooldown: 1h\n"
        "    cooldown_say: ['resting', 'DÁRN it {{ user.name }}, I am resting for a long while']\n"  # 11
        "    media: {file: a.png, alt: 'a view of the STRASSE, darn'}\n"  # 12
        "    platforms:\n      telegram:\n        say: short\n"
        "        media: [{file: a.png, alt: fine}, {file: a.png, alt: 'a darn picture'}]\n",  # 16
        encoding="utf-8",
    )
    lines = lint(tmp_path, "q.yaml")
    assert "q.yaml:6:40: limits.notice: banned word 'darn' (voice.banned_words)" in lines
    assert "q.yaml:11:31: replies[0].cooldown_say[1]: banned word 'darn' (voice.banned_words)" in lines
    too_long = [line for line in lines if "too long" in line]
    assert len(too_long) == 2 and all("over voice.max_length (20)" in line for line in too_long), lines
    assert any(line.startswith("q.yaml:11:31: warning: replies[0].cooldown_say[1]: too long") for line in too_long)
    assert any(line.startswith("q.yaml:6:40: warning: limits.notice: too long") for line in too_long)
    alt = [line for line in lines if "in alt text" in line]
    assert alt == [
        "q.yaml:12:31: replies[0].media.alt: banned word 'Straße' in alt text (voice.banned_words)",
        "q.yaml:12:31: replies[0].media.alt: banned word 'darn' in alt text (voice.banned_words)",
        "q.yaml:16:62: replies[0].platforms.telegram.media[1].alt: banned word 'darn' in alt text (voice.banned_words)",
    ], lines


_WORDS = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8).filter(
    lambda w: bool(fold(w).split())
)


@settings(max_examples=300, deadline=None)
@given(word=_WORDS, before=st.sampled_from(["", "go ", "x, ", "(", "\n"]), after=st.sampled_from(["", " now", "!"]))
def test_any_banned_word_in_any_script_is_found_as_written(word: str, before: str, after: str) -> None:
    # Greek, Cyrillic, dotless i, ß, regex characters: a word is found where it is written whole.
    assert BannedWords.of([word]).found(f"{before}{word}{after}") == [word]
