"""Start shopmail CLI commands as real subprocesses for crash/restart tests."""

from __future__ import annotations

import os
import time

from streams.config import Settings
from streams.tools.cli_process import CliProcess  # noqa: F401 - the tests' handle on a CLI child
from streams.kafka.io import ConsumedRecord


def settings_env(settings: Settings, bootstrap: str, **extra: str) -> dict[str, str]:
    """Environment that makes a subprocess use the same settings as the test."""
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SHOPMAIL_TOPICS__PREFIX": settings.topics.prefix,
        "SHOPMAIL_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "SHOPMAIL_WORKER__APP_ID": settings.worker.app_id,
        "SHOPMAIL_WORKER__STORE": settings.worker.store,
        "SHOPMAIL_WORKER__TICK_INTERVAL_S": str(settings.worker.tick_interval_s),
        "SHOPMAIL_WORKER__WEB_PORT": "0",
        "SHOPMAIL_SINK__GROUP_ID": settings.sink.group_id,
        "SHOPMAIL_SINK__WEB_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def high_watermark_total(bootstrap: str, topic: str) -> int:
    """Sum of high watermarks (records written, committed or not) — a cheap progress probe."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "shopmail-probe"})
    try:
        md = c.list_topics(topic, timeout=5)
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in md.topics[topic].partitions)
    finally:
        c.close()


class TopicTail:
    """Reads a topic from the beginning once, then only what is new (read_committed, no consumer group).

    Waiting for a large topic to fill up by re-reading it whole every poll costs a full read per poll (and
    the CPU the workers under test need); a tail reads each record once and says at once when enough came.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.records: list[ConsumedRecord] = []
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": "shopmail-tail", "enable.auto.commit": False,
                            "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        md = self._c.list_topics(topic, timeout=10)
        assert topic in md.topics and md.topics[topic].error is None, f"no topic {topic}"
        self._c.assign([TopicPartition(topic, p, 0) for p in sorted(md.topics[topic].partitions)])

    def _read(self, window_s: float) -> int:
        from confluent_kafka import KafkaError

        new = 0
        for m in self._c.consume(1000, window_s):
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(str(m.error()))
                continue
            self.records.append(ConsumedRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                               m.timestamp()[1]))
            new += 1
        return new

    def until_count(self, n: int, timeout_s: float, what: str) -> list[ConsumedRecord]:
        """Every record once at least ``n`` were read; AssertionError at ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while len(self.records) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what} ({len(self.records)} of {n})")
            self._read(0.2)
        return self.records

    def settle(self, idle_s: float, timeout_s: float = 30) -> list[ConsumedRecord]:
        """Keep reading until nothing new came for ``idle_s`` (late duplicates would show up here)."""
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_s:
            if self._read(0.2):
                last_new = time.monotonic()
        return self.records

    def close(self) -> None:
        self._c.close()


def read_until_settled(bootstrap: str, topic: str, n: int, timeout_s: float, what: str,
                       idle_s: float = 2.0) -> list[ConsumedRecord]:
    """Every record of ``topic`` once ``n`` arrived and then nothing new for ``idle_s`` (so a duplicate
    committed late is still counted)."""
    tail = TopicTail(bootstrap, topic)
    try:
        tail.until_count(n, timeout_s, what)
        return tail.settle(idle_s)
    finally:
        tail.close()
