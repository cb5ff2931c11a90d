"""Timelines name their cast: their events, and what those events emit, reach only that cast.

The promise under test: adding a persona never changes another timeline's transcript.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from personae import Event
from personae.engine.engine import Engine
from personae.engine.messages import Outgoing
from personae.language.lint import lint, unplayable
from personae.language.loader import load_personas, parse_persona
from personae.timing.clock import VirtualClock
from personae.timing.scheduler import Scheduler
from personae.timing.timeline import load_timeline

T0 = datetime(2014, 11, 12, 15, 34, 4, tzinfo=UTC)

# A persona nobody on the Rosetta mission has heard of: its own `launch` (Rosetta's first event),
# an emit chain into events the Rosetta cast handles, a yearly cron entry that emits one too.
TELESCOPE = """\
persona: telescope
name: Telescope
events:
  launch:
    say: "Telescope: launched too, on {{ event.vehicle }}!"
    emit:
      - {event: first_light, delay: 1h}
      - {event: hibernation, data: {distance_from_earth_km: "1", wake_up: never}}
  first_light:
    say: "First light!"
    emit: {event: touchdown, data: {site: Nowhere}}
  touchdown:
    say: "The telescope saw a touchdown at {{ event.site }}."
schedule:
  - cron: "0 0 1 1 *"
    say: "Happy new year from the telescope."
    emit: {event: separation, data: {distance_km: "1", descent_hours: "1"}}
"""

HUBBLE = """\
timeline: hubble
cast: [telescope]
events:
  - {at: 1990-04-24T12:33:51Z, event: launch, data: {vehicle: Discovery}}
