"""The shipped media are made by personas/media/make_media.py, and are exactly what it makes.

The generator runs as a real subprocess writing to a temporary folder; its
output must equal the committed files byte for byte. The files themselves
are checked for what they claim to be: a two-lobed silhouette PNG, and a
mono 16-bit WAV whose tone lies in the comet's 40–50 mHz sped up 10,000 times.
"""

from __future__ import annotations

import itertools
import math
import struct
import subprocess
import sys
import wave
import zlib
from collections import Counter
from pathlib import Path

import pytest

MEDIA = Path(__file__).resolve().parent.parent / "personas" / "media"
SCRIPT = MEDIA / "make_media.py"
PNG = MEDIA / "comet-67p.png"
WAV = MEDIA / "comet-song.wav"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("media")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("name", ["comet-67p.png", "comet-song.wav"])
def test_the_generator_reproduces_the_committed_file_byte_for_byte(made: Path, name: str) -> None:
    assert (made / name).read_bytes() == (MEDIA / name).read_bytes()


def test_check_mode_reports_a_changed_file(made: Path) -> None:
    (made / "comet-song.wav").write_bytes(b"RIFF")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--out", str(made)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "comet-song.wav: DIFFERS" in done.stdout
    assert "comet-67p.png: same" in done.stdout


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes], list[tuple[int, int, int]]]:
    """Width, height, rows of palette indices and the palette of an 8-bit indexed PNG with filter 0."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    idat = b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IDAT":
            idat += body
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 3)
    raw = zlib.decompress(idat)
    rows = [raw[y * (width + 1) : (y + 1) * (width + 1)] for y in range(height)]
    assert all(r[0] == 0 for r in rows)
    plte = chunks[b"PLTE"]
    palette = [(plte[i], plte[i + 1], plte[i + 2]) for i in range(0, len(plte), 3)]
    return width, height, [r[1:] for r in rows], palette


def test_the_picture_is_a_small_png_of_two_lobes_joined_by_a_neck() -> None:
    data = PNG.read_bytes()
    assert len(data) < 200_000
    width, height, rows, palette = _png_pixels(data)
    assert (width, height) == (800, 450)
    sky = palette[0]

    star = palette[-1]
    comet = [(x, y) for y, r in enumerate(rows) for x, p in enumerate(r) if palette[p] not in (sky, star)]
    # The comet's long axis (principal component), then its thickness along that axis: a two-lobed
    # body is thick, thin (the neck), thick again, where an ellipse would have a single bulge.
    n = len(comet)
    mx, my = sum(x for x, _ in comet) / n, sum(y for _, y in comet) / n
    sxx = sum((x - mx) ** 2 for x, _ in comet)
    syy = sum((y - my) ** 2 for _, y in comet)
    sxy = sum((x - mx) * (y - my) for x, y in comet)
    angle = 0.5 * math.atan2(2 * sxy, sxx - syy)
    ax, ay = math.cos(angle), math.sin(angle)
    profile = Counter(round(((x - mx) * ax + (y - my) * ay) / 4) for x, y in comet)
    bins = sorted(profile)
    thickness = [profile[b] for b in range(bins[0], bins[-1] + 1)]
    third = len(thickness) // 3
    first = max(range(third), key=lambda i: thickness[i])
    last = max(range(2 * third, len(thickness)), key=lambda i: thickness[i])
    waist = min(thickness[first : last + 1])
    assert waist < 0.8 * min(thickness[first], thickness[last])
    assert thickness[first] != thickness[last]  # one lobe larger than the other
    assert sum(1 for r in rows for p in r if palette[p] == palette[-1]) > 100  # stars


def test_the_song_is_ten_seconds_of_mono_16_bit_sound_in_the_sped_up_band() -> None:
    assert WAV.stat().st_size < 1_000_000
    with wave.open(str(WAV)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        rate, n = w.getframerate(), w.getnframes()
        frames = w.readframes(n)
    assert 9.5 <= n / rate <= 10.5
    samples = struct.unpack(f"<{n}h", frames)
    assert max(abs(s) for s in samples) < 32_767  # not clipped
    # The tone's pitch, from upward zero crossings: 40–50 mHz × 10,000 = 400–500 Hz.
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    assert 400 <= crossings / (n / rate) <= 500
