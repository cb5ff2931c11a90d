"""Make the shipped personas' media: a drawn 67P silhouette and a synthesised "comet song".

personae ships only media it makes itself. This script draws and synthesises
them from numbers alone (standard library only, no randomness from the
machine), so the same script gives the same bytes everywhere the same zlib
is used, and a test checks that the committed files are exactly its output::

    python personas/media/make_media.py            # rewrite the files next to this script
    python personas/media/make_media.py --check    # exit 1 if a committed file differs

``comet-67p.png`` (800 × 450, indexed colour)
    Comet 67P/Churyumov–Gerasimenko as a silhouette against a starry sky: a
    large lobe and a small lobe joined by a neck, the "rubber duck" shape
    (facts: about 4 km across, two lobes). Each lobe is an ellipse; the neck
    comes from a smooth union of their distance fields; edges are
    anti-aliased from the distance itself.

``comet-song.wav`` (10 s, mono, 16-bit, 22,050 Hz)
    The "singing comet": Rosetta's magnetometer (RPC-Mag) measured the
    comet's magnetic field oscillating at 40–50 millihertz; ESA sped the
    recording up about 10,000 times to make it audible (facts:
    ../shared/facts/rosetta.md). Here a tone wanders through 40–50 mHz × 10,000
    = 400–500 Hz, in swelling and fading wave packets, with soft clicks, as
    the published clip does. It is a synthesis from the documented
    frequency, not the recording.

:data:`ALT` holds the alt text each file is meant to carry.
"""

from __future__ import annotations

import argparse
import io
import math
import struct
import sys
import wave
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
PNG_NAME = "comet-67p.png"
WAV_NAME = "comet-song.wav"

#: Alt text for each file (what a reader who cannot see or hear it should know).
ALT = {
    PNG_NAME: (
        "Drawing of comet 67P/Churyumov–Gerasimenko as a grey silhouette on a starry black sky: "
        "a large lobe and a smaller lobe joined by a narrow neck, like a rubber duck."
    ),
    WAV_NAME: (
        "Ten seconds of a synthesised 'comet song': a wavering tone between 400 and 500 Hz that swells, "
        "fades and clicks. It stands for 67P's magnetic field oscillating at 40–50 millihertz, "
        "sped up 10,000 times."
    ),
}

# --------------------------------------------------------------------------- numbers that make the sound

#: The comet's field oscillation (facts: 40–50 millihertz) and ESA's speed-up (about 10,000 times).
FIELD_HZ = (0.040, 0.050)
SPEEDUP = 10_000
SAMPLE_RATE = 22_050
SECONDS = 10.0

# --------------------------------------------------------------------------- numbers that draw the picture

WIDTH, HEIGHT = 800, 450
SKY = (6, 8, 20)
BODY = (150, 146, 140)
RIM = (214, 208, 198)  # the sunlit edge, upper left
STAR = (235, 235, 245)
#: Shades of the blend between sky and body (the anti-aliased edge) in the palette.
EDGE_LEVELS = 12
#: (centre x, centre y, radius x, radius y, rotation in degrees) of the large and the small lobe.
BIG_LOBE = (488.0, 268.0, 178.0, 122.0, -14.0)
SMALL_LOBE = (238.0, 150.0, 104.0, 84.0, 28.0)
NECK = 70.0  # how far the smooth union reaches: the width of the neck


class _Numbers:
    """A small deterministic generator (xorshift32): the same stars and clicks on every machine."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFF or 1

    def next(self) -> float:
        """A number in [0, 1)."""
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x / 2**32


# --------------------------------------------------------------------------- the picture


def _lobe(cx: float, cy: float, rx: float, ry: float, degrees: float) -> tuple[float, ...]:
    """A lobe as (centre x, centre y, radius x, radius y, cosine, sine of its rotation)."""
    a = math.radians(degrees)
    return cx, cy, rx, ry, math.cos(a), math.sin(a)


_LOBES = (_lobe(*BIG_LOBE), _lobe(*SMALL_LOBE))


def _ellipse_distance(x: float, y: float, lobe: tuple[float, ...]) -> float:
    """Approximate signed distance in pixels from (x, y) to a rotated ellipse's edge (negative inside)."""
    cx, cy, rx, ry, cos, sin = lobe
    dx, dy = x - cx, y - cy
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    k = math.hypot(u / rx, v / ry)
    if k == 0:
        return -min(rx, ry)
    # Scale by the gradient's length so the edge is about one pixel wide everywhere.
    g = math.hypot(u / (rx * rx), v / (ry * ry))
    return (k - 1) * k / g if g else 0.0


def _smooth_union(a: float, b: float, k: float) -> float:
    """Polynomial smooth minimum: two shapes melt into one with a neck of reach ``k``."""
    h = max(k - abs(a - b), 0.0) / k
    return min(a, b) - h * h * k * 0.25


def _comet_distance(x: float, y: float) -> float:
    return _smooth_union(_ellipse_distance(x, y, _LOBES[0]), _ellipse_distance(x, y, _LOBES[1]), NECK)


def _palette() -> list[tuple[int, int, int]]:
    """Sky, the edge blends, body, sunlit rim blends, and star."""

    def mix(c1: tuple[int, int, int], c2: tuple[int, int, int], t: float) -> tuple[int, int, int]:
        r, g, b = (round(p + (q - p) * t) for p, q in zip(c1, c2, strict=True))
        return r, g, b

    edge = [mix(SKY, BODY, (i + 1) / (EDGE_LEVELS + 1)) for i in range(EDGE_LEVELS)]
    rim = [mix(BODY, RIM, (i + 1) / EDGE_LEVELS) for i in range(EDGE_LEVELS)]
    return [SKY, *edge, BODY, *rim, STAR]


