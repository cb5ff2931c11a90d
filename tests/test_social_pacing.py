"""Mastodon's pace: replies get the request budget the poller leaves, not a fixed 80 % of it."""

from __future__ import annotations

import asyncio

import pytest
from mastodon import Mastodon

from fakes.mastodon_api import FakeMastodon
from personae.adapters.base import AdapterConfig
from personae.adapters.mastodon import MastodonAdapter

TOKEN = "pacing-test-token"


def adapter(**options: object) -> MastodonAdapter:
    config = AdapterConfig("m", "philae", options={"token_env": "T", "base_url": "http://127.0.0.1:9", **options})
    return MastodonAdapter.create(config, {"T": TOKEN})


@pytest.mark.parametrize(
    ("options", "rate"),
    [
        ({}, 0.8),  # 300 per 5 min, a poll every 5 s: one request in five is a poll
        ({"requests_per_5min": 9000}, 30 - 0.2),  # a bigger budget: the polls are a smaller share of it
        ({"requests_per_5min": 9000, "poll_interval": 1}, 29),
        ({"requests_per_5min": 300, "poll_interval": 1}, 0.5),  # polls would eat it all: half is kept for replies
    ],
)
def test_replies_get_the_budget_the_polls_leave(options: dict[str, object], rate: float) -> None:
    a = adapter(**options)
    assert a.limits.global_rate == pytest.approx(rate)
    assert a.limits.concurrency == 2


async def test_the_fake_instance_pages_forward_from_min_id_0() -> None:
    # Mastodon pages oldest first from any min_id given, 0 included: the adapter's first poll on a
    # fresh account asks with min_id=0 and must see the oldest mentions first, then page on.
    async with FakeMastodon(TOKEN) as fake:
        for i in range(50):
            fake.inject_mention(fake.account(f"user{i}"), "@philae hello")
        client = Mastodon(access_token=TOKEN, api_base_url=fake.base_url, version_check_mode="none")
        try:
            page = await asyncio.to_thread(client.notifications, types=["mention"], min_id="0", limit=40)
        finally:
            client.session.close()
    assert [n["account"]["acct"] for n in page][-1] == "user0@elsewhere.example"
    assert len(page) == 40 and {n["account"]["acct"] for n in page} == {f"user{i}@elsewhere.example" for i in range(40)}
