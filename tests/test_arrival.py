"""Which facts reached their topic after the partition's clock records had passed them (explain, replay)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from streams.tools.arrival import Arrived, arrival, late_arrivals, late_words

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _tick(at: int, produced: int, partition: int = 0) -> Arrived:
    return Arrived("clock", partition, 0, None, at, produced)


def _order(at: int, produced: int | None, partition: int = 0) -> Arrived:
    return Arrived("orders", partition, 7, "c1", at, produced, "placed", "shop.orders")


def test_a_fact_produced_after_the_clock_records_passed_it_by_more_than_the_grace_is_late():
    ticks = [_tick(T0 + n * 2_000, T0 + n * 2_000) for n in range(1, 60)]
    late = late_arrivals([*ticks, _order(T0 + 20_000, T0 + 111_000)], grace_ms=30_000)
    assert [(x.record.event_time, x.clock, x.behind_ms) for x in late] == [(T0 + 20_000, T0 + 110_000, 90_000)]
    assert late_words(late[0], ZoneInfo("UTC")).endswith("(late by 1 min 30 s) (shop.orders[0] offset 7)")


def test_within_the_grace_or_ahead_of_the_clock_a_fact_is_not_late():
    ticks = [_tick(T0 + n * 2_000, T0 + n * 2_000) for n in range(1, 60)]
    assert late_arrivals([*ticks, _order(T0 + 20_000, T0 + 45_000)], grace_ms=30_000) == []
    assert late_arrivals([*ticks, _order(T0 + 200_000, T0 + 201_000)], grace_ms=30_000) == []


def test_a_fact_stamped_with_its_event_time_or_without_a_timestamp_has_no_known_arrival():
    ticks = [_tick(T0 + n * 2_000, T0 + n * 2_000) for n in range(1, 60)]
    assert arrival("orders", T0 + 20_000, T0 + 20_000) is None and arrival("orders", T0, None) is None
    assert arrival("clock", T0, T0) == T0  # the worker produces its ticks at their time
    assert late_arrivals([*ticks, _order(T0 + 20_000, T0 + 20_000), _order(T0 + 20_000, None)], 30_000) == []


def test_only_the_clock_records_of_the_facts_own_partition_count():
    other = [_tick(T0 + n * 2_000, T0 + n * 2_000, partition=1) for n in range(1, 60)]
    assert late_arrivals([*other, _order(T0 + 20_000, T0 + 111_000, partition=0)], 30_000) == []


def test_clock_records_produced_out_of_order_count_by_the_highest_tick_produced_so_far():
    ticks = [_tick(T0 + 100_000, T0 + 50_000), _tick(T0 + 60_000, T0 + 60_000)]
    late = late_arrivals([*ticks, _order(T0 + 20_000, T0 + 55_000)], grace_ms=30_000)
    assert [x.clock for x in late] == [T0 + 100_000]


def test_under_arrival_order_a_fact_produced_after_later_facts_of_its_partition_is_late_though_no_tick_passed_it():
    backlog = [Arrived("carts", 0, n, f"c{n}", T0 + n * 3_600_000, T0 + 1_000 + n, "item_added", "shop.carts")
               for n in range(1, 5)]  # a history written topic by topic: carts first…
    order = Arrived("orders", 0, 0, "c9", T0 + 60_000, T0 + 2_000, "placed", "shop.orders")  # …then the orders
    assert late_arrivals([*backlog, order], grace_ms=30_000) == []  # no clock record passed it
    [x] = late_arrivals([*backlog, order], grace_ms=30_000, every_record=True)
    assert (x.record, x.clock, x.by) == (order, T0 + 4 * 3_600_000, "partition's records")
    assert "when the partition's records stood at" in late_words(x, ZoneInfo("UTC"))
