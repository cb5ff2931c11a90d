"""Tokens never leak, however a library or a server writes them (lower case, percent-encoded, cut short)."""

from __future__ import annotations

import asyncio
import html
import itertools
import os
import re
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.telegram_api import FakeTelegram
from personae.delivery.secrets import MIN_PIECE, RedactingStream, Redactor

TOKEN = "987654:TEST-secret-token-do-not-leak"


def _views(text: str) -> list[str]:
    """``text`` and what it says once decoded the ways a library may have encoded it."""
    hex_escapes = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    return [text, unquote(text), unquote(unquote(text)), html.unescape(text), hex_escapes]


def leaked(text: str, secret: str = TOKEN) -> list[str]:
    """Pieces of ``secret`` (``MIN_PIECE`` characters or more, any case) readable in ``text``."""
    lowered = secret.lower()
    pieces = {lowered[i : i + MIN_PIECE] for i in range(len(lowered) - MIN_PIECE + 1)}
    return sorted({p for view in _views(text) for p in pieces if p in view.lower()})


TRANSFORMS: list[Callable[[str], str]] = [
    str,
    str.lower,
    str.upper,
    str.capitalize,
    str.swapcase,
    str.title,
    lambda s: quote(s, safe=""),
    lambda s: quote(s, safe="").lower(),
    quote,
    lambda s: quote(quote(s, safe=""), safe=""),
    lambda s: "".join(f"%{b:02X}" for b in s.encode()),
    lambda s: "".join(f"\\x{b:02x}" for b in s.encode()),
    lambda s: "".join(f"&#{ord(c)};" if not c.isalnum() else c for c in s),
    lambda s: s[: len(s) // 2],
    lambda s: s[len(s) // 3 :].upper(),
    lambda s: s.split(":", 1)[-1].lower(),
]

secrets = st.one_of(
    st.from_regex(r"[0-9]{6,10}:[A-Za-z0-9_-]{30,40}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{20,30}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}", fullmatch=True),
    st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="*%\\&"), min_size=16, max_size=60),
)
surroundings = st.text(st.sampled_from("abcXYZ /:-_.?=0123"), max_size=40)


@settings(max_examples=120, deadline=None)
@given(secrets, st.lists(st.sampled_from(range(len(TRANSFORMS))), min_size=1, max_size=3), surroundings, surroundings)
def test_a_secret_is_masked_whatever_was_done_to_it(secret, transforms, before, after):
    redactor = Redactor([secret])
    written = secret
    for i in transforms:
        written = TRANSFORMS[i](written)
    text = f"{before}{written}{after}"
    masked = redactor(text)
    assert not leaked(masked, secret), (text, masked)


@settings(max_examples=100, deadline=None)
@given(st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz ABC/:%&#;\\x0123456789é"), max_size=80))
def test_text_without_the_secret_is_left_alone(text):
    redactor = Redactor([TOKEN])
    if not leaked(text):
        assert redactor(text) == text


def test_a_secret_written_in_two_pieces_to_stderr_is_still_masked(capsys):
    import io

    target = io.StringIO()
    stream = RedactingStream(target, Redactor([TOKEN]))
    stream.write("error: /bot" + TOKEN[:12])
    stream.write(TOKEN[12:].lower() + "/sendMessage\nnext")
    stream.flush()
    assert target.getvalue() == "error: /bot***/sendMessage\nnext"


# --------------------------------------------------------------------------- end to end, `personae run`


def _bot_toml(tmp_path: Path, persona_dir: Path, fake: FakeTelegram) -> None:
    (tmp_path / "bot.toml").write_text(
        f'[bot]\npersonas = ["{persona_dir}/*.yaml"]\ndatabase = "bot.db"\nreload = false\n\n'
        '[[adapters]]\ntype = "telegram"\npersona = "lander"\ntoken_env = "LANDER_TG_TOKEN"\n'
        f'base_url = "{fake.base_url}"\nbase_file_url = "{fake.base_file_url}"\npoll_timeout = 1\n'
    )


async def test_personae_run_never_writes_the_token_however_the_server_echoes_it(persona_dir, tmp_path):
    # Each error the fake answers ends with the request path (which holds the token),
    # written a different way each time: lower case, upper case, percent-encoded...
    transforms = itertools.cycle(TRANSFORMS[1:13])
    async with FakeTelegram(TOKEN, echo_path=lambda path: next(transforms)(path)) as fake:
        _bot_toml(tmp_path, persona_dir, fake)
        fake.fail_next("5xx", 2)
        fake.forget_chat(43)  # 400 "chat not found": a permanent failure, kept in outbox.last_error
        fake.block_chat(44)  # 403: the chat is gone
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "personae",
            "run",
            "-v",
            cwd=tmp_path,
            env={**os.environ, "LANDER_TG_TOKEN": TOKEN},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await fake.wait_for_call("getUpdates", timeout=60)
            fake.inject_message(42, "/status")
            fake.inject_message(43, "/status")
            fake.inject_message(44, "/status")
            await fake.wait_for_sent(1, timeout=60)
            await fake.wait_for_call("sendMessage", n=5, timeout=60)
            # getUpdates answers errors too: the polling loop reports them.
            fake.fail_next("5xx", 1)
            fake.fault_methods = frozenset({"sendmessage", "getupdates"})
            await fake.wait_for_call("getUpdates", n=len(fake.calls_to("getUpdates")) + 2, timeout=60)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = err.decode("utf-8", "replace")
    assert "Internal Server Error" in stderr or "chat not found" in stderr.lower(), stderr  # errors were reported
    assert not leaked(stderr), stderr
    assert not leaked(out.decode("utf-8", "replace"))
    con = sqlite3.connect(tmp_path / "bot.db")
    errors = [e for (e,) in con.execute("SELECT last_error FROM outbox WHERE last_error IS NOT NULL")]
    con.close()
    assert errors, "the failed sends left no last_error"
    for name in ("bot.db", "bot.db-wal"):
        path = tmp_path / name
        if path.exists():
            raw = path.read_bytes().decode("latin-1")
            assert not leaked(raw), name
