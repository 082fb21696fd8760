"""explain from the topics: the order the worker applied records in, and what production emitted (real broker)."""

from __future__ import annotations

from pathlib import Path

from streams.config import DAY_MS, Settings
from streams.kafka.partitioning import partition_for
from streams.tools.simulate import simulate
from tests.core_events import T0, cart, customer, order, tick
from tests.test_simulate import write_jsonl

STEP_1_MS = 60_000  # the cart's first mail one minute after the cart
GRACE_MS = 30_000
TICK_MS = 2_000


def _late_settings(s: Settings) -> Settings:
    s.worker.late_grace_ms = GRACE_MS
    s.flows.abandoned_cart.delays_ms = [STEP_1_MS, DAY_MS, 3 * DAY_MS]
    return s


def _two_customers(s: Settings) -> tuple[str, str]:
    """Two customers in different partitions (each partition has its own clock)."""
    first = "late-a"
    other = next(f"late-b{i}" for i in range(100)
                 if partition_for(f"late-b{i}", s.topics.partitions) != partition_for(first, s.topics.partitions))
    return first, other


def _produce(kafka: str, s: Settings, records: list[tuple[str, dict, int]]) -> None:
    """Each record with the Kafka timestamp given, keyed by customer (ticks into the partition they name)."""
    from confluent_kafka import Producer

    from schemas import serde
    from streams.kafka.io import producer_config
    from streams.kafka.topics import VALUE_SCHEMA

    producer = Producer(producer_config(s, kafka))
    for logical, rec, ts in records:
        topic = s.topics.name(logical)
        value = serde.encode(VALUE_SCHEMA[logical], rec, topic)
        cid = rec.get("customer_id", "")
        p = rec["partition"] if logical == "clock" else partition_for(cid, s.topics.partitions)
        producer.produce(topic, key=(cid or "tick").encode(), value=value, partition=p, timestamp=ts)
    assert producer.flush(30) == 0


def test_a_late_order_is_applied_after_the_clock_records_that_preceded_it_and_production_is_shown(
        kafka, settings, tmp_path: Path):
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.tools.explain import explain_topics

    s = _late_settings(settings)
    known, unknown = _two_customers(s)
    facts = [customer(known, at=T0 - 120_000), cart(known, T0), customer(unknown, at=T0 - 120_000), cart(unknown, T0)]
    ticks = [tick(T0 + n * TICK_MS, partition_for(cid, s.topics.partitions))
             for n in range(1, 60) for cid in (known, unknown)]
    known_order = order(known, T0 + 20_000, order_id="o-known")
    unknown_order = order(unknown, T0 + 20_000, order_id="o-unknown")
    # what the worker did: it ticked past the cart's first step before the orders reached it
    path = tmp_path / "worker.jsonl"
    write_jsonl(path, [*facts, *ticks, known_order, unknown_order], s)
    emitted = simulate(path.read_text().splitlines(), s).commands
    assert sorted((c["customer_id"], c["flow"], c["step"]) for c in emitted) == sorted(
        (cid, flow, 1) for cid in (known, unknown) for flow in ("abandoned_cart", "order_confirmation"))
    assert ensure_topics(kafka, topic_specs(s)).healthy
    _produce(kafka, s, [*((lt, r, r["occurred_at"] + 5) for lt, r in facts),
                        *((lt, r, r["tick_at"]) for lt, r in ticks),
                        ("orders", known_order[1], T0 + 111_000),  # produced 91 s after the order, 111 s after the cart
                        ("orders", unknown_order[1], T0 + 20_000),  # stamped with its event time: arrival unknown
                        *(("commands", c, c["created_at"]) for c in emitted)])

    ex = explain_topics(s, kafka, known, quiet=True)
    placed = next(r.text for r in ex.rows if r.kind == "fact" and "orders placed" in r.text)
    assert "late by 1 min 30 s: applied at once" in placed and "on time" not in placed  # the clock stood at +110 s
    kinds = [(r.kind, r.data.get("flow")) for r in ex.rows if r.kind in ("fired", "ended") or r is _row(ex, placed)]
    assert kinds.index(("fired", "abandoned_cart")) < kinds.index(("fact", None)), \
        "the late order stands after the mail the clock had already fired, as the engine took them"
    fired = [r.data["command_id"] for r in ex.rows if r.kind == "fired"]
    known_cmd = next(c for c in emitted if c["customer_id"] == known and c["flow"] == "abandoned_cart")
    assert sorted(fired) == sorted(c["command_id"] for c in emitted if c["customer_id"] == known)
    production = [r.text for r in ex.rows if r.kind == "production"]
    assert len(production) == 2 and \
        f"production emitted abandoned_cart step 1 for {_when(known_cmd['send_at'], ex)} [{known_cmd['command_id']}] " \
        f"({s.topics.name('commands')}[{ex.partition}] offset 0)" in production
    assert not [r for r in ex.rows if r.kind == "differs"]
    for i, r in enumerate(ex.rows):  # production's command stands with the rebuilt run's, not at its own time
        if r.kind == "production":
            j = next(j for j, t in enumerate(ex.rows) if t.kind == "fired" and t.data["command_id"] == r.data["command_id"])
            assert j < i and all(t.position == r.position for t in ex.rows[j:i + 1])

    ex = explain_topics(s, kafka, unknown, quiet=True)
    placed = next(r.text for r in ex.rows if r.kind == "fact" and "orders placed" in r.text)
    assert "arrival order unknown" in placed and "on time" not in placed
    fact = next(f for f in ex.as_json()["timeline"] if f["kind"] == "fact" and f["text"] == placed)
    assert fact["status"] == "arrival_unknown", "the JSON says what the table says"
    assert [r.data["flow"] for r in ex.rows if r.kind == "fired"] == ["order_confirmation"]
    unknown_cmd = next(c for c in emitted if c["customer_id"] == unknown and c["flow"] == "abandoned_cart")
    differs = [r.text for r in ex.rows if r.kind == "differs"]
    assert differs == [f"in production but not here: abandoned_cart step 1 [{unknown_cmd['command_id']}] — likely "
                       f"cause: the arrival order of 1 record(s) of the customer is unknown (their Kafka timestamp is "
                       f"their event time: orders placed ({s.topics.name('orders')}[{ex.partition}] offset 0)): the "
                       f"worker may have applied them after clock records that had passed them"]


