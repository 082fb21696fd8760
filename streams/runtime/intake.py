"""Intake of the group's input partitions: fetch, decode, back-pressure (pause/resume) and lag.

The loop (streams/runtime/worker.py) asks for a fetch, hands the records to the ``TaskManager`` through
``offer`` (each one decoded, or with the reason it cannot be read), and tells the merge how many
records of a topic-partition are still to fetch (``lag``). A topic-partition whose queue grows past
``worker.max_buffered`` is paused until it has drained to a quarter of that; partitions being
restored are paused too (``hold``/``release``), so nothing of theirs is fetched before their state is
there; once released, their leaders' fetchers are woken at once rather than at librdkafka's next idle
wake-up, up to a second later.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from schemas import serde
from streams.config import Settings
from streams.kafka.fetchers import wake_fetchers
from streams.kafka.topics import VALUE_SCHEMA
from streams.runtime.limits import Refusal
from streams.runtime.tasks import TaskManager

Coords = tuple[str, int, int]  # topic, partition, offset


class Decoder:
    """Decodes a record of a known logical topic, never raising: an unreadable record comes back as
    the reason it cannot be read. A record marked poison (its own transaction kept aborting) is
    refused without being decoded, so its partition goes on."""

    def __init__(self, settings: Settings, isolate_after_aborts: int) -> None:
        self.max_record_bytes = settings.limits.max_record_bytes
        self.poison: set[Coords] = set()
        self._poison_detail = (f"the record's own transaction aborted {isolate_after_aborts}+ times; "
                               "skipped so the partition goes on")

    def __call__(self, m: Message, logical: str, size: int) -> tuple[dict[str, Any] | None, Refusal | None]:
        if self.poison and (m.topic(), m.partition(), m.offset()) in self.poison:
            return None, Refusal("transaction_failed", self._poison_detail)
        return self.value(m.value(), logical, m.topic(), size)

    def value(self, value: bytes | None, logical: str, topic: str, size: int
              ) -> tuple[dict[str, Any] | None, Refusal | None]:
        """The record in ``value`` (``size`` bytes) of ``topic``, or why it cannot be read."""
        if size > self.max_record_bytes:
            return None, None  # the task refuses it by size without it being decoded
        try:
            return serde.decode(value, VALUE_SCHEMA[logical], topic).record, None
        except serde.SerdeError as exc:
            return None, Refusal(exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - any unreadable record is a dead letter, never a crash
            return None, Refusal("invalid", f"{type(exc).__name__}: {exc}")


def records(msgs: list[Message]) -> list[Message]:
    """The fetched records without partition-EOF events; any other error is raised."""
    out = []
    for m in msgs:
        err = m.error()
        if err is None:
            out.append(m)
        elif err.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(err)
    return out


class Intake:
    def __init__(self, settings: Settings, consumer: Consumer, topic_logical: dict[str, str],
                 manager: TaskManager[Message], decode: Decoder) -> None:
        self.settings = settings
        self.consumer = consumer
        self.topic_logical = topic_logical
        self.manager = manager
        self.decode = decode
        self.batch_size = settings.worker.batch_size
        self.max_buffered = settings.worker.max_buffered
        self.full_batch_ready = False  # the last batch hit the batch limit: more is queued and ready
        self.start_offsets: dict[tuple[str, int], int] = {}  # committed offset at assignment
        self.paused: set[tuple[str, int]] = set()  # paused for back-pressure
        self.held: set[int] = set()  # partitions paused while their state is restored
        self._lags: dict[tuple[str, int], int | None] = {}

    # ---- fetch ------------------------------------------------------------------------------
    def fetch(self) -> list[Message]:
        """The records the client has now. Waits (up to 50 ms) only when no full batch is queued, and
        then only until the first record arrives: ``consume(n, t)`` waits for n records or the whole
        timeout, which stalled every batch while thousands of records sat queued, and added up to
        50 ms to every record's latency at low rates."""
        n = self.batch_size
        if self.full_batch_ready:
            got = records(self.consumer.consume(n, 0))
            if got or self.manager.pending():
                return got
            self.full_batch_ready = False  # the full batch was the last one: wait for records as usual
        first = self.consumer.poll(0.05)
        if first is None:
            return []
        return records([first, *self.consumer.consume(n - 1, 0)])

    def offer(self, m: Message) -> None:
        """One fetched record to its partition's task, decoded (or with the reason it cannot be)."""
        logical = self.topic_logical[m.topic()]
        value = m.value()
        size = len(value) if value else 0
        record, refusal = self.decode(m, logical, size)
        queued = self.manager.offer(m.partition(), logical, m, record, key=m.key(), size=size, refusal=refusal,
                                    arrived_at=m.timestamp()[1])
        if queued is not None and queued > self.max_buffered and (m.topic(), m.partition()) not in self.paused:
            self.consumer.pause([TopicPartition(m.topic(), m.partition())])
            self.paused.add((m.topic(), m.partition()))

    def resume_drained(self) -> None:
        if not self.paused:
            return
        low = self.max_buffered // 4
        ready = [(t, p) for t, p in self.paused
                 if p not in self.held and self.manager.queued(p, self.topic_logical[t]) <= low]
        if ready:
            self.consumer.resume([TopicPartition(t, p) for t, p in ready])
            self.paused.difference_update(ready)

    # ---- assignment -------------------------------------------------------------------------
    def assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in self.consumer.committed(partitions, timeout=30):
            self.start_offsets[(tp.topic, tp.partition)] = max(tp.offset, 0)

    def revoked(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.paused.discard((tp.topic, tp.partition))
            self.start_offsets.pop((tp.topic, tp.partition), None)
            self.held.discard(tp.partition)

    def hold(self, partitions: list[TopicPartition]) -> None:
        """Pause these (assigned) topic-partitions while their state is restored."""
        if partitions:
            self.consumer.pause(partitions)
            self.held.update(tp.partition for tp in partitions)

    def release(self, partitions: set[int]) -> None:
        """Resume the restored partitions' topic-partitions (all of them: their queues are empty) and
        wake their leaders' fetchers (streams/kafka/fetchers.py: librdkafka leaves a broker whose
        partitions were all paused asleep for up to a second after a resume)."""
        tps = [tp for tp in self.consumer.assignment() if tp.partition in partitions]
        if tps:
            self.consumer.resume(tps)
            wake_fetchers(self.consumer, tps)
        self.held.difference_update(partitions)
        self.paused.difference_update((tp.topic, tp.partition) for tp in tps)

    def rewind(self) -> None:
        """Back to the committed offsets of every assigned partition (after an aborted transaction);
        back-pressure pauses are lifted, the queues having been cleared."""
        assignment = self.consumer.assignment()
        if self.paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self.paused])
            self.paused.clear()
        for tp in self.consumer.committed(assignment, timeout=10):
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))

    # ---- lag --------------------------------------------------------------------------------
    def lag_reader(self) -> Any:
        """``lag(logical, partition)`` for one drain: one position/watermark look-up per
        topic-partition, not per record."""
        lags = self._lags
        lags.clear()
        name = self.settings.topics.name

        def lag(logical: str, p: int) -> int | None:
            key = (logical, p)
            if key not in lags:
                lags[key] = self.unfetched(name(logical), p)
            return lags[key]

        return lag

    def unfetched(self, topic: str, partition: int) -> int | None:
        """Records of this topic-partition not fetched yet, as far as the last fetch response knows
        (0: caught up; ``None``: not known yet)."""
        tp = TopicPartition(topic, partition)
        _, high = self.consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            return None
        pos = self.consumer.position([tp])[0].offset
        if pos < 0:
            pos = self.start_offsets.get((topic, partition), -1)
        if pos < 0:
            return None
        return max(0, high - pos)

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, high watermark − position) for the assigned input partitions (cached)."""
        out = []
        for tp in self.consumer.assignment():
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            pos = self.consumer.position([tp])[0].offset
            if high >= 0 and pos >= 0:
                out.append((tp.topic, tp.partition, max(0, high - pos)))
        return out
