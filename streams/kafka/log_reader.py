"""Read assigned partitions to the end that the fetch itself reports.

A ListOffsets high watermark (``get_watermark_offsets`` without ``cached``) is not a safe end: on some
Kafka-protocol brokers it lags the log (measured on Tansu 0.6: 8,701 for a 10,000-record partition
written in batches), so "read until the position reaches it" silently stops short and loses records.
The end is what each fetch response says: librdkafka raises ``_PARTITION_EOF`` when the consumer has
read everything the broker had (under ``read_committed``, up to the last stable offset). That is
correct on Apache Kafka and on brokers whose ListOffsets answer is off.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

EOF_CONFIG = {"enable.partition.eof": True}  # merge into the config of a consumer read with read_to_end
# A one-off read to the end (not a live follower): an empty partition's end is known from the first fetch
# answer, and the broker holds a fetch that finds nothing for fetch.wait.max.ms (librdkafka: 500 ms).
ONE_OFF_READ_CONFIG = {"fetch.wait.max.ms": 10, **EOF_CONFIG}


def read_to_end(consumer: Consumer, partitions: list[TopicPartition], handle: Callable[[Message], None],
                timeout_s: float, what: str, batch: int = 5000) -> dict[tuple[str, int], int]:
    """Assign ``partitions`` (at their offsets), hand every record to ``handle`` until each partition
    has reported its end, and return the end offset (next offset to read) of each. The consumer must
    have ``enable.partition.eof`` set. Raises ``TimeoutError`` naming ``what`` after ``timeout_s``."""
    if not partitions:
        return {}
    consumer.assign(partitions)
    waiting = {(tp.topic, tp.partition) for tp in partitions}
    ends: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: the end of {sorted(waiting)} was not reached within {timeout_s}s")
        for m in consumer.consume(batch, 0.2):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    tp = (m.topic(), m.partition())
                    waiting.discard(tp)
                    ends[tp] = m.offset()
                    continue
                raise KafkaException(err)
            tp = (m.topic(), m.partition())
            if tp not in waiting:  # data after an EOF: the partition grew; keep reading it
                waiting.add(tp)
            handle(m)
    return ends
