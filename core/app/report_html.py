"""``personae report --html``: one self-contained page, charts as inline SVG drawn here.

Nothing is fetched when the page is viewed: no script, no font, no image
URL; styles are inline and fonts are the system's. Every text from the log
is escaped.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

_PALETTE = ("#3b6ea8", "#d9822b", "#3a9a5b", "#b04a5a", "#7a5ea8", "#8a8a3b", "#4a9aa8")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1000px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#777}svg text.zero{fill:#b04a5a}
svg{display:block;margin:.5em 0;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#333}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (
        f'<svg class="chart" role="img" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}"><title>{escape(title)}</title>{body}</svg>'
    )


def hbar_chart(items: Sequence[tuple[str, float, str]], title: str, *, width: int = 900) -> str:
    """Horizontal bars: one ``(label, value, tooltip)`` a row, labels left, values right."""
    if not items:
        return '<p class="muted">nothing to chart</p>'
    row, label_w = 20, 330
    top = max((v for _, v, _ in items), default=0) or 1
    span = width - label_w - 60
    parts = []
    for i, (label, value, tip) in enumerate(items):
        y = i * row
        w = span * value / top
        cls = ' class="zero"' if value == 0 else ""
        shown = label if len(label) <= 52 else label[:51] + "…"
        parts.append(
            f'<g><title>{escape(tip)}</title><text x="{label_w - 6}" y="{y + 14}" text-anchor="end"{cls}>'
            f'{escape(shown)}</text><rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}"'
            f' fill="{_PALETTE[0]}"/><text x="{label_w + w + 4:.1f}" y="{y + 14}">{value:g}</text></g>'
        )
    return _svg(width, row * len(items) + 4, "".join(parts), title)


def grouped_bar_chart(
    categories: Sequence[str], series: Mapping[str, Sequence[float]], title: str, *, width: int = 900
) -> str:
    """Vertical bars, one group per category (a day), one bar per series (in, out, ...), with a legend."""
    if not categories:
        return '<p class="muted">nothing to chart</p>'
    height, left, bottom, top_pad = 220, 40, 40, 10
    names = list(series)
    top = max((v for vs in series.values() for v in vs), default=0) or 1
    slot = (width - left - 10) / len(categories)
    bar = min(40.0, max(1.0, slot * 0.8 / max(1, len(names))))
    plot_h = height - bottom - top_pad
    parts = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end">{top:g}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>',
    ]
    every = max(1, len(categories) // 12)
    for i, cat in enumerate(categories):
        x0 = left + i * slot + (slot - bar * len(names)) / 2
        for j, name in enumerate(names):
            value = series[name][i]
            h = plot_h * value / top
            parts.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{height - bottom - h:.1f}" width="{bar:.1f}" height="{h:.1f}"'
                f' fill="{_PALETTE[j % len(_PALETTE)]}"><title>{escape(cat)} {escape(name)}: {value:g}</title></rect>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle">'
                f"{escape(cat)}</text>"
            )
    legend = "".join(
        f'<span><i style="background:{_PALETTE[j % len(_PALETTE)]}"></i>{escape(n)}</span>' for j, n in enumerate(names)
    )
    return _svg(width, height, "".join(parts), title) + f'<div class="legend">{legend}</div>'


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def timeline_chart(posts: Sequence[Mapping[str, Any]], title: str, *, width: int = 900) -> str:
    """One row per persona, a dot per event post at its mission time; hover shows the event."""
    dated = [(p, t) for p in posts if (t := _parse(p.get("mission_time"))) is not None]
    if not dated:
        return '<p class="muted">no event posts</p>'
    rows = sorted({str(p.get("persona") or "?") for p, _ in dated})
    left, row_h, bottom = 110, 28, 30
    t0 = min(t for _, t in dated).timestamp()
    t1 = max(t for _, t in dated).timestamp()
    span = (t1 - t0) or 1.0
    plot_w = width - left - 20
    height = row_h * len(rows) + bottom
    parts = []
    for i, name in enumerate(rows):
        y = i * row_h + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{escape(name)}</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#ddd"/>')
    for post, t in dated:
        y = rows.index(str(post.get("persona") or "?")) * row_h + row_h / 2
        x = left + plot_w * (t.timestamp() - t0) / span
        tip = f"{post.get('mission_time')} {post.get('event') or ''} ({post.get('platform') or '?'})"
        parts.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="{_PALETTE[1]}"><title>{escape(tip)}</title></circle>')
    for frac, anchor in ((0.0, "start"), (1.0, "end")):
        stamp = datetime.fromtimestamp(t0 + span * frac, tz=dated[0][1].tzinfo).strftime("%Y-%m-%d %H:%M")
        parts.append(
            f'<text x="{left + plot_w * frac:.1f}" y="{height - 8}" text-anchor="{anchor}">{escape(stamp)}</text>'
        )
    return _svg(width, height, "".join(parts), title)


def step_chart(points: Sequence[tuple[str, float]], series: str, title: str, *, width: int = 900) -> str:
    """A cumulative count over days as a step line."""
    if not points:
        return '<p class="muted">no subscribers</p>'
    height, left, bottom, top_pad = 180, 40, 30, 10
    top = max(v for _, v in points) or 1
    n = len(points)
    plot_w, plot_h = width - left - 20, height - bottom - top_pad
    xs = [left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2) for i in range(n)]
    ys = [height - bottom - plot_h * v / top for _, v in points]
    path = f"M{left},{height - bottom} " + " ".join(
        f"L{xs[i]:.1f},{(ys[i - 1] if i else height - bottom):.1f} L{xs[i]:.1f},{ys[i]:.1f}" for i in range(n)
    )
    parts = [
        f'<path d="{path}" fill="none" stroke="{_PALETTE[2]}" stroke-width="2"/>',
        f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end">{top:g}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>',
    ]
    for (day, value), x, y in zip(points, xs, ys, strict=True):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{_PALETTE[2]}"><title>{escape(day)} '
                     f"{escape(series)}: {value:g}</title></circle>")  # fmt: skip
    parts.append(f'<text x="{left}" y="{height - 8}">{escape(points[0][0])}</text>')
    parts.append(f'<text x="{width - 10}" y="{height - 8}" text-anchor="end">{escape(points[-1][0])}</text>')
    return _svg(width, height, "".join(parts), title)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(str(c))}</td>' if i in numeric else f"<td>{escape(str(c))}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one HTML page."""
    t = report["totals"]
    days = sorted({d["day"] for d in report["messages_per_day"]})
    by_day: dict[str, dict[str, float]] = defaultdict(lambda: {"in": 0, "out": 0})
    for d in report["messages_per_day"]:
        by_day[d["day"]]["in"] += d["in"]
        by_day[d["day"]]["out"] += d["out"]
    fb = report["fallback"]
    lat = report["latency_ms"]
    dl = report["delivery"]
    filters = ", ".join(f"{k}={v}" for k, v in report["filters"].items() if v) or "none"
    rules = report["rules"]
    sections = [
        f'<h1>personae report</h1><p class="muted">{escape(report["database"])} · filters: {escape(filters)}</p>',
        _table(
            ["messages in", "messages out", "replies", "event posts", "fallback rate"],
            [[t["messages_in"], t["messages_out"], t["replies"], t["event_posts"], f"{fb['rate']:.1%}"]],
            numeric=range(5),
        ),
        "<h2>Unanswered questions</h2>",
        hbar_chart(
            [(g["label"], g["count"], " | ".join(g["examples"])) for g in report["unanswered"][:30]],
            "Unanswered questions by group",
        ),
        _table(
            ["count", "group", "examples", "personas"],
            [
                [g["count"], g["label"], " · ".join(g["examples"]), ", ".join(g["personas"])]
                for g in report["unanswered"]
            ],
            numeric=[0],
        ),
        "<h2>Messages per day</h2>",
        grouped_bar_chart(
            days, {"in": [by_day[d]["in"] for d in days], "out": [by_day[d]["out"] for d in days]}, "Messages per day"
        ),
        _table(
            ["day", "platform", "in", "out"],
            [[d["day"], d["platform"], d["in"], d["out"]] for d in report["messages_per_day"]],
            numeric=[2, 3],
        ),
        "<h2>Event posts on the mission timeline</h2>",
        timeline_chart(report["event_posts"], "Event posts by mission time"),
        "<h2>Replies by rule</h2>",
        hbar_chart(
            [
                (f"{r['persona']} {Path(r['rule']).name} {r['kind']}", r["count"], r["rule"])
                for r in rules
                if r["kind"] in ("reply", "fallback")
            ],
            "Replies by rule",
        ),
        f"<p>Rules that never fired: {len(report['never_fired'])}</p>",
        _table(["rule", "kind"], [[r["rule"], r["kind"]] for r in rules if r["count"] == 0]),
        "<h2>Latency</h2>",
        hbar_chart(
            [(k, float(v), f"{k}: {v} ms") for k, v in lat.items() if k != "count"], "Reply latency percentiles (ms)"
        ),
        "<h2>Delivery</h2>",
        _table(["adapter", "status", "count"], [[r["adapter"], r["status"], r["count"]] for r in dl["by_status"]], [2]),
        f"<p>Rate limited (429): {dl['rate_limited']} · retried: {dl['retried']}</p>",
        _table(
            ["adapter", "status", "error", "count"],
            [[e["adapter"], e["status"], e["error"], e["count"]] for e in dl["errors"]],
            [3],
        ),
        "<h2>Subscribers over time</h2>",
        "".join(
            f"<h3>{escape(adapter)}</h3>"
            + step_chart(
                [(s["day"], s["total"]) for s in report["subscribers"] if s["adapter"] == adapter],
                adapter,
                f"{adapter} subscribers",
            )
            for adapter in sorted({s["adapter"] for s in report["subscribers"]})
        )
        or '<p class="muted">no subscribers</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>personae report</title><style>{_CSS}</style></head><body>" + "\n".join(sections) + "</body></html>\n"
    )


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file in the same folder, then a rename."""
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        # mkstemp makes the file private (0600); a report is a page to share, like any new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
