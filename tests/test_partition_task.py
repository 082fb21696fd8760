"""The partition task driven like Kafka Streams' TopologyTestDriver: records in, time advanced,
outputs asserted — the same task the worker, simulate and replay drive, with no broker."""

from __future__ import annotations

from schemas import serde
from streams.config import HOUR_MS, load_settings
from streams.runtime.limits import Refusal
from streams.runtime.task import PartitionTask, TaskOutput
from streams.tools.simulate import simulate

T0 = 1_700_000_000_000


def _settings():
    s = load_settings(env={})
    s.flows.guards.quiet_start_hour = s.flows.guards.quiet_end_hour = 0
    return s


def _profile(cid: str, at: int) -> dict:
    return serde.from_json("CustomerEvent", {"event_id": f"{cid}-p", "customer_id": cid, "occurred_at": at,
                                             "type": "upserted", "email": f"{cid}@example.com", "first_name": "Ann",
                                             "timezone": "UTC", "marketing_opt_in": True})


def _cart(cid: str, at: int) -> dict:
    return serde.from_json("CartEvent", {"event_id": f"{cid}-c", "customer_id": cid, "occurred_at": at,
                                         "type": "item_added", "cart_id": "k1", "currency": "EUR",
                                         "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]})


def _order(cid: str, at: int, **extra: object) -> dict:
    return serde.from_json("OrderEvent", {"event_id": f"{cid}-o", "customer_id": cid, "occurred_at": at,
                                          "type": "placed", "order_id": "o1", "email": f"{cid}@example.com",
                                          "total": "9.00", "currency": "EUR",
                                          "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}],
                                          **extra})


def test_records_in_time_advanced_the_cart_series_and_the_order_confirmation_come_out():
    task: PartitionTask[str] = PartitionTask(_settings(), 0)
    out: TaskOutput[str] = TaskOutput()
    task.offer("customers", "p", _profile("c1", T0))
    task.offer("carts", "c", _cart("c1", T0 + 1))
    assert task.run(out, 10) == 2 and out.commands == [] and out.done == ["p", "c"]
    task.advance(T0 + 2 * HOUR_MS, out)
    assert [(ref, c["flow"], c["step"]) for ref, c in out.commands] == [(None, "abandoned_cart", 1)]
    out.clear()
    task.offer("orders", "o", _order("c1", T0 + 3 * HOUR_MS))
    task.run(out, 10)
    assert [(ref, c["flow"]) for ref, c in out.commands] == [("o", "order_confirmation")]
    out.clear()
    task.advance(T0 + 100 * HOUR_MS, out)
    assert out.commands == []  # the order ended the cart series


def test_records_of_co_partitioned_topics_are_handed_to_the_engine_in_event_time_order():
    task: PartitionTask[str] = PartitionTask(_settings(), 0)
    out: TaskOutput[str] = TaskOutput()
    task.offer("carts", "cart@2", _cart("c1", T0 + 2))
    task.offer("customers", "profile@1", _profile("c1", T0 + 1))
    lag = {"carts": 0, "customers": 0, "orders": 5}  # orders has unfetched records: wait for them
    assert task.run(out, 10, lambda topic: lag.get(topic, 0), now_ms=0) == 0
    lag["orders"] = 0
    task.run(out, 10, lambda topic: lag.get(topic, 0), now_ms=0)
    assert out.done == ["profile@1", "cart@2"]


def test_unreadable_oversized_and_mis_keyed_records_become_dead_letters_and_the_next_record_is_processed():
    task: PartitionTask[str] = PartitionTask(_settings(), 0)
    out: TaskOutput[str] = TaskOutput()
    task.offer("orders", "garbage", None, refusal=Refusal("unknown_fingerprint", "not ours"))
    task.offer("orders", "huge", None, size=task.limits.max_record_bytes + 1)
    task.offer("orders", "stranger", _order("c1", T0), key=b"c2")
    task.offer("orders", "empty", _order("", T0 + 1), key=b"")
    task.offer("orders", "good", _order("c3", T0 + 2), key=b"c3")
    task.run(out, 10)
    assert [(d.ref, d.reason) for d in out.dead_letters] == [
        ("garbage", "unknown_fingerprint"), ("huge", "too_large"), ("stranger", "key_mismatch"), ("empty", "invalid_key")]
    assert [(ref, c["customer_id"]) for ref, c in out.commands] == [("good", "c3")]
    assert out.done == ["garbage", "huge", "stranger", "empty", "good"]


def test_a_command_over_max_message_bytes_is_a_dead_letter_of_the_record_that_caused_it():
    s = _settings()
    s.limits.max_message_bytes = 6000
    s.limits.max_name_chars = s.limits.max_text_chars = 10_000
    task: PartitionTask[str] = PartitionTask(s, 0)
    out: TaskOutput[str] = TaskOutput()
    big = _order("c1", T0, items=[{"sku": f"S{i}", "name": "x" * 150, "price": "1.00", "quantity": 1}
                                  for i in range(40)])
    task.apply("orders", "big", big, out)
    assert out.commands == [] and [(d.ref, d.reason) for d in out.dead_letters] == [("big", "output_too_large")]


def test_simulate_dead_letters_what_the_worker_dead_letters_and_clamps_what_it_clamps():
    s = _settings()
    lines = [serde.canonical_json({"topic": "shop.orders", "value": serde.to_json("OrderEvent", r)})
             for r in (_order("", T0), _order("c2", T0 + 1, email="c2@example.com"),
                       _order("c3", T0 + 2, items=[{"sku": "S", "name": "N" * 5000, "price": "1.00", "quantity": 1}]))]
    result = simulate(lines, s)
    assert [(b.line, b.reason) for b in result.bad_lines] == [(1, "invalid_key")]
    names = [c["context"] for c in result.commands if c["customer_id"] == "c3"]
    assert len(names) == 1 and "N" * s.limits.max_name_chars in names[0] and "N" * 5000 not in names[0]


def test_a_global_records_processing_error_in_a_later_partition_is_kept_and_its_refusal_reported_once():
    from streams.runtime.task import DeadLetter

    out: TaskOutput[int] = TaskOutput()
    later: TaskOutput[int] = TaskOutput()
    later.dead_letters += [DeadLetter(1, "processing_error", "partition 2 only"),
                           DeadLetter(1, "too_large", "every partition", admission=True)]
    out.take(later)
    assert [d.reason for d in out.dead_letters] == ["processing_error"]


def test_under_arrival_order_a_fact_that_came_late_is_merged_after_the_clock_records_that_came_before_it():
    s = _settings()
    s.worker.merge_order = "arrival"
    task: PartitionTask[str] = PartitionTask(s, 0)
    out: TaskOutput[str] = TaskOutput()
    task.offer("carts", "cart", _cart("c1", T0 + 2), arrived_at=T0 + 2)
    task.offer("clock", "tick", {"partition": 0, "tick_at": T0 + 10, "source": "t"}, arrived_at=T0 + 10)
    task.offer("orders", "order", _order("c1", T0 + 5), arrived_at=T0 + 90)  # happened before the tick, came after
    task.run(out, 10, lambda topic: 0, now_ms=0)
    assert out.done == ["cart", "tick", "order"]
    by_event_time: PartitionTask[str] = PartitionTask(_settings(), 0)
    out = TaskOutput()
    by_event_time.offer("carts", "cart", _cart("c1", T0 + 2), arrived_at=T0 + 2)
    by_event_time.offer("clock", "tick", {"partition": 0, "tick_at": T0 + 10, "source": "t"}, arrived_at=T0 + 10)
    by_event_time.offer("orders", "order", _order("c1", T0 + 5), arrived_at=T0 + 90)
    by_event_time.run(out, 10, lambda topic: 0, now_ms=0)
    assert out.done == ["cart", "order", "tick"]


def test_an_unknown_merge_order_is_refused_with_the_orders_there_are():
    import pytest

    from streams.config import ConfigError

    s = _settings()
    s.worker.merge_order = "wallclock"
    with pytest.raises(ConfigError, match="worker.merge_order must be one of event_time, arrival, not 'wallclock'"):
        PartitionTask(s, 0)
