"""Waking a consumer's fetchers after a resume.

librdkafka does not wake a broker's fetcher when paused partitions are resumed: a broker whose partitions
were all paused stays in its I/O wait for up to a second (its idle wake-up) before it fetches them again,
and the resumed partitions wait that long for their records (0.8–0.96 s measured). Any request to the
broker wakes it. ``wake_fetchers`` sends one metadata request (all topics: one round trip) and then one
high-watermark query (ListOffsets) to each leader of the resumed partitions, within ``budget_s`` in all,
after which every fetcher has woken on its own anyway. Best effort: a failed or slow request leaves the
fetchers to their own wake-up, nothing else. A partition fetched from a follower (``client.rack`` with a
rack-aware replica selector) is not reached this way.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["WAKE_BUDGET_S", "wake_fetchers"]

WAKE_BUDGET_S = 1.0  # librdkafka's idle wake-up: by then every fetcher is awake without help


def wake_fetchers(consumer: Consumer, tps: list[TopicPartition], budget_s: float = WAKE_BUDGET_S) -> None:
    """Wake the fetchers of the leaders of ``tps`` (just resumed) with one request each."""
    if not tps:
        return
    deadline = time.monotonic() + budget_s
    try:
        topics = consumer.list_topics(timeout=budget_s).topics
    except KafkaException:
        return
    by_leader: dict[int, TopicPartition] = {}
    for tp in tps:
        meta = topics.get(tp.topic)
        part = meta.partitions.get(tp.partition) if meta is not None else None
        if part is not None and part.leader >= 0:
            by_leader.setdefault(part.leader, tp)
    for leader in sorted(by_leader):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            consumer.get_watermark_offsets(by_leader[leader], timeout=left, cached=False)
        except KafkaException:
            continue
