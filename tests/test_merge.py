"""Event-time ordered merge of co-partitioned topics (pure)."""

from __future__ import annotations

from hypothesis import given, settings as hsettings, strategies as st

from streams.merge import PartitionMerger, Pending

TOPICS = ["carts", "orders", "clock"]


def test_the_smallest_event_time_goes_first_across_topics():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=500)
    m.add(Pending("clock", 5000, "tick"))
    m.add(Pending("carts", 1000, "cart"))
    m.add(Pending("orders", 3000, "order"))
    assert [p.item for p in m.drain(10, caught_up=lambda t: True, now_ms=0)] == ["cart", "order", "tick"]


def test_a_topic_with_unfetched_data_holds_the_others_back_until_the_idle_limit():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=500)
    m.add(Pending("clock", 9000, "tick far ahead"))
    not_carts = lambda t: t != "carts"  # noqa: E731 - carts still has data to fetch
    assert m.drain(10, not_carts, now_ms=1000) == []
    assert m.drain(10, not_carts, now_ms=1400) == []
    assert [p.item for p in m.drain(10, not_carts, now_ms=1501)] == ["tick far ahead"]


def test_caught_up_empty_topics_do_not_delay_processing():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=10_000)
    m.add(Pending("orders", 1, "order"))
    assert [p.item for p in m.drain(10, caught_up=lambda t: True, now_ms=0)] == ["order"]


def test_ties_break_by_topic_order_then_arrival():
    m: PartitionMerger[str] = PartitionMerger(TOPICS, max_idle_ms=0)
    m.add(Pending("orders", 7, "o1"))
    m.add(Pending("carts", 7, "c1"))
    m.add(Pending("carts", 7, "c2"))
    assert [p.item for p in m.drain(10, lambda t: True, 0)] == ["c1", "c2", "o1"]


@hsettings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 10_000)), max_size=60))
def test_output_is_sorted_by_event_time_whenever_each_topic_is_sorted(events):
    per_topic = {t: sorted(at for tt, at in events if tt == t) for t in TOPICS}
    m: PartitionMerger[int] = PartitionMerger(TOPICS, max_idle_ms=0)
    for t in TOPICS:
        for at in per_topic[t]:
            m.add(Pending(t, at, at))
    out = [p.at for p in m.drain(1000, lambda t: True, 0)]
    assert out == sorted(out) and len(out) == len(events)
