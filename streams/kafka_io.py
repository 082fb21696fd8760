"""Small confluent-kafka helpers shared by the processors, the sink, the CLI and the tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from schemas import serde
from streams.config import Settings


def producer_config(settings: Settings, bootstrap: str, **extra: Any) -> dict[str, Any]:
    # murmur2 = the Java client's default partitioner, so every producer (and `simulate`) agrees on
    # which partition a customer's events live in.
    cfg: dict[str, Any] = {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                           "client.id": settings.kafka.client_id, "linger.ms": 5}
    cfg.update(extra)
    return cfg


def consumer_config(settings: Settings, bootstrap: str, group_id: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": bootstrap, "group.id": group_id, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "isolation.level": "read_committed",
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka.heartbeat_interval_ms,
        "partition.assignment.strategy": "range", "client.id": settings.kafka.client_id,
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
    }
    cfg.update(extra)
    return cfg


def produce_records(settings: Settings, bootstrap: str, topic: str, schema: str,
                    records: Iterable[dict[str, Any]], key_field: str = "customer_id") -> int:
    """Encode and produce records (keyed by ``key_field``); returns the count. Flushes."""
    p = Producer(producer_config(settings, bootstrap))
    n = 0
    for rec in records:
        p.produce(topic, key=str(rec[key_field]).encode(), value=serde.encode(schema, rec))
        n += 1
        if n % 10000 == 0:
            p.poll(0)
    p.flush(30)
    return n


@dataclass
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    def decoded(self) -> serde.Decoded:
        return serde.decode(self.value)


def read_topic(bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 30.0,
               idle_s: float = 1.0, read_committed: bool = True) -> list[ConsumedRecord]:
    """Read a whole topic from the beginning without a consumer group (assign + high watermarks).

    Returns when ``expect`` records were read, or when the end was reached and nothing new arrived for
    ``idle_s`` (when ``expect`` is None), or at ``timeout_s``.
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "shopmail-reader", "enable.auto.commit": False,
                  "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                  "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return []
        parts = sorted(md.topics[topic].partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[ConsumedRecord] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            msgs = c.consume(1000, 0.2)
            if msgs:
                for m in msgs:
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(str(m.error()))
                        continue
                    ts = m.timestamp()[1]
                    out.append(ConsumedRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), ts))
                last_new = time.monotonic()
            elif expect is None and time.monotonic() - last_new > idle_s:
                break
        return out
    finally:
        c.close()
