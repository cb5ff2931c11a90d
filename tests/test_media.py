"""Media in the persona language, end to end: `personae run` against the fake platforms, a resume, lint."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import struct
import sys
import wave
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fakes.bluesky_api import FakeBluesky
from fakes.discord_api import FakeChannel, FakeDiscord, FakeGuild
from fakes.mastodon_api import FakeMastodon
from fakes.telegram_api import FakeTelegram
from personae.language.lint import lint as run_lint
from personae.language.loader import parse_persona

TG_TOKEN = "987654:TEST-media-token-do-not-leak"
DC_TOKEN = "TEST.DISCORD.media-token-do-not-leak"
MA_TOKEN = "mastodon-media-token-do-not-leak"
BS_HANDLE, BS_PASSWORD = "philae.bsky.social", "bluesky-app-password-do-not-leak"
GUILD, GENERAL, BOT_ID = 9_000_000_000_000_000_001, 9_000_000_000_000_000_010, 9_200_000_000_000_000_001
TG_CHAT = -1001234
LAUNCHER = Path(__file__).parent / "fakes" / "run_with_fake_discord.py"
ALT = "A drawn silhouette of comet 67P, two lobes like a rubber duck"
SONG_ALT = "The comet's song: a low hum at 40 millihertz, sped up"
LONG = "Long story. " * 100  # 1,200 characters: more than a Telegram caption holds

PERSONA = f"""\
persona: philae
name: Philae
events:
  touchdown:
    say: "Touchdown!"
    media:
      - file: media/67p.png
        alt: "{ALT}"
    platforms:
      telegram:
        say: "{LONG}"
      bluesky:
        say: "Touchdown on 67P!"
  song:
    say: ""
    media:
      - file: media/song.wav
        alt: "{SONG_ALT}"
    platforms:
      bluesky: "Listen to the comet sing."
replies:
  - when: {{keywords: [picture]}}
    say: "Here it is."
    media: {{file: media/67p.png, alt: "{ALT}"}}
fallback:
  say: "I'm only a small lander."
