"""One bad record never stops a worker partition: oversized, mis-keyed or unreadable input is
dead-lettered with its reason, oversized text is clamped, and the records around it are processed.
Through the real broker, with the real worker runtime (and a restart after the bad records)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from schemas import serde
from streams.kafka.io import producer_config, read_topic
from streams.runtime.limits import admit, clamp, dead_letter_value, fits
from streams.config import LimitSettings
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.runtime import running_processor

pytestmark = pytest.mark.integration


def _order(cid: str, n: int, at: int, **extra: object) -> dict:
    rec = {"event_id": f"{cid}-o{n}", "customer_id": cid, "occurred_at": at, "type": "placed",
           "order_id": f"{cid}-order-{n}", "email": f"{cid}@example.com", "total": "9.00", "currency": "EUR",
           "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]}
    rec.update(extra)
    return serde.from_json("OrderEvent", rec)


def _produce(kafka: str, settings, topic: str, schema: str, rows: list[tuple[bytes | None, dict | bytes]]) -> None:
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    p = Producer(producer_config(settings, kafka, **{"message.max.bytes": 8_000_000}))
    for key, rec in rows:
        value = rec if isinstance(rec, bytes) else serde.encode(schema, rec)
        p.produce(settings.topics.name(topic), key=key, value=value)
    p.flush(30)


def _confirmed(kafka: str, settings) -> dict[str, dict]:
    cmds = (r.decoded().record for r in read_topic(kafka, settings.topics.name("commands"), idle_s=0.5, timeout_s=10))
    return {c["trigger_event_id"]: c for c in cmds if c["flow"] == "order_confirmation"}


def _dead(kafka: str, settings, topic: str) -> list[dict]:
    return [r.decoded().record for r in read_topic(kafka, settings.topics.dlq(topic), idle_s=0.5, timeout_s=10)]


def test_oversized_mis_keyed_and_garbage_records_are_dead_lettered_and_the_orders_after_them_confirmed(kafka, settings):
    settings.worker.tick_interval_s = 0
    at = int(time.time() * 1000)
    huge_name = "N" * 400_000
    five_mb = _order("big", 1, at, items=[{"sku": f"S{i}", "name": "x" * 500, "price": "1.00", "quantity": 1}
                                           for i in range(10_000)])
    rows = [
        (b"big", five_mb),                                           # 5 MB: too_large
        (b"ok-1", _order("ok-1", 1, at + 1)),
        (b"someone-else", _order("ok-2", 1, at + 2)),                # key differs from customer_id
        (b"", _order("", 1, at + 3)),                                # empty customer_id
        (b"ok-3", b"\xc3\x01not avro at all"),                       # unreadable
        (b"ok-3", b"\xc3\x01not avro at all"),                       # the same bad record again
        (b"long", _order("long", 1, at + 4, items=[{"sku": "MUG", "name": huge_name, "price": "9.00",
                                                     "quantity": 1}])),  # 400 KB name: clamped
        (b"ok-4", _order("ok-4", 1, at + 5)),
    ]
    _produce(kafka, settings, "orders", "OrderEvent", rows)
    with running_processor(settings, kafka) as runtime:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and runtime.stats.events < len(rows):
            time.sleep(0.2)
        assert runtime.stats.events == len(rows)
        assert runtime.stats.clamped == 1
    confirmed = _confirmed(kafka, settings)
    assert set(confirmed) == {"ok-1-o1", "long-o1", "ok-4-o1"}
    long_items = confirmed["long-o1"]["context"]
    assert huge_name not in long_items and "N" * settings.limits.max_name_chars in long_items
    dead = _dead(kafka, settings, "orders")
    assert sorted(d["error"] for d in dead) == ["invalid_key", "key_mismatch", "too_large",
                                                "unknown_fingerprint", "unknown_fingerprint"]
    big = next(d for d in dead if d["error"] == "too_large")
    assert len(big["original_value"]) == settings.limits.dead_letter_value_bytes
    assert "cut to the first" in big["detail"] and big["offset"] == 0
    assert len(dead) == 5 and all(d["detail"] for d in dead)

    # a restart after the bad records neither re-reads them nor stops on them
    _produce(kafka, settings, "orders", "OrderEvent", [(b"ok-5", _order("ok-5", 1, at + 6))])
    with running_processor(settings, kafka, instance_id="test-1") as runtime:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "ok-5-o1" not in _confirmed(kafka, settings):
            time.sleep(0.3)
        assert runtime.stats.dead_letters == 0
    assert "ok-5-o1" in _confirmed(kafka, settings)
    assert len(_dead(kafka, settings, "orders")) == 5


def test_a_record_within_the_limits_is_admitted_unchanged() -> None:
    limits = LimitSettings()
    rec = {"customer_id": "c1", "event_id": "e1", "first_name": "Ann", "email": "a@example.com",
           "items": [{"sku": "S", "name": "Mug", "url": "https://shop.example/m"}]}
    before = repr(rec)
    assert admit(limits, "customers", b"c1", 100, rec) is None
    assert clamp(limits, rec) is False and repr(rec) == before


def test_limits_cut_names_drop_overlong_urls_and_addresses_and_cap_items() -> None:
    limits = LimitSettings(max_name_chars=5, max_text_chars=8, max_url_chars=20, max_items=2)
    rec = {"customer_id": "c1", "first_name": "Annabelle", "carrier": "Very Long Carrier",
           "email": "a" * 250 + "@x.com", "cart_url": "https://shop.example/" + "c" * 30,
           "items": [{"sku": "S1", "name": "Mugmugmug"}, {"sku": "S2", "name": "Cup"}, {"sku": "S3", "name": "Pot"}]}
    assert clamp(limits, rec) is True
    assert rec["first_name"] == "Annab" and rec["carrier"] == "Very Lon"
    assert rec["email"] is None and rec["cart_url"] is None
    assert [i["sku"] for i in rec["items"]] == ["S1", "S2"] and rec["items"][0]["name"] == "Mugmu"


def test_ids_are_never_cut_but_refused_and_keys_must_match_the_customer() -> None:
    limits = LimitSettings(max_id_chars=10)
    assert admit(limits, "orders", b"c1", 10, {"customer_id": "c1", "order_id": "o" * 11}).reason == "invalid"
    assert admit(limits, "orders", b"c2", 10, {"customer_id": "c1"}).reason == "key_mismatch"
    assert admit(limits, "orders", b"", 10, {"customer_id": " "}).reason == "invalid_key"
    assert admit(limits, "clock", b"clock-0", 10, {"tick_at": 1}) is None
    assert admit(limits, "orders", None, limits.max_record_bytes + 1, None).reason == "too_large"


def test_outputs_over_max_message_bytes_do_not_fit_and_dead_letters_carry_a_cut_original() -> None:
    limits = LimitSettings(max_message_bytes=1000, record_overhead_bytes=100, dead_letter_value_bytes=10)
    assert fits(limits, b"k", b"v" * 899) and not fits(limits, b"k", b"v" * 900)
    value, note = dead_letter_value(limits, b"x" * 25)
    assert value == b"x" * 10 and "10 of 25 bytes" in note
    assert dead_letter_value(limits, b"short") == (b"short", "")


def test_restart_restores_every_customer_from_a_changelog_written_in_multi_record_batches(kafka, settings):
    """Restore reads the changelog to the end the fetch reports (streams/kafka/log_reader.py)."""
    settings.worker.tick_interval_s = 0
    settings.worker.batch_size = 2000
    n = 12_000
    at = int(time.time() * 1000)
    rows = [(f"c{i}".encode(), _order(f"c{i}", 1, at + i)) for i in range(n)]
    _produce(kafka, settings, "orders", "OrderEvent", rows)
    with running_processor(settings, kafka) as runtime:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and runtime.stats.events < n:
            time.sleep(0.2)
        assert runtime.stats.events == n
    with running_processor(settings, kafka, instance_id="test-1") as restored:
        customers = {cid for engine in restored.engines.values() for cid in engine.customers}
        assert len(customers) == n
        assert restored.stats.restored_changelog_records >= n


def test_reading_to_the_end_gets_every_record_of_a_partition_written_in_large_batches(kafka, settings):
    """A ListOffsets high watermark can under-report the end of a partition written in multi-record
    batches (the embedded broker answers the last batch's base offset); reading to the end the fetch
    reports gets every record."""
    from confluent_kafka import Consumer, TopicPartition

    from streams.kafka.log_reader import EOF_CONFIG, read_to_end

    topic = settings.topics.name("customers")
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    p = Producer(producer_config(settings, kafka, **{"linger.ms": 50, "batch.num.messages": 5000}))
    n = 10_000
    for i in range(n):
        p.produce(topic, partition=0, key=b"k%d" % i, value=b"v" * 100)
    p.flush(30)
    reader = Consumer({"bootstrap.servers": kafka, "group.id": "end-probe", "auto.offset.reset": "earliest",
                       "enable.auto.commit": False, **EOF_CONFIG})
    try:
        seen: list[int] = []
        ends = read_to_end(reader, [TopicPartition(topic, 0, 0)], lambda m: seen.append(m.offset()), 30, "probe")
    finally:
        reader.close()
    assert len(seen) == n and ends[(topic, 0)] == n
