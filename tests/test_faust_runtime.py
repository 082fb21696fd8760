"""The faust-streaming adapter runs the same domain core through the real broker (at-least-once)."""

from __future__ import annotations

import time

import pytest

from streams.kafka.io import produce_records, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.procs import CliProcess, settings_env
from tests.test_processor_skeleton import order

pytestmark = pytest.mark.integration


def test_faust_runtime_turns_an_order_into_the_same_command_as_the_transactional_runtime(kafka, settings, tmp_path):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    placed = order("faust-1", customer="cust-f")
    produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [placed])
    env = settings_env(settings, kafka, SHOPMAIL_WORKER__DATA_DIR=str(tmp_path / "faust"))
    worker = CliProcess(["worker", "--runtime", "faust"], env, tmp_path / "faust.log")
    try:
        got = read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=60)
    finally:
        worker.terminate()
    assert len(got) == 1, worker.log()
    from streams.core.engine import PartitionEngine

    expected = PartitionEngine(settings, got[0].partition).process("orders", placed).commands
    assert [got[0].decoded().record] == expected


def _produce(kafka: str, settings, logical: str, rows: list[tuple[bytes, dict]], partition: int | None = None) -> None:
    from confluent_kafka import Producer

    from schemas import serde
    from streams.kafka.io import producer_config
    from streams.kafka.topics import VALUE_SCHEMA

    p = Producer(producer_config(settings, kafka))
    for key, rec in rows:
        kw = {} if partition is None else {"partition": partition}
        p.produce(settings.topics.name(logical), key=key, value=serde.encode(VALUE_SCHEMA[logical], rec), **kw)
    assert p.flush(30) == 0


def _dead_letters(kafka: str, settings, logical: str, expect: int) -> list[dict]:
    """The dead letters of one input topic, as the runtimes would agree on them (not when, nor by whom)."""
    got = read_topic(kafka, settings.topics.dlq(logical), expect=expect, timeout_s=90)
    out = []
    for r in got:
        d = dict(r.decoded().record)
        d.pop("failed_at")
        d.pop("component")
        d["topic"] = d["topic"].removeprefix(settings.topics.prefix)
        out.append(d)
    return out


def _restock_story(kafka: str, settings) -> tuple[list[dict], dict[str, list[dict]]]:
    """A customer whose cart held a sold-out mug, the mug restocked, the clock moved on; after each
    step an oversized record on the same topic-partition, whose dead letter shows the step was
    processed (records of one topic-partition are processed in order by both runtimes). Returns the
    commands and the dead letters per input topic."""
    from schemas import serde
    from streams.config import DAY_MS, HOUR_MS
    from streams.kafka.partitioning import partition_for
    from tests.core_events import ITEMS, T0, cart, customer

    cid = "bis-f"
    big = "x" * 4000  # over limits.max_record_bytes (3000) below
    _, profile = customer(cid, event_id="p-1")
    _, huge_profile = customer(cid, event_id="p-2")
    huge_profile = dict(huge_profile, first_name=big)
    _produce(kafka, settings, "customers", [(cid.encode(), profile), (cid.encode(), huge_profile)])
    dead = {"customers": _dead_letters(kafka, settings, "customers", 1)}
    _, sold_out = cart(cid, T0, items=[{**ITEMS[0], "stock": 0}], event_id="c-1")
    _, huge_cart = cart(cid, T0 + 1, event_id="c-2", cart_url="https://shop.example.com/" + big)
    _produce(kafka, settings, "carts", [(cid.encode(), sold_out), (cid.encode(), huge_cart)])
    dead["carts"] = _dead_letters(kafka, settings, "carts", 1)
    restock = T0 + 4 * DAY_MS
    restocked = serde.from_json("InventoryEvent", {"event_id": "inv-1", "sku": "MUG", "occurred_at": restock,
                                                   "type": "restocked", "quantity": 5, "name": "Enamel mug, blue"})
    huge_inventory = serde.from_json("InventoryEvent", {"event_id": "inv-2", "sku": "MUG", "occurred_at": restock,
                                                        "type": "price_changed", "name": big})
    _produce(kafka, settings, "inventory", [(b"MUG", restocked), (b"MUG", huge_inventory)])
    dead["inventory"] = _dead_letters(kafka, settings, "inventory", 1)
    p = partition_for(cid, settings.topics.partitions)
    _produce(kafka, settings, "clock", [(f"clock-{p}".encode(),
                                        {"partition": p, "tick_at": restock + HOUR_MS, "source": "test"})], partition=p)
    deadline = time.monotonic() + 90
    commands: list[dict] = []
    while not any(c["flow"] == "back_in_stock" for c in commands) and time.monotonic() < deadline:
        commands = [r.decoded().record for r in read_topic(kafka, settings.topics.name("commands"), idle_s=0.5,
                                                           timeout_s=10)]
    return sorted(commands, key=lambda c: c["command_id"]), dead


def test_faust_runtime_restocks_and_dead_letters_exactly_as_the_transactional_runtime(kafka, settings, tmp_path):
    """Both runtimes hand records to the same partition tasks: the restock reaches the waiting
    customer under faust too, and an oversized record is the same dead letter."""
    import copy

    from tests.support.runtime import running_processor

    settings.worker.tick_interval_s = 0  # the story's own clock ticks only
    settings.limits.max_record_bytes = 3000
    worker_settings = copy.deepcopy(settings)
    worker_settings.topics.prefix = settings.topics.prefix.rstrip(".") + "-txn."
    worker_settings.worker.app_id = settings.worker.app_id + "-txn"
    with running_processor(worker_settings, kafka):
        txn_commands, txn_dead = _restock_story(kafka, worker_settings)

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    env = settings_env(settings, kafka, SHOPMAIL_WORKER__DATA_DIR=str(tmp_path / "faust"),
                       SHOPMAIL_LIMITS__MAX_RECORD_BYTES="3000")
    worker = CliProcess(["worker", "--runtime", "faust"], env, tmp_path / "faust.log")
    try:
        faust_commands, faust_dead = _restock_story(kafka, settings)
    finally:
        worker.terminate()

    assert [c["flow"] for c in txn_commands].count("back_in_stock") == 1, txn_commands
    assert faust_commands == txn_commands, worker.log()
    assert faust_dead == txn_dead
    assert [d["error"] for d in faust_dead["customers"] + faust_dead["carts"] + faust_dead["inventory"]] == \
        ["too_large"] * 3
