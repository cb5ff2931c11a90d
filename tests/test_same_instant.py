"""Several events at one instant: allowed in every timeline format, played in file order
(replays at any speed, ``--from``, live mode); an exact duplicate row is a lint warning."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personae.app.replay import live, replay
from personae.app.runtime import Bot
from personae.engine.messages import Outgoing
from personae.language.lint import lint
from personae.language.loader import load_personas, parse_persona
from personae.timing.clock import VirtualClock
from personae.timing.timeline import load_timeline

# An announcement and its event, two personas at one minute, the same event twice with other data.
TIMELINE = """\
timeline: t
cast: [lander, orbiter]
events:
  - {at: 2014-11-12T09:00:00Z, event: drain}
  - {at: 2014-11-12T10:00:00Z, event: landed, persona: orbiter, data: {site: the announcement}}
  - {at: 2014-11-12T10:00:00Z, event: touchdown, data: {site: A}}
  - {at: 2014-11-12T11:00:00+01:00, event: drain, persona: lander}
  - {at: 2014-11-12T10:00:00Z, event: touchdown, data: {site: B}}
  - {at: 2014-11-12T10:01:00Z, event: drain}
"""

IN_ORDER = [
    "2014-11-12 09:00 UTC  Lander: Battery at 90%.",
    "2014-11-12 10:00 UTC  Orbiter: I can see his legs at the announcement!",
    "2014-11-12 10:00 UTC  Lander: Touchdown at A!",
    "2014-11-12 10:00 UTC  Orbiter: I can see his legs at A!",
    "2014-11-12 10:00 UTC  Lander: Battery at 80%.",
    "2014-11-12 10:00 UTC  Lander: Touchdown at B!",
    "2014-11-12 10:00 UTC  Orbiter: I can see his legs at B!",
    "2014-11-12 10:01 UTC  Lander: Battery at 70%.",
]


def personae(*args: str) -> subprocess.CompletedProcess[str]:
    cwd = Path(tempfile.mkdtemp(prefix="personae-instant-"))
    return subprocess.run(
        [sys.executable, "-m", "personae", *args], capture_output=True, text=True, cwd=cwd, timeout=90
    )


def test_replay_plays_events_at_one_instant_in_file_order(persona_dir, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(TIMELINE)
    base = ["replay", str(t), "--personas", str(persona_dir), "--speed", "max", "--seed", "1"]
    dry = personae(*base, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == IN_ORDER
    # --from at that very instant plays all of it (after a silent prelude), through the real outbox.
    windowed = personae(*base, "--from", "2014-11-12T10:00:00Z", "--db", str(tmp_path / "r.db"))
    assert windowed.returncode == 0, windowed.stderr
    assert windowed.stdout.splitlines() == IN_ORDER[1:]


def stamp(o: Outgoing) -> str:
    assert o.at is not None
    return f"{o.at:%Y-%m-%d %H:%M} UTC  {o.persona.capitalize()}: {o.text}"


async def test_a_paced_replay_and_live_mode_keep_file_order(persona_dir, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(TIMELINE)
    timeline = load_timeline(t)

    said: list[str] = []
    clock = VirtualClock(timeline.start, 600_000)  # an hour of mission in 6 ms
    bot = Bot(load_personas([persona_dir]), [], store=None, clock=clock, transcript=lambda o: said.append(stamp(o)))
    await replay(bot, timeline, run="paced")
    assert said == IN_ORDER

    live_said: list[str] = []
    clock = VirtualClock(timeline.start - timedelta(hours=1), None)
    bot = Bot(
        load_personas([persona_dir]), [], store=None, clock=clock, transcript=lambda o: live_said.append(stamp(o))
    )
    await live(bot, timeline)  # every event is still to come: all are scheduled at their dates
    await bot.scheduler.run(until_idle=True)
    assert live_said == IN_ORDER


def test_csv_and_icalendar_keep_file_order_at_one_instant(write):
    csv = write(
        "t.csv",
        "# cast: lander, orbiter\nat,event,persona,data\n"
        "2014-11-12T10:00:00Z,landed,orbiter,site=x\n"
        "2014-11-12T10:00:00Z,touchdown,,site=A\n"
        "2014-11-12T11:00:00+01:00,drain,lander\n",
    )
    assert [(e.name, e.line) for e in load_timeline(csv).events] == [("landed", 3), ("touchdown", 4), ("drain", 5)]

    def vevent(uid: int, start: str, event: str) -> str:
        return (
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20140101T000000Z\r\nDTSTART:{start}\r\n"
            f"X-PERSONAE-EVENT:{event}\r\nEND:VEVENT\r\n"
        )

    ics = write(
        "t.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nX-PERSONAE-CAST:lander,orbiter\r\n"
        + vevent(1, "20141112T100000Z", "landed")
        + vevent(2, "20141112T100000Z", "touchdown")
        + vevent(3, "20141112T090000Z", "drain")  # a calendar need not be sorted
        + vevent(4, "20141112T100000Z", "drain")
        + "END:VCALENDAR\r\n",
    )
    assert [e.name for e in load_timeline(ics).events] == ["drain", "landed", "touchdown", "drain"]


def test_lint_warns_about_an_exact_duplicate_row_at_its_line(persona_dir, write):
    row = "  - {at: 2014-11-12T10:00:00Z, event: touchdown, data: {site: B}}\n"
    dup = TIMELINE.replace(row, row + row.replace("10:00:00Z", "11:00:00+01:00").replace("{site: B}", "{ site: B }"))
    write("personas/timelines/t.yaml", dup)
    write(
        "personas/timelines/c.csv",
        "# cast: lander\n2014-11-12T10:00:00Z,drain,lander,x=1\n"
        "2014-11-12T10:00:00Z,drain,lander,x=2\n"  # other data: not a duplicate
        "2014-11-12T10:00:00Z,drain,,x=1\n"  # no persona: not a duplicate
        "2014-11-12T11:00:00+01:00,drain,lander,x=1\n",
    )
    result = lint([persona_dir])
    found = [str(d) for d in result.diagnostics if "plays twice" in d.message or "play twice" in d.message]
    t = persona_dir / "timelines" / "t.yaml"
    c = persona_dir / "timelines" / "c.csv"
    assert found == [
        f"{c}:5:1: warning: events[3]: same time, event, persona and data as line 2: it will play twice",
        f"{t}:9:5: warning: events[5]: same time, event, persona and data as line 8: it will play twice",
    ]
    assert not result.errors


ECHO = "persona: echo\nname: Echo\nevents:\n  tick: {say: '{{ event.n }}'}\n"


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(minutes=st.lists(st.integers(0, 3), min_size=1, max_size=12), as_csv=st.booleans())
async def test_property_any_ties_play_in_file_order(tmp_path, minutes, as_csv):
    start = datetime(2014, 11, 12, tzinfo=UTC)
    times = [start + timedelta(minutes=m) for m in sorted(minutes)]  # in order, with many ties
    if as_csv:
        path = tmp_path / "t.csv"
        rows = [f"{at.isoformat()},tick,echo,n={n}" for n, at in enumerate(times)]
        path.write_text("\n".join(rows) + "\n")
    else:
        path = tmp_path / "t.yaml"
        rows = [f"  - {{at: '{at.isoformat()}', event: tick, data: {{n: {n}}}}}" for n, at in enumerate(times)]
        path.write_text("timeline: t\ncast: [echo]\nevents:\n" + "\n".join(rows) + "\n")
    timeline = load_timeline(path)
    assert [e.data["n"] for e in timeline.events] == list(range(len(times)))
    said: list[str] = []
    bot = Bot(
        {"echo": parse_persona(ECHO)},
        [],
        store=None,
        clock=VirtualClock(start, None),
        transcript=lambda o: said.append(o.text),
    )
    await replay(bot, timeline, run="p")
    assert said == [str(n) for n in range(len(times))]
