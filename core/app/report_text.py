"""``personae report`` on the terminal: rich tables, the unanswered questions first."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold", justify="right" if col in ("in", "out", "count", "ms") else "left")
    return table


def print_report(report: Mapping[str, Any], console: Console) -> None:
    """Print every section of ``report`` (from :func:`personae.app.report.build_report`)."""
    t = report["totals"]
    fb = report["fallback"]
    filters = ", ".join(f"{k}={v}" for k, v in report["filters"].items() if v) or "none"
    console.print(f"[bold]personae report[/bold] {report['database']} (filters: {filters})")
    console.print(
        f"{t['messages_in']} message(s) in, {t['messages_out']} out ({t['replies']} replies,"
        f" {t['event_posts']} event posts); fallback {fb['fallbacks']}/{fb['replies']} = {fb['rate']:.1%}"
    )

    groups = _table(
        "Unanswered questions (texts that got the fallback), most frequent first", "count", "group", "examples"
    )
    for g in report["unanswered"]:
        groups.add_row(str(g["count"]), g["label"], " · ".join(g["examples"]))
    console.print(groups if report["unanswered"] else "Unanswered questions: none")

    days = _table("Messages per day and platform (UTC)", "day", "platform", "in", "out")
    for d in report["messages_per_day"]:
        days.add_row(d["day"], d["platform"], str(d["in"]), str(d["out"]))
    console.print(days)

    rules = _table("Replies by rule", "persona", "kind", "rule", "count")
    for r in report["rules"]:
        count = str(r["count"]) if r["count"] else "[red]never fired[/red]"
        rules.add_row(r["persona"], r["kind"], Path(r["rule"]).name, count)
    for r in report["unknown_rules"]:
        rules.add_row(r["persona"], "[yellow]not in the persona files[/yellow]", r["rule"], str(r["count"]))
    console.print(rules)

    posts = report["event_posts"]
    if posts:
        events = _table("Event posts on the mission timeline", "mission time", "persona", "event", "platform")
        for e in posts:
            events.add_row((e["mission_time"] or "")[:19].replace("T", " "), e["persona"] or "", e["event"] or "",
                           e["platform"] or "")  # fmt: skip
        console.print(events)

    lat = report["latency_ms"]
    if lat["count"]:
        line = ", ".join(f"{k} {v:.2f}" for k, v in lat.items() if k != "count")
        console.print(f"[bold]Reply latency (ms)[/bold] over {lat['count']} replies: {line}")

    dl = report["delivery"]
    if dl["by_status"]:
        out = _table("Delivery (outbox)", "adapter", "status", "count")
        for r in dl["by_status"]:
            out.add_row(r["adapter"], r["status"], str(r["count"]))
        console.print(out)
        console.print(f"rate limited (429): {dl['rate_limited']}, retried: {dl['retried']}")
        if dl["errors"]:
            errors = _table("Delivery errors", "adapter", "status", "error", "count")
            for e in dl["errors"]:
                errors.add_row(e["adapter"], e["status"], e["error"], str(e["count"]))
            console.print(errors)

    if report["subscribers"]:
        subs = _table("Subscribers over time (current subscriptions by the day they started)", "day", "adapter",
                      "new", "total")  # fmt: skip
        for s in report["subscribers"]:
            subs.add_row(s["day"], s["adapter"], str(s["new"]), str(s["total"]))
        console.print(subs)
