"""Bluesky's numbers in bot.toml are checked, and posting keeps to the daily points budget."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.bluesky_api import FakeBluesky
from personae.adapters.base import AdapterConfig, Delivery, DeliveryError, OptionError
from personae.adapters.bluesky import BlueskyAdapter
from personae.adapters.points import PointsBudget

HANDLE = "philae.bsky.social"
PASSWORD = "abcd-efgh-ijkl-mnop-app-password"

WRONG_NUMBERS = [
    ('poll_interval = "10s"', "poll_interval must be a number above 0, not '10s'"),
    ("poll_interval = nan", "poll_interval must be a number above 0, not nan"),
    ("poll_interval = 0", "poll_interval must be a number above 0, not 0"),
    ("request_timeout = -1", "request_timeout must be a number above 0, not -1"),
    ("max_replies_per_thread = 2.5", "max_replies_per_thread must be a whole number above 0, not 2.5"),
    ("concurrency = 0", "concurrency must be a whole number above 0, not 0"),
    ("concurrency = true", "concurrency must be a whole number above 0, not True"),
    ('points_per_hour = "lots"', "points_per_hour must be a number above 0, not 'lots'"),
    ("points_per_hour = inf", "points_per_hour must be a number above 0, not inf"),
    ("points_per_day = 2", "points_per_day must be at least 3 (one post), not 2"),
]


@pytest.mark.parametrize(("option", "says"), WRONG_NUMBERS)
def test_a_wrong_number_is_refused_naming_the_option(option: str, says: str) -> None:
    key, value = option.split(" = ")
    options = {"handle": HANDLE, "password_env": "P", key: tomllib.loads(f"x = {value}")["x"]}
    with pytest.raises(OptionError) as caught:
        BlueskyAdapter.create(AdapterConfig("b", "philae", options=options), {"P": PASSWORD})
    assert (caught.value.key, str(caught.value)) == (key, says)


def test_a_wrong_number_in_bot_toml_is_one_line_at_its_position(tmp_path):
    (tmp_path / "p.yaml").write_text("persona: philae\nname: Philae\nfallback: {say: hi}\n")
    (tmp_path / "bot.toml").write_text(
        '[bot]\npersonas = ["p.yaml"]\ndatabase = "bot.db"\n\n[[adapters]]\ntype = "bluesky"\npersona = "philae"\n'
        f'handle = "{HANDLE}"\npassword_env = "P"\nbase_url = "http://127.0.0.1:9"\npoll_interval = -5\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "personae", "run"],
        cwd=tmp_path,
        env={**os.environ, "P": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (r.returncode, r.stderr) == (
        1,
        "error: bot.toml:11: adapters[0].poll_interval: poll_interval must be a number above 0, not -5\n",
    )


# --------------------------------------------------------------------------- the points budget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_daily_budget_waits_for_the_oldest_points_to_leave_the_day() -> None:
    clock = Clock()
    budget = PointsBudget([(5000, 3600), (35000, 86400)], clock)
    posts = 0
    while (wait := budget.wait(3)) < 3600:  # at the hourly pace, waiting out the hourly budget too
        clock.now += wait
        budget.spend(3)
        posts += 1
        clock.now += 3600 * 3 / 5000
    assert posts == 35000 // 3
    # The day is spent after about seven hours; the first points come back a day after they were spent.
    assert budget.wait(3) == pytest.approx(1000.0 + 86400 - clock.now)
    clock.now += budget.wait(3)
    assert budget.wait(3) == 0


@settings(max_examples=60, deadline=None)
@given(
    limits=st.lists(st.tuples(st.integers(3, 60), st.floats(1, 100)), min_size=1, max_size=3),
    steps=st.lists(st.tuples(st.floats(0, 30), st.integers(1, 3)), max_size=80),
)
def test_spending_only_when_wait_says_so_never_overspends_any_window(limits, steps) -> None:
    clock = Clock()
    budget = PointsBudget(limits, clock)
    spent: list[tuple[float, int]] = []
    for gap, cost in steps:
        clock.now += gap
        for _ in range(5):  # after the wait it fits (a second, rounding-sized wait at most)
            wait = budget.wait(cost)
            assert wait >= 0
            if wait == 0:
                break
            clock.now += wait
        assert wait == 0
        budget.spend(cost)
        spent.append((clock.now, cost))
        for limit, window in limits:
            assert sum(c for t, c in spent if clock.now < t + window) <= limit


async def test_posting_stops_at_the_daily_budget_instead_of_drawing_429s() -> None:
    # A day of 12 points: four posts, then the adapter pauses posting until the points come back.
    async with FakeBluesky(HANDLE, PASSWORD, points_per_day=12) as fake:
        options = {"handle": HANDLE, "password_env": "P", "base_url": fake.base_url, "points_per_day": 12}
        adapter = BlueskyAdapter.create(AdapterConfig("b", "philae", options=options), {"P": PASSWORD})

        async def ignore(incoming: object) -> None:
            return None

        await adapter.start(ignore)
        try:
            for n in range(4):
                await adapter.send(Delivery(n, "timeline", f"post {n}", key=f"k{n}"))
            with pytest.raises(DeliveryError) as caught:
                await adapter.send(Delivery(4, "timeline", "post 4", key="k4"))
        finally:
            await adapter.stop()
        assert [p.text for p in fake.created] == ["post 0", "post 1", "post 2", "post 3"]
        assert fake.throttled == 0
        assert caught.value.scope == "global"
        assert caught.value.retry_after is not None and 86000 < caught.value.retry_after <= 86400
        assert not caught.value.permanent
