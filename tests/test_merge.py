"""Event-time ordered merge of co-partitioned topics (pure)."""

from __future__ import annotations

from hypothesis import given, settings as hsettings, strategies as st

from streams.runtime.merge import PartitionMerger, Pending

TOPICS = ["carts", "orders", "clock"]


def test_the_smallest_event_time_goes_first_across_topics():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=500)
    m.add(Pending("clock", 5000, "tick"))
    m.add(Pending("carts", 1000, "cart"))
    m.add(Pending("orders", 3000, "order"))
    assert [p.item for p in m.drain(10, lag=lambda t: 0, now_ms=0)] == ["cart", "order", "tick"]


def test_a_topic_whose_lag_is_unknown_holds_the_others_back_until_the_idle_limit():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=500, max_lag_wait_ms=5000)
    m.add(Pending("clock", 9000, "tick far ahead"))
    carts_unknown = lambda t: None if t == "carts" else 0  # noqa: E731 - nothing fetched for carts yet
    assert m.drain(10, carts_unknown, now_ms=1000) == []
    assert m.drain(10, carts_unknown, now_ms=1400) == []
    assert [p.item for p in m.drain(10, carts_unknown, now_ms=1501)] == ["tick far ahead"]
    assert m.enforced == 1


def test_a_topic_known_to_have_unfetched_records_is_waited_for_up_to_the_lag_bound():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=500, max_lag_wait_ms=5000)
    m.add(Pending("clock", 9000, "tick far ahead"))
    carts_lagging = lambda t: 120 if t == "carts" else 0  # noqa: E731 - 120 cart records on their way
    assert m.drain(10, carts_lagging, now_ms=1000) == []
    assert m.drain(10, carts_lagging, now_ms=2000) == []  # past max_idle_ms: still waiting
    m.add(Pending("carts", 1500, "cart fetched late"))
    assert [p.item for p in m.drain(10, lambda t: 0, now_ms=2100)] == ["cart fetched late", "tick far ahead"]
    assert m.enforced == 0
    m.add(Pending("clock", 9500, "next tick"))
    assert m.drain(10, carts_lagging, now_ms=3000) == []
    assert m.drain(10, carts_lagging, now_ms=7999) == []
    assert [p.item for p in m.drain(10, carts_lagging, now_ms=8001)] == ["next tick"]  # the bound
    assert m.enforced == 1


def test_caught_up_empty_topics_do_not_delay_processing():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=10_000)
    m.add(Pending("orders", 1, "order"))
    assert [p.item for p in m.drain(10, lag=lambda t: 0, now_ms=0)] == ["order"]


def test_ties_break_by_topic_order_then_arrival():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=0)
    m.add(Pending("orders", 7, "o1"))
    m.add(Pending("carts", 7, "c1"))
    m.add(Pending("carts", 7, "c2"))
    assert [p.item for p in m.drain(10, lambda t: 0, 0)] == ["c1", "c2", "o1"]


@hsettings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 10_000)), max_size=60))
def test_output_is_sorted_by_event_time_whenever_each_topic_is_sorted(events):
    per_topic = {t: sorted(at for tt, at in events if tt == t) for t in TOPICS}
    m: PartitionMerger[int] = PartitionMerger(TOPICS, max_idle_ms=0)
    for t in TOPICS:
        for at in per_topic[t]:
            m.add(Pending(t, at, at))
    out = [p.at for p in m.drain(1000, lambda t: 0, 0)]
    assert out == sorted(out) and len(out) == len(events)