"""


def personae(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    cwd = Path(tempfile.mkdtemp(prefix="personae-cast-"))
    return subprocess.run(
        [sys.executable, "-m", "personae", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


async def test_adding_a_persona_never_changes_the_rosetta_replay(tmp_path):
    shipped = ROOT / "personas"
    replay = ["replay", "--speed", "max", "--seed", "2014"]
    before = personae(*replay, str(shipped / "timelines" / "rosetta.yaml"), "--personas", str(shipped), "--dry-run")
    assert before.returncode == 0, before.stderr
    assert "Rosetta: Liftoff!" in before.stdout

    copy = tmp_path / "personas"
    shutil.copytree(shipped, copy)
    (copy / "telescope.yaml").write_text(TELESCOPE)
    (copy / "timelines" / "hubble.yaml").write_text(HUBBLE)
    rosetta = str(copy / "timelines" / "rosetta.yaml")
    after = personae(*replay, rosetta, "--personas", str(copy), "--dry-run")
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout
    # Not only the dry run: the real pipeline (outbox, dispatcher, console adapters) too.
    real = personae(*replay, rosetta, "--personas", str(copy), "--db", str(tmp_path / "r.db"))
    assert real.returncode == 0, real.stderr
    assert real.stdout == before.stdout

    # The telescope does play its own timeline, where Philae and Rosetta (who handle `launch` too) stay quiet.
    hubble = await dry_replay(copy, copy / "timelines" / "hubble.yaml")
    assert {o.persona for o in hubble} == {"telescope"}
    assert "The telescope saw a touchdown at Nowhere." in [o.text for o in hubble]

    # lint says where the two timelines' personas share an event name.
    result = lint([copy])
    assert not result.errors
    launch_line = TELESCOPE.splitlines().index("  launch:") + 2  # where the reaction starts
    assert any(
        str(d).startswith(
            f"{copy / 'telescope.yaml'}:{launch_line}:3: warning: events.launch: event 'launch' is also handled by "
            "philae, rosetta of timeline 'rosetta'; 'telescope' (in timeline 'hubble') is not in its cast"
        )
        for d in result.diagnostics
    )


async def dry_replay(personas: Path, timeline: Path) -> list[Outgoing]:
    """Replay in this process at full speed, without a store; what the personas said."""
    from personae.app.replay import replay
    from personae.app.runtime import Bot
    from personae.language.loader import load_personas

    t = load_timeline(timeline)
    said: list[Outgoing] = []
    bot = Bot(load_personas([personas]), [], store=None, clock=VirtualClock(t.start, None), transcript=said.append)
    await replay(bot, t, run="r")
    return said


def engine_of(*texts: str, scheduler: Scheduler | None = None) -> Engine:
    personas = [parse_persona(t) for t in texts]
    return Engine({p.id: p for p in personas}, scheduler=scheduler)


A = "persona: a\nname: A\nevents:\n  go:\n    say: a heard go\n    emit: [ping, {event: ping, persona: c}]\n"
B = "persona: b\nname: B\nevents:\n  go:\n    say: b heard go\n  ping:\n    say: b heard ping\n    emit: pong\n"
C = "persona: c\nname: C\nevents:\n  go:\n    say: c heard go\n  ping:\n    say: c heard ping\n    emit: pong\n"
D = "persona: d\nname: D\nevents:\n  go: {say: d heard go}\n  ping: {say: d heard ping}\n  pong: {say: d pong}\n"


async def test_an_event_and_its_emits_reach_only_the_cast_or_the_persona_an_emit_names():
    engine = engine_of(A, B, C, D)
    out = await engine.dispatch(Event("go", T0, cast=frozenset({"a", "b"})))
    # `d` handles go, ping and pong but is in no cast here; `c` hears only the ping that names it,
    # and its pong goes back to the cast of the event that caused it (where nobody handles pong).
    # (An emit is handled before the next persona reacts to the event that caused it.)
    assert [o.text for o in out] == ["a heard go", "b heard ping", "c heard ping", "b heard go"]


async def test_an_admin_emit_without_cast_reaches_every_persona_that_handles_it():
    engine = engine_of(A, B, C, D)
    out = await engine.dispatch(Event("ping", T0))
    assert [o.text for o in out] == ["b heard ping", "d pong", "c heard ping", "d pong", "d heard ping"]
    named = await engine.dispatch(Event("ping", T0, persona="c"))
    assert [o.text for o in named] == ["c heard ping", "d pong"]


async def test_delayed_reactions_and_emits_keep_their_cast():
    clock = VirtualClock(T0, None)
    scheduler = Scheduler(clock)
    late = "persona: a\nname: A\nevents:\n  go:\n    say: a go\n    emit: {event: ping, delay: 1h}\n"
    slow = (
        "persona: b\nname: B\nevents:\n  ping:\n    say: b ping\n    delay: 1m\n    emit: pong\n  pong: {say: b pong}\n"
    )
    engine = engine_of(late, slow, D, scheduler=scheduler)
    said: list[str] = []

    async def sink(out):
        said.extend(o.text for o in out)

    engine.sink = sink
    said.extend(o.text for o in await engine.dispatch(Event("go", T0, cast=frozenset({"a", "b"}))))
    await scheduler.run(until_idle=True)
    assert said == ["a go", "b ping", "b pong"]


async def test_a_replay_runs_only_the_casts_cron_entries(persona_dir, tmp_path):
    (persona_dir / "telescope.yaml").write_text(TELESCOPE)
    (tmp_path / "t.yaml").write_text(
        "timeline: t\ncast: [lander, orbiter]\nevents:\n"
        "  - {at: 2014-11-12T00:00:00Z, event: touchdown, data: {site: A}}\n"
        "  - {at: 2016-02-01T00:00:00Z, event: drain}\n"
    )
    said = [o.text for o in await dry_replay(persona_dir, tmp_path / "t.yaml")]
    assert said == ["Touchdown at A!", "I can see his legs at A!", "Battery at 90%."]


def test_replay_refuses_a_timeline_without_cast_and_says_what_to_add(persona_dir, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text("timeline: t\nevents:\n  - {at: 2014-11-12T10:00:00Z, event: touchdown, data: {site: A}}\n")
    r = personae("replay", str(t), "--personas", str(persona_dir), "--speed", "max", "--dry-run")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f"{t}:1:1: timeline 't' has no cast: add 'cast: [lander]' (only the cast hears its events, "
        "so adding a persona never changes it), or name the persona of every event\n"
    )


async def test_a_timeline_whose_every_event_names_its_persona_needs_no_cast(persona_dir, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(
        "timeline: t\nevents:\n"
        "  - {at: 2014-11-12T10:00:00Z, event: touchdown, persona: lander, data: {site: A}}\n"
        "  - {at: 2014-11-12T10:00:00Z, event: landed, persona: orbiter, data: {site: B}}\n"
    )
    assert load_timeline(t).members == {"lander", "orbiter"}
    assert unplayable(load_personas([persona_dir]).values(), load_timeline(t)) == []
    said = [o.text for o in await dry_replay(persona_dir, t)]
    # The lander's `landed` emit reaches the orbiter: it is in the cast the events name.
    assert said == ["Touchdown at A!", "I can see his legs at A!", "I can see his legs at B!"]


def test_cast_problems_are_refused_together_with_positions(persona_dir, tmp_path):
    (persona_dir / "telescope.yaml").write_text(TELESCOPE)
    (persona_dir / "lander.yaml").write_text(
        (persona_dir / "lander.yaml")
        .read_text()
        .replace("  drain:\n", "  drain:\n    emit: {event: hello, persona: ghost}\n")
    )
    t = tmp_path / "t.yaml"
    t.write_text(
        "timeline: t\ncast: [lander, orbitr]\nevents:\n"
        "  - {at: 2014-11-12T10:00:00Z, event: touchdown, data: {site: A}}\n"
        "  - {at: 2014-11-12T11:00:00Z, event: first_light}\n"
    )
    problems = unplayable(load_personas([persona_dir]).values(), load_timeline(t))
    drain_line = (persona_dir / "lander.yaml").read_text().splitlines().index("  drain:") + 2
    assert [str(d) for d in problems] == [
        f"{t}:2:16: cast[1]: unknown persona 'orbitr' (did you mean 'orbiter'?)",
        f"{t}:5:5: events[1].event: no persona of the cast (lander, orbitr) handles event 'first_light'; "
        "telescope does: add it to the cast",
        f"{persona_dir / 'lander.yaml'}:{drain_line}:3: emit: emit hello: unknown persona 'ghost'",
    ]


def test_cast_in_csv_and_icalendar(write):
    csv = write("c.csv", "# cast: lander, orbiter\nat,event,persona\n2014-11-12T10:00:00Z,touchdown,,site=A\n")
    assert load_timeline(csv).members == {"lander", "orbiter"}
    assert load_timeline(csv).events[0].to_event("c").cast == {"lander", "orbiter"}
    named = write("n.csv", "2014-11-12T10:00:00Z,touchdown,lander,site=A\n2014-11-12T11:00:00Z,landed,orbiter\n")
    assert load_timeline(named).members == {"lander", "orbiter"}
    # A persona an event names joins the cast.
    joined = write(
        "j.csv", "# cast: lander\n2014-11-12T10:00:00Z,touchdown,,site=A\n2014-11-12T11:00:00Z,landed,orbiter\n"
    )
    assert load_timeline(joined).members == {"lander", "orbiter"}
    uncast = write("u.csv", "2014-11-12T10:00:00Z,touchdown,lander\n2014-11-12T11:00:00Z,landed\n")
    assert load_timeline(uncast).members is None
    ics = write(
        "c.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nX-PERSONAE-CAST:lander,orbiter\r\n"
        "BEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20140101T000000Z\r\nDTSTART:20141112T100000Z\r\n"
        "X-PERSONAE-EVENT:touchdown\r\nX-PERSONAE-PERSONA:lander\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    t = load_timeline(ics)
    assert t.cast == ("lander", "orbiter") and t.cast_at == ((4, 1), (4, 1))
    assert t.events[0].persona == "lander"


def test_lint_warns_about_a_timeline_without_cast_and_about_emits_to_unknown_personas(persona_dir, write):
    write("personas/timelines/t.csv", "2014-11-12T10:00:00Z,touchdown,,site=A\n")
    write("personas/x.yaml", "persona: x\nname: X\nevents:\n  touchdown:\n    emit: {event: drain, persona: landr}\n")
    result = lint([persona_dir])
    assert not result.errors
    found = {(Path(d.file).name, d.line, d.message) for d in result.diagnostics}
    assert (
        "t.csv",
        1,
        "timeline 't' has no cast: add a line '# cast: lander, x' (only the cast hears its events, "
        "so adding a persona never changes it), or name the persona of every event",
    ) in found
    assert ("x.yaml", 5, "emit drain: unknown persona 'landr' (did you mean 'lander'?)") in found


# -- the promise as a property: any personas, any cast, any newcomer

EVENTS = ["e0", "e1", "e2", "e3"]


@st.composite
def persona_texts(draw: st.DrawFn, ids: list[str], named: list[str]) -> list[str]:
    texts = []
    for pid in ids:
        lines = [f"persona: {pid}", f"name: {pid.upper()}", "events:", "  never: {say: x}"]
        for ev in draw(st.lists(st.sampled_from(EVENTS), unique=True, max_size=3)):
            lines += [f"  {ev}:", f"    say: '{pid} {ev} {{{{ event.n }}}}'"]
            emits = draw(st.lists(st.tuples(st.sampled_from(EVENTS), st.sampled_from([None, *named])), max_size=2))
            if emits:
                lines.append("    emit:")
                for target, persona in emits:
                    lines.append(
                        f"      - {{event: {target}, data: {{n: '{{{{ event.n }}}}'}}"
                        + (f", persona: {persona}}}" if persona else "}")
                    )
            if draw(st.booleans()):
                lines.append("    if: 'event.n | int < 3'")
        texts.append("\n".join(lines) + "\n")
    return texts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_property_a_newcomer_never_changes_what_a_cast_timeline_says(data: st.DataObject):
    base_ids = ["p0", "p1", "p2", "p3"]
    base = data.draw(persona_texts(base_ids, base_ids))
    # Newcomers may emit to anyone, and handle anything, in any load position.
    newcomers = data.draw(persona_texts(["n0", "n1"], [*base_ids, "n0", "n1"]))
    cast = frozenset(data.draw(st.lists(st.sampled_from(base_ids), min_size=1, unique=True)))
    timeline = data.draw(
        st.lists(st.tuples(st.sampled_from(EVENTS), st.sampled_from([None, *sorted(cast)])), min_size=1, max_size=6)
    )

    async def transcript(texts: list[str]) -> list[tuple[str, str]]:
        engine = engine_of(*texts)
        engine.max_depth = 4
        said = []
        for i, (name, persona) in enumerate(timeline):
            at = T0 + timedelta(minutes=i)
            out = await engine.dispatch(Event(name, at, {"n": i % 4}, "timeline:t", persona, 0, f"t#{i}", cast))
            said += [(o.persona, o.text) for o in out]
        return said

    alone = await transcript(base)
    position = data.draw(st.integers(0, len(base)))
    assert await transcript([*base[:position], *newcomers, *base[position:]]) == alone
