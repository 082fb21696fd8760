"""A transaction under backlog holds at most ``worker.batch_size`` records and stops taking records once
``worker.commit_interval_ms`` has passed since the previous commit (Kafka Streams' ``commit.interval.ms``
under exactly-once), so the records of a transaction are gathered for about that long at most, whatever
the batch size. Each
transaction's changelog marker says where its partition's commands end, though only the partition's last
command of the transaction asks for a delivery report."""

from __future__ import annotations

import time
from typing import Any

import pytest

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


def _produce_orders(kafka: str, settings: Settings, n: int) -> None:
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    producer = Producer(producer_config(settings, kafka))
    at = int(time.time() * 1000)
    for i in range(n):
        cid = f"c{i}"
        order = {"event_id": f"{cid}-o1", "customer_id": cid, "occurred_at": at + i, "type": "placed",
                 "order_id": f"{cid}-order-1", "email": f"{cid}@example.com", "total": "9.00", "currency": "EUR",
                 "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]}
        producer.produce(settings.topics.name("orders"), key=cid.encode(),
                         value=serde.encode("OrderEvent", serde.from_json("OrderEvent", order)))
    producer.flush(30)


def _transactions_over_a_backlog(kafka: str, settings: Settings) -> tuple[list[int], str]:
    """The records of each transaction over a backlog of orders, and the worker's changelog topic."""
    settings.worker.tick_interval_s = 0
    _produce_orders(kafka, settings, BACKLOG)
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


def test_a_transaction_under_backlog_ends_once_the_commit_interval_has_passed(kafka, settings) -> None:
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


@pytest.mark.parametrize(("batch_size", "interval_ms", "backlog"), [(2000, 100, 2000), (2000, 1, 3000)])
def test_a_worker_idle_after_a_full_last_batch_waits_for_records_instead_of_spinning(
        kafka, settings, batch_size: int, interval_ms: int, backlog: int) -> None:
    """The last batch of a backlog was full (it reached the batch size, or the interval cut it as the queue
    emptied): the next fetch finds nothing, and the loop then waits for records as usual."""
    settings.worker.tick_interval_s = 0  # no clock ticks: nothing but records wakes the loop
    settings.worker.batch_size = batch_size
    settings.worker.commit_interval_ms = interval_ms
    _produce_orders(kafka, settings, backlog)
    with running_processor(settings, kafka) as runtime:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and runtime.stats.events < backlog:
            time.sleep(0.05)
        assert runtime.stats.events == backlog
        time.sleep(0.3)
        intake = runtime._intake
        fetch = intake.fetch
        calls = 0

        def counted() -> list[Any]:
            nonlocal calls
            calls += 1
            return fetch()

        intake.fetch = counted
        started = time.monotonic()
        time.sleep(1.0)
        per_s = calls / (time.monotonic() - started)
    assert per_s < 100  # a waiting loop turns about 20 times a second; a spinning one hundreds of thousands


@pytest.mark.parametrize(("field", "value"), [("batch_size", 0), ("batch_size", 1_000_001), ("commit_interval_ms", -1)])
def test_a_batch_size_or_commit_interval_the_worker_cannot_run_with_is_a_configuration_error(field: str, value: int) -> None:
    from streams.config import ConfigError

    w = WorkerSettings()
    setattr(w, field, value)
    with pytest.raises(ConfigError, match=f"worker.{field} is {value}"):
        w.check_transactions()