"""


def png(path: Path, size: int = 0) -> None:
    """A valid 1x1 PNG, padded with a private chunk up to ``size`` bytes when asked."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    pad = max(0, size - len(head) - len(body) - 12 - 12)
    data = head + body + (chunk(b"prVt", b"\x00" * pad) if pad else b"") + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def wav(path: Path) -> None:
    """A tenth of a second of silence."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 800)


def write_persona(folder: Path, text: str = PERSONA) -> None:
    png(folder / "media" / "67p.png")
    wav(folder / "media" / "song.wav")
    (folder / "philae.yaml").write_text(text, encoding="utf-8")


@contextlib.asynccontextmanager
async def personae_run(cwd: Path, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`personae run` (with discord.py pointed at the fake, if any); SIGTERM at the end, no traceback allowed."""
    launch = [str(LAUNCHER)] if "FAKE_DISCORD_REST" in env else ["-m", "personae"]
    with open(cwd / "out.txt", "wb") as out, open(cwd / "err.txt", "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *launch, "run", cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=err,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    output = (cwd / "out.txt").read_text() + (cwd / "err.txt").read_text()
    assert "Traceback" not in output, output
    for secret in (TG_TOKEN, DC_TOKEN, MA_TOKEN, BS_PASSWORD):
        assert secret not in output


async def until(predicate, what: str, timeout: float = 40.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- every platform


async def test_media_with_alt_text_reach_all_four_networks_and_the_console(tmp_path):
    write_persona(tmp_path / "personas")
    timeline = 'timeline: t\ncast: [philae]\nevents:\n  - {at: "2014-11-12T15:34:00Z", event: touchdown}\n'
    timeline += '  - {at: "2014-11-12T15:35:00Z", event: song}\n'
    (tmp_path / "t.yaml").write_text(timeline, encoding="utf-8")
    guild = FakeGuild(GUILD, "Mission Control", channels=(FakeChannel(GENERAL, "general"),))
    async with (
        FakeTelegram(TG_TOKEN) as tg,
        FakeDiscord(DC_TOKEN, bot_user_id=BOT_ID, guilds=[guild], route_limit=(100, 1.0)) as dc,
        FakeMastodon(MA_TOKEN) as ma,
        FakeBluesky(BS_HANDLE, BS_PASSWORD) as bs,
    ):
        (tmp_path / "bot.toml").write_text(
            f'[bot]\npersonas = ["{tmp_path}/personas/*.yaml"]\ndatabase = "bot.db"\n\n'
            '[[adapters]]\ntype = "console"\npersona = "philae"\ntimestamps = false\n\n'
            '[[adapters]]\ntype = "telegram"\npersona = "philae"\ntoken_env = "TG"\n'
            f'base_url = "{tg.base_url}"\nbase_file_url = "{tg.base_file_url}"\npoll_timeout = 1\n'
            f"channels = [{TG_CHAT}]\nper_chat_rate = 20\n\n"
            '[[adapters]]\ntype = "discord"\npersona = "philae"\ntoken_env = "DC"\n'
            f"channels = [{GENERAL}]\nguild_ready_timeout = 0.1\nper_chat_rate = 20\n\n"
            '[[adapters]]\ntype = "mastodon"\npersona = "philae"\ntoken_env = "MA"\n'
            f'base_url = "{ma.base_url}"\npoll_interval = 0.2\nrequests_per_5min = 3000\n\n'
            f'[[adapters]]\ntype = "bluesky"\npersona = "philae"\nhandle = "{BS_HANDLE}"\npassword_env = "BS"\n'
            f'base_url = "{bs.base_url}"\npoll_interval = 0.2\npoints_per_hour = 1000000\n\n'
            '[[timelines]]\nfile = "t.yaml"\nspeed = "max"\n',
            encoding="utf-8",
        )
        env = {
            "TG": TG_TOKEN,
            "DC": DC_TOKEN,
            "MA": MA_TOKEN,
            "BS": BS_PASSWORD,
            "FAKE_DISCORD_REST": dc.rest_base,
            "FAKE_DISCORD_GATEWAY": dc.gateway_url,
        }
        async with personae_run(tmp_path, env):
            await until(lambda: len(tg.sent) >= 3, "telegram: photo, its long text, audio")
            await until(lambda: len(dc.sent) >= 2, "discord: two messages")
            await until(lambda: len(ma.created) >= 2, "mastodon: two statuses")
            await until(lambda: len(bs.created) >= 2, "bluesky: two posts")
            await until(lambda: (tmp_path / "out.txt").read_text().count("[") >= 2, "console: two media lines")
        picture = (tmp_path / "personas" / "media" / "67p.png").read_bytes()

        # Telegram: the text is too long for a caption, so the photo goes first (its alt text as
        # caption: Telegram has none), then the text; the song goes as audio, its alt text as caption.
        photo, text, audio = tg.sent[:3]
        assert (photo.method, photo.chat_id, photo.text) == ("sendPhoto", TG_CHAT, ALT)
        assert [f.data for f in photo.files] == [picture] and photo.files[0].filename == "67p.png"
        assert (text.method, text.text.strip()) == ("sendMessage", LONG.strip())
        assert (audio.method, audio.text, audio.files[0].filename) == ("sendAudio", SONG_ALT, "song.wav")

        # Discord: attachments with their alt text as description.
        first, second = dc.sent[:2]
        assert (first.content, first.attachments, first.attachment_alts) == ("Touchdown!", ("67p.png",), (ALT,))
        assert first.attachment_sizes == (len(picture),)
        assert (second.content, second.attachments, second.attachment_alts) == (None, ("song.wav",), (SONG_ALT,))

        # Mastodon: uploaded with the alt text as description, attached once processed.
        touchdown, song = ma.created[:2]
        assert touchdown.text == "Touchdown!"
        assert [(m["description"], m["url"] is not None) for m in touchdown.media] == [(ALT, True)]
        assert [m["type"] for m in song.media] == ["audio"] and song.media[0]["description"] == SONG_ALT
        assert sorted(u["data"] for u in ma.uploads.values()) == sorted(
            [picture, (tmp_path / "personas/media/song.wav").read_bytes()]
        )

        # Bluesky: an images embed with alt text; audio is left out (its variant's text is posted alone).
        post, sung = bs.created[:2]
        assert post.text == "Touchdown on 67P!"
        [image] = post.record["embed"]["images"]
        assert image["alt"] == ALT and bs.blobs[image["image"]["ref"]["$link"]] == ("image/png", picture)
        assert sung.text == "Listen to the comet sing." and "embed" not in sung.record

        # Console: one line per file.
        out = (tmp_path / "out.txt").read_text()
        assert f'Philae: [image: 67p.png — "{ALT}"]' in out
        assert f'Philae: [audio: song.wav — "{SONG_ALT}"]' in out


# --------------------------------------------------------------------------- resume


async def test_a_restart_delivers_the_media_from_the_outbox_without_a_second_post(tmp_path):
    write_persona(tmp_path / "personas")
    async with FakeMastodon(MA_TOKEN) as fake:
        (tmp_path / "bot.toml").write_text(
            f'[bot]\npersonas = ["{tmp_path}/personas/*.yaml"]\ndatabase = "bot.db"\n\n'
            '[[adapters]]\ntype = "mastodon"\npersona = "philae"\ntoken_env = "MA"\n'
            f'base_url = "{fake.base_url}"\npoll_interval = 0.1\nrequests_per_5min = 3000\n',
            encoding="utf-8",
        )
        alice = fake.account("alice")
        fake.refuse_posts = True  # the upload works, the post does not: then the bot is killed
        async with personae_run(tmp_path, {"MA": MA_TOKEN}) as proc:
            await until(lambda: fake.requests.count(("GET", "/api/v1/notifications")) >= 2, "polling")
            fake.inject_mention(alice, "@philae send a picture please")
            await until(lambda: len(fake.uploads) >= 1 and fake.requests.count(("POST", "/api/v1/statuses")) >= 1, "")
            proc.kill()  # kill -9: the row stays pending, its media with it
            await proc.wait()
        with contextlib.closing(sqlite3.connect(tmp_path / "bot.db")) as db:
            [(status, media)] = db.execute("SELECT status, media FROM outbox").fetchall()
        assert status == "pending" and "67p.png" in media and fake.created == []

        # The restart sends it; its first answer is lost too: the retry uploads again but posts nothing new.
        fake.refuse_posts = False
        fake.lose_next_answers = 1
        async with personae_run(tmp_path, {"MA": MA_TOKEN}):
            await until(lambda: fake.posts_answered >= 1, "the post, answered")
        [status_] = fake.created
        assert status_.text.endswith("Here it is.") and status_.in_reply_to_id is not None
        assert [m["description"] for m in status_.media] == [ALT]
        assert len(fake.uploads) >= 3  # first run, restart, retry after the lost answer: uploads may repeat
        with contextlib.closing(sqlite3.connect(tmp_path / "bot.db")) as db:
            assert db.execute("SELECT status FROM outbox").fetchall() == [("sent",)]


# --------------------------------------------------------------------------- lint


@dataclass
class Linted:
    returncode: int
    stdout: str
    stderr: str = ""


def lint(*paths: Path) -> Linted:
    result = run_lint(list(paths))
    return Linted(1 if result.errors else 0, "\n".join(str(d) for d in result.diagnostics))


def test_lint_finds_a_missing_file_a_file_too_large_and_an_image_without_alt_text(tmp_path):
    folder = tmp_path / "personas"
    png(folder / "media" / "big.png", 1_000_001)  # one byte over Bluesky's image limit
    png(folder / "media" / "small.png")
    (folder / "philae.yaml").write_text(
        "persona: philae\nname: Philae\nevents:\n  touchdown:\n    say: Touchdown!\n    media:\n"
        "      - file: media/nowhere.png\n        alt: lost\n"
        "      - file: media/big.png\n        alt: a big one\n"
        "      - file: media/small.png\n"
        "      - media/notes.txt\n",
        encoding="utf-8",
    )
    done = lint(folder)
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout
    out = done.stdout + done.stderr
    file = folder / "philae.yaml"
    assert f"{file}:7:9: events.touchdown.media[0].file: media file 'media/nowhere.png' not found" in out
    assert f"{file}:9:9: events.touchdown.media[1].file: 'media/big.png' is 1.0 MB: too large for bluesky" in out
    assert f"{file}:11:9: events.touchdown.media[2].file: image 'media/small.png' has no alt text" in out
    assert f"{file}:12:9: events.touchdown.media[3]: 'media/notes.txt' is not an image, audio or video file" in out
    # Telegram, Discord and Mastodon take a 1 MB image: only Bluesky is named.
    assert "too large for telegram" not in out and "too large for mastodon" not in out


def test_lint_checks_sizes_only_against_the_platforms_of_the_bot_toml(tmp_path):
    folder = tmp_path / "personas"
    png(folder / "media" / "big.png", 1_000_001)
    (folder / "philae.yaml").write_text(
        "persona: philae\nname: Philae\nevents:\n  touchdown:\n    say: Touchdown!\n"
        "    media: {file: media/big.png, alt: a big one}\n",
        encoding="utf-8",
    )
    toml = tmp_path / "bot.toml"
    toml.write_text(
        f'[bot]\npersonas = ["{folder}/*.yaml"]\n\n[[adapters]]\ntype = "telegram"\npersona = "philae"\n'
        'token_env = "T"\n',
        encoding="utf-8",
    )
    assert "too large" not in lint(folder, toml).stdout  # Telegram takes it
    toml.write_text(toml.read_text() + '\n[[adapters]]\ntype = "bluesky"\npersona = "philae"\n', encoding="utf-8")
    assert "too large for bluesky" in lint(folder, toml).stdout
    assert "too large for bluesky" in lint(folder).stdout  # no bot.toml: every platform


def test_a_platform_variant_may_replace_or_drop_the_media_and_old_variants_still_load(tmp_path):
    write_persona(tmp_path)
    text = PERSONA.replace(
        "      bluesky:\n        say:", "      discord: [one, two]\n      bluesky:\n        media: []\n        say:"
    )
    persona = parse_persona(text, str(tmp_path / "philae.yaml"))
    action = persona.events["touchdown"]
    assert [m.alt for m in action.media_for("mastodon")] == [ALT]
    assert action.media_for("bluesky") == ()
    assert [t.render({}) for t in action.variants("discord")] == ["one", "two"]
    assert action.media[0].mime == "image/png" and Path(action.media[0].path).is_absolute()
