"""The per-message counters keep their labelled children: the same counts as ``labels().inc()``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from personae.app.metrics import Labelled, Metrics

labels = st.lists(st.tuples(st.sampled_from(["lander", "orbiter", "ü"]), st.sampled_from(["telegram", "null", ""])))


@given(labels)
def test_labelled_counts_what_labels_inc_counts(bumps):
    registry = CollectorRegistry()
    direct = Counter("direct", "d", ["persona", "platform"], registry=registry)
    cached = Labelled(Counter("cached", "c", ["persona", "platform"], registry=registry))
    for persona, platform in bumps:
        direct.labels(persona, platform).inc()
        cached.inc(persona, platform)
    for persona, platform in set(bumps):
        want = registry.get_sample_value("direct_total", {"persona": persona, "platform": platform})
        got = registry.get_sample_value("cached_total", {"persona": persona, "platform": platform})
        assert got == want


def test_a_bots_message_counters_reach_its_metrics_page():
    m = Metrics()
    m.count_out.inc("lander", "telegram")
    m.count_out.inc("lander", "telegram")
    m.count_in.inc("lander", "telegram")
    m.count_replies.inc("lander", None)  # a reply without a rule name is counted under "None", as labels() does
    text = m.render().decode()
    assert 'personae_messages_out_total{persona="lander",platform="telegram"} 2.0' in text
    assert 'personae_messages_in_total{persona="lander",platform="telegram"} 1.0' in text
    assert 'personae_replies_total{persona="lander",rule="None"} 1.0' in text
