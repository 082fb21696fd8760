"""Replay for data teams: same log → identical commands; a changed delay → exactly the expected diff."""

from __future__ import annotations

import copy
import threading

import pytest

from schemas import serde
from streams.config import HOUR_MS, MINUTE_MS
from streams.kafka.io import produce_records, read_topic
from streams.runtime.worker import ProcessorRuntime
from streams.tools.replay import ReplayError, TimeRange, diff_commands, replay_settings, run_replay
from streams.timeparse import parse_time_ms
from streams.kafka.topics import ensure_topics, topic_specs

T0 = parse_time_ms("2026-11-02T09:00:00Z")  # a Monday morning, outside quiet hours everywhere used here


def _recorded_log(settings, bootstrap) -> None:
    """Two customers abandon carts at T0; B orders at T0+90 min. Production ticks every 30 min for 80 h."""
    t = settings.topics
    customers = [serde.from_json("CustomerEvent", {
        "event_id": f"cust-{c}", "customer_id": c, "occurred_at": T0 - HOUR_MS, "type": "upserted",
        "email": f"{c}@example.com", "first_name": c, "locale": "en", "timezone": "UTC",
        "marketing_opt_in": True}) for c in ("A", "B")]
    carts = [serde.from_json("CartEvent", {
        "event_id": f"cart-{c}", "customer_id": c, "occurred_at": T0, "type": "item_added", "cart_id": f"k-{c}",
        "email": f"{c}@example.com", "cart_url": f"https://shop.example.com/cart/{c}", "currency": "EUR",
        "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]}) for c in ("A", "B")]
    order_b = serde.from_json("OrderEvent", {
        "event_id": "order-B", "customer_id": "B", "occurred_at": T0 + 90 * MINUTE_MS, "type": "placed",
        "order_id": "o-B", "cart_id": "k-B", "email": "B@example.com", "total": "9.00", "currency": "EUR",
        "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]})
    produce_records(settings, bootstrap, t.name("customers"), "CustomerEvent", customers)
    produce_records(settings, bootstrap, t.name("carts"), "CartEvent", carts)
    produce_records(settings, bootstrap, t.name("orders"), "OrderEvent", [order_b])
    ticks = [{"partition": p, "tick_at": T0 + i * 30 * MINUTE_MS, "source": "prod"}
             for i in range(1, 161) for p in range(settings.topics.partitions)]
    produce_records(settings, bootstrap, t.name("clock"), "ClockTick", ticks, key_field="partition")


def _run_production(settings, bootstrap) -> list[dict]:
    settings.worker.tick_interval_s = 0
    assert ensure_topics(bootstrap, topic_specs(settings)).healthy
    _recorded_log(settings, bootstrap)
    runtime = ProcessorRuntime(settings, bootstrap, instance_id="prod", write_ticks=False)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    try:
        got = read_topic(bootstrap, settings.topics.name("commands"), expect=5, timeout_s=60)
    finally:
        stop.set()
        thread.join(30)
    return [r.decoded().record for r in got]


@pytest.mark.integration
def test_replaying_a_recorded_log_twice_yields_identical_commands_and_a_changed_delay_exactly_its_diff(kafka, settings):
    production = _run_production(settings, kafka)
    # A: steps 1, 2, 3; B: step 1 only (ordered after it) → 4 commands, no order confirmation? B's order
    # confirmation is transactional and immediate → 5 commands in all.
    flows = sorted((c["customer_id"], c["flow"], c["step"]) for c in production)
    assert flows == [("A", "abandoned_cart", 1), ("A", "abandoned_cart", 2), ("A", "abandoned_cart", 3),
                     ("B", "abandoned_cart", 1), ("B", "order_confirmation", 1)]
    window = TimeRange(T0 - 2 * HOUR_MS, T0 + 100 * HOUR_MS)
    seen: list[tuple[str, int, int | None]] = []
    first = run_replay(settings, kafka, settings.topics.prefix + "r1.", window,
                       progress=lambda what, done, total: seen.append((what, done, total)))
    # a progress bar's feed: each input topic's copy, then copied records the processors are past
    assert {w for w, _, _ in seen if w.startswith("copying ")} >= {f"copying {settings.topics.name('carts')}",
                                                                   f"copying {settings.topics.name('clock')}"}
    replaying = [(done, total) for w, done, total in seen if w == "replaying"]
    copied = sum(n for lt, n in first.copied.items() if lt != "inventory")
    assert replaying and replaying[-1] == (copied, copied) and all(d <= t for d, t in replaying)
    second = run_replay(settings, kafka, settings.topics.prefix + "r2.", window)
    assert first.diff.identical and second.diff.identical
    assert [serde.encode("EmailCommand", c) for c in sorted(first.commands, key=lambda c: c["command_id"])] == \
           [serde.encode("EmailCommand", c) for c in sorted(second.commands, key=lambda c: c["command_id"])]

    slower = copy.deepcopy(settings)
    slower.flows.abandoned_cart.delays_ms = [2 * HOUR_MS, 24 * HOUR_MS, 72 * HOUR_MS]
    what_if = run_replay(settings, kafka, settings.topics.prefix + "r3.", window, config=slower)
    d = what_if.diff
    assert d.added == []
    assert [(c["customer_id"], c["flow"], c["step"]) for c in d.removed] == [("B", "abandoned_cart", 1)]
    assert [(n["customer_id"], n["flow"], n["step"]) for _, n, _ in d.changed] == [("A", "abandoned_cart", 1)]
    old, new, fields = d.changed[0]
    assert "send_at" in fields and new["send_at"] - old["send_at"] == HOUR_MS
    assert d.unchanged == 3
    # production topics untouched by the replays
    assert len(read_topic(kafka, settings.topics.name("commands"), idle_s=0.5)) == 5


def test_a_replay_never_targets_the_production_prefix(settings):
    with pytest.raises(ReplayError, match="must differ"):
        replay_settings(settings, settings.topics.prefix)


def test_diff_reports_added_removed_and_changed_by_command_id():
    a = {"command_id": "1", "send_at": 1}
    b = {"command_id": "2", "send_at": 2}
    c = {"command_id": "3", "send_at": 3}
    d = diff_commands([a, b], [dict(b, send_at=20), c])
    assert d.added == [c] and d.removed == [a] and d.changed == [(b, dict(b, send_at=20), ["send_at"])]


@pytest.mark.integration
def test_a_fact_that_reached_production_late_is_named_as_the_cause_and_arrival_order_replays_it_identically(
        kafka, settings, tmp_path):
    """Production kept up: its clock had fired the cart's first mail when an order placed 20 s after the cart
    arrived 91 s late. An event-time replay applies the order before that tick and names the late order as
    the cause of the difference; an arrival-order replay applies it late, as production did."""
    from streams.cli.replay import _diff_doc
    from streams.kafka.partitioning import partition_for
    from streams.tools.simulate import simulate
    from tests.core_events import T0 as C0, cart, customer, order, tick
    from tests.test_explain_production import _late_settings, _produce, TICK_MS
    from tests.test_simulate import write_jsonl

    s = _late_settings(settings)
    cid = "late-replayed"
    p = partition_for(cid, s.topics.partitions)
    facts = [customer(cid, at=C0 - 120_000), cart(cid, C0)]
    ticks = [tick(C0 + n * TICK_MS, p) for n in range(1, 60)]
    late_order = order(cid, C0 + 20_000, order_id="o-late")
    path = tmp_path / "kept-up.jsonl"  # the order in which a worker that kept up took the records
    before = [t for t in ticks if t[1]["tick_at"] < C0 + 111_000]  # the ticks produced before the order arrived
    write_jsonl(path, [*facts, *before, late_order, *ticks[len(before):]], s)
    emitted = simulate(path.read_text().splitlines(), s).commands
    assert sorted((c["flow"], c["step"]) for c in emitted) == [("abandoned_cart", 1), ("order_confirmation", 1)]
    assert ensure_topics(kafka, topic_specs(s)).healthy
    _produce(kafka, s, [*((lt, r, r["occurred_at"] + 5) for lt, r in facts), *((lt, r, r["tick_at"]) for lt, r in ticks),
                        ("orders", late_order[1], C0 + 111_000), *(("commands", c, c["created_at"]) for c in emitted)])

    by_event_time = run_replay(s, kafka, s.topics.prefix + "late-e.", TimeRange())
    removed = [(c["flow"], c["step"]) for c in by_event_time.diff.removed]
    assert removed == [("abandoned_cart", 1)] and not by_event_time.diff.added
    cause = by_event_time.likely_cause(by_event_time.diff.removed[0])
    assert cause.startswith("late fact: orders placed at ") and "(late by 1 min 30 s)" in cause
    assert "this replay applied it in event-time order, production (keeping up) as it arrived" in cause
    doc = _diff_doc(by_event_time)
    assert doc["order"] == "event_time" and doc["removed"][0]["likely_cause"] == cause
    [late] = doc["removed"][0]["late_facts"]
    assert (late["topic"], late["offset"], late["arrived_at_ms"], late["late_by_ms"]) == \
        (s.topics.name("orders"), 0, C0 + 111_000, 90_000)
    assert doc["late_facts"] == {cid: [late]} and doc["arrival_unknown"] == {}

    by_arrival = run_replay(s, kafka, s.topics.prefix + "late-a.", TimeRange(), order="arrival")
    assert by_arrival.diff.identical, by_arrival.diff.summary()


def test_with_another_config_a_customer_with_a_late_or_unstamped_fact_is_not_explained_away():
    """A difference of a customer with a late fact (or records whose arrival is unknown) may come from the
    order or from the config: the words say both, never only "late"."""
    from streams.tools.arrival import Arrived, LateArrival
    from streams.tools.replay import CommandDiff, ReplayResult

    fact = Arrived("orders", 0, 7, "c1", T0, T0 + 91_000, "placed", "shop.orders")
    same = ReplayResult({}, [], CommandDiff(), "r.", late={"c1": [LateArrival(fact, T0 + 91_000, T0 + 90_000)]},
                        unknown_arrival={"c2": 3})
    other = ReplayResult({}, [], CommandDiff(), "r.", late=same.late, unknown_arrival=same.unknown_arrival,
                         other_config=True)
    assert same.likely_cause({"customer_id": "c1"}).startswith("late fact: orders placed at 2026-11-02 09:00:00 +00:00 "
                                                               "was produced at 2026-11-02 09:01:31 +00:00")
    assert same.likely_cause({"customer_id": "c2"}).startswith("arrival unknown: 3 record(s) of the customer")
    assert other.likely_cause({"customer_id": "c1"}).startswith("may not come from the config — late fact")
    assert same.likely_cause({"customer_id": "c3"}) == "" and same.causes({"customer_id": "c3"}) == {}
    assert same.causes({"customer_id": "c2"}) == {"arrival_unknown": 3}


def test_a_difference_says_when_the_range_cut_off_the_customers_history_or_the_clock_that_made_a_fact_late():
    from streams.tools.arrival import Arrived, LateArrival
    from streams.tools.replay import CommandDiff, ReplayResult

    fact = Arrived("orders", 0, 7, "c1", T0, T0 + 91_000, "placed", "shop.orders")
    result = ReplayResult({}, [], CommandDiff(), "r.", late={"c1": [LateArrival(fact, T0 + 91_000, T0 + 90_000)]},
                          window=TimeRange(T0 - HOUR_MS, T0 + 60_000), before={"c1": 4})
    words = result.likely_cause({"customer_id": "c1"})
    assert words.startswith("range start: 4 earlier record(s) of the customer lie before --from")
    assert "the clock records that made it late lie past --to" in words and "extend --to" in words
    causes = result.causes({"customer_id": "c1"})
    assert causes["records_before_range"] == 4 and causes["late_facts"][0]["clock_past_range"] is True


def test_a_production_mail_the_replays_clock_cannot_reach_says_to_extend_the_range_and_not_that_the_config_dropped_it():
    """Production fired a timer on clock records after --to (or on live ticks a generated history lacks): the
    replay's clock stops at the latest copied event time of the partition, so it cannot fire it."""
    from streams.kafka.partitioning import partition_for
    from streams.tools.replay import CommandDiff, ReplayResult

    p = partition_for("c1", 3)
    removed = {"command_id": "k1", "customer_id": "c1", "created_at": T0 + 50 * MINUTE_MS}
    early = {"command_id": "k2", "customer_id": "c1", "created_at": T0 - HOUR_MS}
    diff = CommandDiff(removed=[removed, early])
    result = ReplayResult({}, [], diff, "r.", other_config=True, reach={p: T0 + HOUR_MS},
                          grace_ms=30 * MINUTE_MS, partitions=3)
    words = result.likely_cause(removed)
    assert words.startswith("may not come from the config — range end: production fired it on clock records the "
                            "replay does not have") and words.endswith("extend --to")
    assert result.causes(removed) == {"fired_past_replay_clock": True}
    assert result.likely_cause(early) == ""  # within the replay's clock: a config's difference, said as none
    assert result.remedies([removed]) == ["a later --to gives the replay the clock records production had"]