def _row(ex, text: str):
    return next(r for r in ex.rows if r.text == text)


def _when(ms: int, ex) -> str:
    from streams.tools.explain import when

    return when(ms, ex.zone)


def test_records_are_taken_in_arrival_order_with_the_smallest_event_time_first_among_those_that_had_arrived():
    from streams.tools.explain import Fact, arrival_order

    def fact(logical: str, offset: int, at: int, ts: int | None) -> Fact:
        record = {"tick_at": at} if logical == "clock" else {"occurred_at": at, "event_id": f"{logical}{offset}"}
        return Fact(logical, logical, 0, offset, record, timestamp=ts)

    ticks = [fact("clock", n, T0 + n * TICK_MS, T0 + n * TICK_MS) for n in range(1, 6)]
    late = fact("orders", 0, T0 + 1_000, T0 + 7_000)  # produced after the ticks of +2 s, +4 s and +6 s
    early_cart = fact("carts", 0, T0 + 500, T0 + 9_000)  # offset order holds within a topic partition
    next_cart = fact("carts", 1, T0 + 3_000, T0 + 9_000)
    stamped = fact("shipments", 0, T0 + 4_500, T0 + 4_500)  # stamped with its event time: taken at it
    order = [(f.logical, f.offset) for f in arrival_order([*ticks, late, early_cart, next_cart, stamped])]
    assert order == [("clock", 1), ("clock", 2), ("shipments", 0), ("clock", 3), ("orders", 0), ("clock", 4),
                     ("carts", 0), ("carts", 1), ("clock", 5)]


def test_a_mail_the_rebuilt_run_sent_and_production_did_not_is_one_line_naming_the_late_record():
    from streams.config import load_settings
    from streams.tools.explain import Fact, _explain_read

    s = _late_settings(load_settings(env={}))
    s.topics.partitions = 2
    p = partition_for("lou", s.topics.partitions)
    events = [(customer("lou", at=T0 - 120_000), T0 - 119_000), (cart("lou", T0), T0 + 1_000),
              *((tick(T0 + n * TICK_MS, p), T0 + n * TICK_MS) for n in range(1, 60)),
              (order("lou", T0 + 20_000, order_id="o-lou"), T0 + 111_000)]
    offsets: dict[str, int] = {}
    facts = []
    for (logical, record), ts in events:
        offsets[logical] = offsets.get(logical, -1) + 1
        facts.append(Fact(logical, s.topics.name(logical), p, offsets[logical], record, timestamp=ts))
    ex = _explain_read(s, "lou", facts, [], "topics", commands=[])  # production emitted nothing for lou
    cart_mail = next(r for r in ex.rows if r.kind == "fired" and r.data["flow"] == "abandoned_cart")
    differs = [r.text for r in ex.rows if r.kind == "differs" and r.data["command_id"] == cart_mail.data["command_id"]]
    assert differs == [
        f"fired here but not in production: abandoned_cart step 1 [{cart_mail.data['command_id']}] — likely cause: a "
        f"record produced after the clock had passed it: orders placed at 2026-11-06 09:00:20 +00:00 was produced at "
        f"2026-11-06 09:01:51 +00:00, when the clock records stood at 2026-11-06 09:01:50 +00:00 (late by 1 min 30 s) "
        f"({s.topics.name('orders')}[{p}] offset 0)"]
