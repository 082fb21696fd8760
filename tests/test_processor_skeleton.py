"""Walking skeleton and dead letters through the real broker (in-process processor runtime)."""

from __future__ import annotations

import io
import json
import time

import fastavro
import pytest
from confluent_kafka import Producer

from schemas import serde
from streams.kafka.io import produce_records, producer_config, read_topic
from tests.support.runtime import running_processor

pytestmark = pytest.mark.integration


def order(event_id: str, customer: str = "cust-1", **extra: object) -> dict:
    base = {"event_id": event_id, "customer_id": customer, "occurred_at": int(time.time() * 1000),
            "type": "placed", "order_id": f"o-{event_id}", "email": f"{customer}@example.com",
            "items": [{"sku": "SKU-1", "name": "Blue Mug", "price": "12.50", "quantity": 2}],
            "total": "25.00", "currency": "EUR"}
    base.update(extra)
    return serde.from_json("OrderEvent", base)


def test_order_placed_becomes_an_order_confirmation_command(kafka, settings):
    with running_processor(settings, kafka):
        produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("e1")])
        got = read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=20)
    assert len(got) == 1
    decoded = got[0].decoded()
    assert decoded.name == "EmailCommand"
    cmd = decoded.record
    assert cmd["flow"] == "order_confirmation" and cmd["category"] == "transactional"
    assert cmd["to"] == "cust-1@example.com" and got[0].key == b"cust-1"
    assert "Blue Mug" in json.loads(cmd["context"])["items"][0]["name"]


def test_bad_values_go_to_the_dlq_with_the_reason_and_processing_goes_on(kafka, settings):
    orders = settings.topics.name("orders")
    # an old producer on OrderEvent v0 that left the now-required order_id out
    v0 = next(e for e in serde.registry().by_fingerprint.values() if e.path.name == "OrderEvent.v0.avsc")
    buf = io.BytesIO()
    rec_v0 = {k: v for k, v in order("v0").items() if k != "attributed_command_id"} | {"order_id": None}
    fastavro.schemaless_writer(buf, v0.parsed, rec_v0)
    missing_field = serde.MAGIC + v0.fingerprint_bytes + buf.getvalue()
    unknown_fp = serde.MAGIC + (12345).to_bytes(8, "little") + b"\x02ab"
    garbage = b"\xffnot avro at all"  # neither framing
    with running_processor(settings, kafka):
        p = Producer(producer_config(settings, kafka))
        for value in (garbage, missing_field, unknown_fp):
            p.produce(orders, key=b"cust-1", value=value)
        p.flush(10)
        produce_records(settings, kafka, orders, "OrderEvent", [order("after-the-bad-ones")])
        commands = read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=20)
        dlq = read_topic(kafka, settings.topics.dlq("orders"), expect=3, timeout_s=20)
    assert [c.decoded().record["trigger_event_id"] for c in commands] == ["after-the-bad-ones"]
    letters = [d.decoded().record for d in dlq]
    assert [dl["error"] for dl in letters] == ["unknown_framing", "invalid", "unknown_fingerprint"]
    assert [dl["original_value"] for dl in letters] == [garbage, missing_field, unknown_fp]
    assert all(dl["topic"] == orders and dl["partition"] == dlq[0].decoded().record["partition"] for dl in letters)
    assert "required field(s) order_id missing or null" in letters[1]["detail"]
    assert [dl["offset"] for dl in letters] == sorted(dl["offset"] for dl in letters)


def test_worker_recovers_engine_state_from_the_changelog(kafka, settings):
    # the same event delivered again after a restart is recognised as a duplicate (state survived)
    with running_processor(settings, kafka):
        produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("dup-1")])
        assert len(read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=20)) == 1
    with running_processor(settings, kafka, instance_id="test-1") as runtime:
        produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("dup-1"), order("new-2")])
        got = read_topic(kafka, settings.topics.name("commands"), expect=2, timeout_s=20)
        assert runtime.stats.recoveries >= 1
    assert sorted(c.decoded().record["trigger_event_id"] for c in got) == ["dup-1", "new-2"]


def test_rocksdict_store_restores_from_local_disk_and_reads_only_the_changelog_tail(kafka, settings, tmp_path):
    settings.worker.store = "rocksdict://"
    settings.worker.data_dir = str(tmp_path / "state")
    settings.worker.tick_interval_s = 0
    orders = settings.topics.name("orders")
    with running_processor(settings, kafka) as first:
        produce_records(settings, kafka, orders, "OrderEvent", [order(f"r-{i}", customer=f"c{i}") for i in range(20)])
        assert len(read_topic(kafka, settings.topics.name("commands"), expect=20, timeout_s=20)) == 20
        assert first.stats.restored_local_keys == 0
    assert (tmp_path / "state" / settings.worker.app_id).is_dir()
    with running_processor(settings, kafka, instance_id="test-1") as second:
        produce_records(settings, kafka, orders, "OrderEvent", [order("r-3", customer="c3"), order("r-new", customer="c3")])
        got = read_topic(kafka, settings.topics.name("commands"), expect=21, timeout_s=20)
        assert second.stats.restored_local_keys > 0
        assert second.stats.restored_changelog_records == 0  # everything came from the local store
    assert sorted(c.decoded().record["trigger_event_id"] for c in got)[-1] == "r-new"
    assert len(got) == 21  # the duplicate r-3 was recognised from locally restored state
