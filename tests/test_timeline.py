"""Timeline files (YAML, CSV, iCalendar): loading, and every bad input with its position."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from personae.language.errors import PersonaeError
from personae.language.lint import lint
from personae.timing.timeline import load_timeline

GOOD = """\
timeline: t
title: Test
events:
  - at: 2014-11-12T08:35:00Z
    event: separation
  - at: 2014-11-12T17:34:04+02:00
    event: touchdown
    data: {site: Agilkia}
    basis: SC
"""


def errors_of(path) -> list[str]:
    with pytest.raises(PersonaeError) as info:
        load_timeline(path)
    return [str(d) for d in info.value.diagnostics]


def test_yaml_timeline_loads_in_utc(write):
    t = load_timeline(write("t.yaml", GOOD))
    assert t.id == "t" and [e.name for e in t.events] == ["separation", "touchdown"]
    assert t.events[1].at == datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)
    assert t.events[1].data == {"site": "Agilkia"} and t.events[1].line == 6


def test_time_without_timezone(write):
    p = write("t.yaml", GOOD.replace("2014-11-12T08:35:00Z", "2014-11-12T08:35:00"))
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:4:9: events[0].at: ")
    assert "timezone" in msg


def test_unsorted_times(write):
    p = write("t.yaml", GOOD.replace("2014-11-12T08:35:00Z", "2014-11-13T08:35:00Z"))
    assert errors_of(p) == [
        f"{p}:6:9: events[1].at: events are not in time order: 2014-11-12T15:34:04+00:00 is before the previous "
        "2014-11-13T08:35:00+00:00"
    ]


def test_events_at_one_instant_load_in_file_order(write):
    # 10:35+02:00 is 08:35Z: the same instant as the first event, written differently.
    t = load_timeline(write("t.yaml", GOOD.replace("2014-11-12T17:34:04+02:00", "2014-11-12T10:35:00+02:00")))
    assert [(e.name, e.index, e.at) for e in t.events] == [
        ("separation", 0, datetime(2014, 11, 12, 8, 35, tzinfo=UTC)),
        ("touchdown", 1, datetime(2014, 11, 12, 8, 35, tzinfo=UTC)),
    ]


def test_bad_event_name_and_unknown_key(write):
    p = write(
        "t.yaml",
        GOOD.replace("event: separation", "event: 'sep aration'").replace("basis: SC", "basis: XX\n    sorce: x"),
    )
    msgs = errors_of(p)
    assert any(m.startswith(f"{p}:5:12: events[0].event:") for m in msgs)
    assert f"{p}:10:5: events[1]: unknown key 'sorce' (did you mean 'source'?)" in msgs


def test_csv_timeline(write):
    p = write(
        "t.csv",
        "at,event,persona,data\n"
        "2014-11-12T08:35:00Z,separation,,distance_km=22.5\n"
        "2014-11-12T15:34:04Z,touchdown,philae,site=Agilkia,bounce=true\n",
    )
    t = load_timeline(p)
    assert [(e.name, e.persona, dict(e.data), e.line) for e in t.events] == [
        ("separation", None, {"distance_km": 22.5}, 2),
        ("touchdown", "philae", {"site": "Agilkia", "bounce": True}, 3),
    ]


def test_csv_broken_rows(write):
    p = write("t.csv", "2014-11-12T08:35:00Z,separation\nnot-a-time,touchdown\n2014-11-12T09:00:00Z,x,,novalue\n")
    msgs = errors_of(p)
    assert msgs[0].startswith(f"{p}:2:1: at: 'not-a-time'") or msgs[0].startswith(f"{p}:2:1: at: ")
    assert msgs[1] == f"{p}:3:25: data: expected key=value, found 'novalue'"


def test_csv_naive_time(write):
    p = write("t.csv", "2014-11-12T08:35:00,separation\n")
    assert errors_of(p) == [
        f"{p}:1:1: at: '2014-11-12T08:35:00' has no timezone (add Z for UTC, e.g. 2014-11-12T08:35:00Z)"
    ]


ICS = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
X-WR-CALNAME:Rosetta
BEGIN:VEVENT
UID:1
DTSTAMP:20140101T000000Z
DTSTART:20141112T153404Z
SUMMARY:Touchdown
X-PERSONAE-EVENT:touchdown
X-PERSONAE-DATA:{"site": "Agilkia"}
END:VEVENT
BEGIN:VEVENT
UID:2
DTSTAMP:20140101T000000Z
DTSTART:20140302T071751Z
SUMMARY:Launch day
END:VEVENT
END:VCALENDAR
"""


def test_ics_timeline_sorted_with_data(write):
    t = load_timeline(write("r.ics", ICS.replace("\n", "\r\n")))
    assert [(e.name, e.at.isoformat()) for e in t.events] == [
        ("launch_day", "2014-03-02T07:17:51+00:00"),
        ("touchdown", "2014-11-12T15:34:04+00:00"),
    ]
    assert t.events[1].data["site"] == "Agilkia"


def test_ics_without_events(write):
    p = write("e.ics", "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nEND:VCALENDAR\r\n")
    assert errors_of(p) == [f"{p}:1:1: calendar has no VEVENT: a timeline needs at least one event"]


def test_ics_garbage(write):
    p = write("g.ics", "hello\n")
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:1:1: invalid iCalendar file")


def test_lint_cross_checks_personas_and_timelines(persona_dir, write):
    write("personas/timelines/t.yaml", GOOD.replace("title: Test\n", "title: Test\ncast: [lander]\n"))
    result = lint([persona_dir])
    assert not result.errors
    # Notes (what the voice lint could not render: the orbiter's 'landed' never gets data here) are not findings.
    findings = [d for d in result.diagnostics if d.severity != "note"]
    messages = sorted(d.message for d in findings)
    assert messages == [
        "no persona handles event 'separation'",
        "no timeline, schedule or emit raises event 'drain'",
    ]
    assert all(d.severity == "warning" for d in findings)


def test_lint_flags_unconditional_emit_loop(write, tmp_path):
    write("a.yaml", "persona: a\nname: A\nevents:\n  ping:\n    say: x\n    emit: pong\n")
    write("b.yaml", "persona: b\nname: B\nevents:\n  pong:\n    say: y\n    emit: ping\n")
    result = lint([tmp_path])
    [err] = result.errors
    assert err.message == "emit loop: ping → pong → ping"
