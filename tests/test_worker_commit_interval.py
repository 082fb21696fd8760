"""A transaction under backlog holds at most ``worker.batch_size`` records and ends once its records have
taken ``worker.commit_interval_ms`` to process (Kafka Streams' ``commit.interval.ms`` under exactly-once),
so a command waits for its transaction's commit at most about that long, whatever the batch size. Each
transaction's changelog marker says where its partition's commands end, though only the partition's last
command of the transaction asks for a delivery report."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Producer

from schemas import serde
from streams.config import Settings, WorkerSettings
from streams.kafka.io import producer_config, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from streams.runtime.restore import RUNTIME_KEY
from streams.runtime.worker import COMMIT_CHECK_RECORDS
from tests.support.runtime import running_processor

BACKLOG = 3000


class _TransactionSizes:
    """An observer of the runtime: the records of each committed transaction."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_batch(self, runtime: Any, by_topic: dict[str, int] | None = None) -> None:
        self.sizes.append(sum((by_topic or {}).values()))

    def on_dead_letter(self, topic: str) -> None:
        raise AssertionError(f"a dead letter from {topic}: every record here is valid")


def _transactions_over_a_backlog(kafka: str, settings: Settings) -> tuple[list[int], str]:
    """The records of each transaction over a backlog of orders, and the worker's changelog topic."""
    settings.worker.tick_interval_s = 0
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    producer = Producer(producer_config(settings, kafka))
    at = int(time.time() * 1000)
    for i in range(BACKLOG):
        cid = f"c{i}"
        order = {"event_id": f"{cid}-o1", "customer_id": cid, "occurred_at": at + i, "type": "placed",
                 "order_id": f"{cid}-order-1", "email": f"{cid}@example.com", "total": "9.00", "currency": "EUR",
                 "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]}
        producer.produce(settings.topics.name("orders"), key=cid.encode(),
                         value=serde.encode("OrderEvent", serde.from_json("OrderEvent", order)))
    producer.flush(30)
    observed = _TransactionSizes()
    with running_processor(settings, kafka, observer=observed) as runtime:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and runtime.stats.events < BACKLOG:
            time.sleep(0.1)
        assert runtime.stats.events == BACKLOG
        changelog = runtime.changelog
    return observed.sizes, changelog


def test_the_default_transaction_is_kafka_streams_exactly_once_commit_interval() -> None:
    assert WorkerSettings().commit_interval_ms == 100
    assert WorkerSettings().batch_size == 2000


def test_a_transaction_under_backlog_ends_once_its_records_have_taken_the_commit_interval(kafka, settings) -> None:
    settings.worker.batch_size = 2000
    settings.worker.commit_interval_ms = 1  # less than any chunk of records takes
    sizes, changelog = _transactions_over_a_backlog(kafka, settings)
    assert sum(sizes) == BACKLOG
    assert max(sizes) <= COMMIT_CHECK_RECORDS  # one chunk, then the clock ends the transaction

    # every order confirmed, and each partition's last marker is one past its last command
    commands = read_topic(kafka, settings.topics.name("commands"), idle_s=0.5, timeout_s=30)
    assert len(commands) == BACKLOG
    command_end = {}
    for r in commands:
        command_end[r.partition] = max(command_end.get(r.partition, 0), r.offset + 1)
    markers = {r.partition: int(r.value) for r in read_topic(kafka, changelog, idle_s=0.5, timeout_s=30)
               if r.key == RUNTIME_KEY.encode()}  # the last per partition (read in order)
    assert len(sizes) > settings.topics.partitions  # several transactions in each partition
    assert markers == command_end


def test_without_a_commit_interval_a_transaction_under_backlog_takes_up_to_batch_size_records(kafka, settings) -> None:
    settings.worker.batch_size = 2000
    settings.worker.commit_interval_ms = 0
    sizes, _ = _transactions_over_a_backlog(kafka, settings)
    assert sum(sizes) == BACKLOG
    assert COMMIT_CHECK_RECORDS < max(sizes) <= 2000