def draw() -> list[bytearray]:
    """The picture as rows of palette indices."""
    body = EDGE_LEVELS + 1
    star = 2 * EDGE_LEVELS + 2
    rows = []
    for y in range(HEIGHT):
        row = bytearray(WIDTH)
        for x in range(WIDTH):
            d = _comet_distance(x + 0.5, y + 0.5)
            if d >= 1.0:
                continue  # sky
            if d > -1.0:  # the anti-aliased edge: coverage from the distance
                cover = (1.0 - d) / 2.0
                row[x] = min(body, max(0, round(cover * (EDGE_LEVELS + 1))))
                continue
            # Inside: a thin band lit by the Sun on the upper left, a flat silhouette elsewhere.
            lit = _comet_distance(x + 0.5 - 7.0, y + 0.5 - 9.0)
            if lit > 0:
                row[x] = body + min(EDGE_LEVELS, max(1, round(lit / 12.0 * EDGE_LEVELS)))
            else:
                row[x] = body
        rows.append(row)
    numbers = _Numbers(67)
    for _ in range(260):
        x, y = int(numbers.next() * WIDTH), int(numbers.next() * HEIGHT)
        if _comet_distance(x + 0.5, y + 0.5) > 3.0:
            rows[y][x] = star
            if numbers.next() < 0.12:  # a few brighter stars, as small crosses
                for sx, sy in ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)):
                    if 0 <= sx < WIDTH and 0 <= sy < HEIGHT and _comet_distance(sx + 0.5, sy + 0.5) > 3.0:
                        rows[sy][sx] = star
    return rows


def png_bytes() -> bytes:
    """The silhouette as a PNG file (colour type 3, 8-bit palette indices)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(row) for row in draw())  # filter 0 on every row
    palette = b"".join(bytes(c) for c in _palette())
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 3, 0, 0, 0)),
            chunk(b"PLTE", palette),
            chunk(b"IDAT", zlib.compress(raw, 9)),
            chunk(b"IEND", b""),
        )
    )


# --------------------------------------------------------------------------- the sound


def _packets(numbers: _Numbers) -> list[tuple[float, float, float]]:
    """(centre, width, height) of the wave packets in which the oscillation swells and fades."""
    out = []
    t = 0.2
    while t < SECONDS:
        out.append((t, 0.25 + 0.6 * numbers.next(), 0.45 + 0.55 * numbers.next()))
        t += 0.45 + 0.9 * numbers.next()
    return out


def _drift(numbers: _Numbers) -> Callable[[float], float]:
    """The audible frequency over time: a slow wander through the documented band, sped up."""
    low, high = (f * SPEEDUP for f in FIELD_HZ)
    knots = [low + (high - low) * numbers.next() for _ in range(int(SECONDS) + 2)]

    def at(t: float) -> float:
        i = int(t)
        f = t - i
        s = f * f * (3 - 2 * f)  # smoothstep between one knot a second
        return knots[i] + (knots[i + 1] - knots[i]) * s

    return at


_STEP = 32


def _envelope(t: float, packets: list[tuple[float, float, float]]) -> float:
    return 0.08 + sum(h * math.exp(-(((t - c) / w) ** 2)) for c, w, h in packets if abs(t - c) < 3 * w)


def samples() -> Iterator[float]:
    """The song, one float in [-1, 1] per sample."""
    numbers = _Numbers(1969)  # the year 67P was discovered
    packets = _packets(numbers)
    drift = _drift(numbers)
    clicks = sorted(SECONDS * numbers.next() for _ in range(28))
    n = int(SECONDS * SAMPLE_RATE)
    phase = 0.0
    click = 0
    envelope = 0.0
    for i in range(n):
        t = i / SAMPLE_RATE
        f = drift(t)
        phase = (phase + 2 * math.pi * f / SAMPLE_RATE) % (2 * math.pi)
        if i % _STEP == 0:  # the envelope changes slowly: compute it every few samples
            envelope = _envelope(t, packets)
        # A little of the second and third harmonic gives the tone its reedy, synthetic colour.
        tone = math.sin(phase) + 0.3 * math.sin(2 * phase + 0.7) + 0.12 * math.sin(3 * phase + 1.9)
        value = 0.4 * envelope * tone
        while click < len(clicks) and clicks[click] < t - 0.05:
            click += 1
        for c in clicks[click : click + 2]:
            if 0 <= t - c < 0.05:  # a soft click: a short decaying ring an octave up
                value += 0.35 * math.exp(-(t - c) * 90) * math.sin(2 * math.pi * 2 * f * (t - c))
        fade = min(1.0, t / 0.3, (SECONDS - t) / 0.3)
        yield max(-1.0, min(1.0, value * fade))


def wav_bytes() -> bytes:
    """The song as a WAV file (mono, 16-bit PCM)."""
    pcm = b"".join(struct.pack("<h", round(s * 26_000)) for s in samples())
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return out.getvalue()


# --------------------------------------------------------------------------- files

#: File name -> function that makes its bytes.
MAKERS: dict[str, Callable[[], bytes]] = {PNG_NAME: png_bytes, WAV_NAME: wav_bytes}


def main(argv: list[str] | None = None) -> int:
    """Write the files next to this script, or with ``--check`` compare them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: next to this script)")
    args = parser.parse_args(argv)
    status = 0
    for name, make in MAKERS.items():
        data = make()
        path = args.out / name
        if args.check:
            same = path.is_file() and path.read_bytes() == data
            print(f"{path}: {'same' if same else 'DIFFERS'}")
            status |= not same
        else:
            path.write_bytes(data)
            print(f"{path}: {len(data):,} bytes")
    return status


if __name__ == "__main__":
    sys.exit(main())
