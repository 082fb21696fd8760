"""Partitions released after their restore get their records at once. librdkafka does not wake a
broker's fetcher when paused partitions are resumed: one whose partitions were all paused sleeps until
its idle wake-up, up to a second later. The intake wakes each leader with a request (``wake_fetchers``).
Through the real broker."""

from __future__ import annotations

import logging
import re
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.config import Settings, load_settings
from streams.kafka.io import consumer_config, producer_config
from streams.kafka.topics import ensure_topics, topic_specs
from streams.runtime.intake import Decoder, Intake
from streams.runtime.tasks import TaskManager


PAUSED_FOR_S = 0.2  # the fetcher has looked at the paused partitions and gone idle by then
FIRST_RECORDS_WITHIN_S = 0.4  # woken: a few round trips; not woken: the rest of a one-second idle wait


def _seconds_to_first_record(kafka: str, settings: Settings, topic: str, group: str) -> float:
    consumer = Consumer(consumer_config(settings, kafka, group))
    try:
        intake = Intake(settings, consumer, {topic: "orders"}, TaskManager(settings), Decoder(settings, 3))
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(tps)
        intake.hold(tps)  # paused from the start, as a new assignment is while its state is restored
        time.sleep(PAUSED_FOR_S)
        released = time.perf_counter()
        intake.release({0, 1})
        while time.perf_counter() - released < 10:
            m = consumer.poll(0.005)
            if m is not None and m.error() is None:
                return time.perf_counter() - released
        raise AssertionError("no record within 10 s of the release")
    finally:
        consumer.close()


@pytest.mark.integration
def test_released_partitions_get_their_first_records_without_waiting_for_the_fetchers_idle_wake_up(
        kafka, settings):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    topic = settings.topics.name("orders")
    producer = Producer(producer_config(settings, kafka))
    for i in range(20):
        producer.produce(topic, key=f"c{i}".encode(), value=b"x", partition=i % 2)
    assert producer.flush(10) == 0

    waits = [_seconds_to_first_record(kafka, settings, topic, f"{settings.worker.app_id}-wake{n}") for n in range(3)]

    assert min(waits) < FIRST_RECORDS_WITHIN_S, waits


class _MockClusterAddress(logging.Handler):
    """librdkafka logs the address of the mock cluster a client starts (``test.mock.num.brokers``)."""

    address: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"replaced with (\S+)", record.getMessage())
        if found:
            self.address = found.group(1)


def _mock_cluster_with_three_leaders() -> tuple[Producer, str, dict[int, int]]:
    """A librdkafka mock cluster of three brokers whose ``orders`` partitions have three distinct leaders
    (the mock cluster places leaders at random: a fresh cluster until they differ), with records in
    every partition; its producer (which keeps the cluster alive), address and partition → leader."""
    logger = logging.getLogger("shopmail.test.mock-cluster")
    logger.setLevel(logging.DEBUG)
    for _ in range(40):
        grab = _MockClusterAddress()
        logger.addHandler(grab)
        try:
            producer = Producer({"bootstrap.servers": "unused", "test.mock.num.brokers": 3, "logger": logger})
            producer.produce("orders", value=b"x", partition=0)
            assert producer.flush(10) == 0 and grab.address
        finally:
            logger.removeHandler(grab)
        partitions = producer.list_topics("orders", timeout=5).topics["orders"].partitions
        leaders = {p: meta.leader for p, meta in partitions.items()}
        if len(set(leaders.values())) == 3:
            for i in range(10 * len(partitions)):
                producer.produce("orders", value=b"x", partition=i % len(partitions))
            assert producer.flush(10) == 0
            return producer, grab.address, leaders
    raise AssertionError("no mock cluster of three brokers placed its partitions on all three")


def test_every_leader_of_the_released_partitions_is_woken_not_only_the_first():
    """With partitions led by three brokers, each one's fetcher must be woken: the metadata request alone
    wakes one broker, a query to one leader wakes that leader only. The real broker here is a single
    broker, so this runs on librdkafka's own mock cluster (``test.mock.num.brokers``), the one cluster with
    several brokers to be had in a test."""
    producer, address, leaders = _mock_cluster_with_three_leaders()
    settings = load_settings(env={})
    consumer = Consumer({"bootstrap.servers": address, "group.id": "wake", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})
    try:
        intake = Intake(settings, consumer, {"orders": "orders"}, TaskManager(settings), Decoder(settings, 3))
        tps = [TopicPartition("orders", p) for p in leaders]
        consumer.assign(tps)
        intake.hold(tps)
        time.sleep(PAUSED_FOR_S)
        released = time.perf_counter()
        intake.release(set(leaders))
        first: dict[int, float] = {}
        while len(first) < len(leaders) and time.perf_counter() - released < 10:
            m = consumer.poll(0.005)
            if m is not None and m.error() is None:
                first.setdefault(m.partition(), time.perf_counter() - released)
    finally:
        consumer.close()
        del producer  # the mock cluster goes with it

    assert set(first) == set(leaders)
    assert max(first.values()) < FIRST_RECORDS_WITHIN_S, {p: (leaders[p], round(t, 3)) for p, t in first.items()}
