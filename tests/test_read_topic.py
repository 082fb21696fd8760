"""Reading a whole topic (replay's copy, export, report): to the end the fetches report, never "nothing
came for a moment" (real broker)."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from streams.kafka.io import TopicReadTimeout, producer_config, read_topic
from schemas.topics import TopicSpec
from streams.kafka.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_a_read_that_allows_no_idle_time_still_reads_every_partition_to_its_end(kafka, settings):
    topic = settings.topics.prefix + "read-to-end"
    assert ensure_topics(kafka, [TopicSpec(topic, topic, 3, 1)]).healthy
    producer = Producer(producer_config(settings, kafka))
    for i in range(3000):
        producer.produce(topic, key=str(i).encode(), value=b"x", partition=i % 2)  # partition 2 stays empty
    assert producer.flush(30) == 0
    # idle_s=0 used to end the read at the first fetch that came back empty, however soon it came
    got = read_topic(kafka, topic, idle_s=0, timeout_s=60)
    assert len(got) == 3000 and {r.partition for r in got} == {0, 1}


def test_a_read_that_cannot_reach_the_end_in_time_says_so_instead_of_returning_part(kafka, settings):
    topic = settings.topics.prefix + "read-timeout"
    assert ensure_topics(kafka, [TopicSpec(topic, topic, 1, 1)]).healthy
    with pytest.raises(TopicReadTimeout, match=f"reading {topic}: the end of partition"):
        read_topic(kafka, topic, idle_s=0, timeout_s=0)  # no time at all: no fetch can report the end


def test_a_topic_that_keeps_receiving_records_is_read_to_the_end_it_had_and_the_read_returns(kafka, settings):
    import threading
    import time

    topic = settings.topics.prefix + "read-busy"
    assert ensure_topics(kafka, [TopicSpec(topic, topic, 2, 1)]).healthy
    producer = Producer(producer_config(settings, kafka, **{"linger.ms": 0}))
    for i in range(500):
        producer.produce(topic, value=b"before", partition=i % 2)
    assert producer.flush(30) == 0
    stop = threading.Event()

    def busy() -> None:  # a shop's views: a record every 20 ms, on both partitions
        while not stop.is_set():
            producer.produce(topic, value=b"after", partition=0)
            producer.produce(topic, value=b"after", partition=1)
            producer.poll(0)
            time.sleep(0.02)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        got = read_topic(kafka, topic, idle_s=0.5, timeout_s=60)
        assert time.monotonic() - started < 20, "the records that kept coming held the read open"
        assert sum(1 for r in got if r.value == b"before") == 500
    finally:
        stop.set()
        thread.join(5)
        producer.flush(10)
