"""The reader of the global topics (not keyed by customer, e.g. inventory): every worker needs all of it.

A consumer of every partition of the global topics, outside the group. It is read from the beginning
at start, after an assignment and after an abort — the engine keeps the newest record per key and
counts older ones as stale — so its offsets are never committed (Kafka Streams restores a GlobalKTable
the same way). Its records are applied through ``TaskManager.apply_global`` to every assigned task,
before the batch's own records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.config import Settings
from streams.kafka.io import client_config
from streams.runtime.intake import records
from streams.runtime.limits import Refusal
from streams.runtime.task import TaskOutput
from streams.runtime.tasks import TaskManager

Decode = Callable[[Message, str, int], tuple[dict[str, Any] | None, Refusal | None]]


class GlobalRecord:
    """A global topic's record as applied to one partition task: its commands go to that partition,
    its dead letter names the global record, and it has no offset of the group to commit."""

    __slots__ = ("message", "task_partition")

    def __init__(self, message: Message, task_partition: int) -> None:
        self.message = message
        self.task_partition = task_partition

    def partition(self) -> int:
        return self.task_partition

    def topic(self) -> str:
        return self.message.topic()  # type: ignore[no-any-return]

    def offset(self) -> int:
        return self.message.offset()  # type: ignore[no-any-return]

    def key(self) -> bytes | None:
        return self.message.key()  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self.message.value()  # type: ignore[no-any-return]


class GlobalReader:
    def __init__(self, settings: Settings, bootstrap: str, instance_id: str, global_logical: dict[str, str],
                 decode: Decode) -> None:
        self.settings = settings
        self.global_logical = global_logical  # topic name → logical topic
        self.decode = decode
        self.pending: list[tuple[Message, str, dict[str, Any] | None, Refusal | None, int]] = []
        self.consumer = Consumer(client_config(settings.kafka, bootstrap, **{
            "group.id": f"{settings.worker.app_id}-global-{instance_id}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "auto.offset.reset": "earliest"}))
        md = self.consumer.list_topics(timeout=10)
        self.partitions = [TopicPartition(t, p, OFFSET_BEGINNING) for t in global_logical
                           if t in md.topics for p in md.topics[t].partitions]
        self.consumer.assign(self.partitions)

    def rewind(self) -> None:
        """From the beginning again, forgetting what was read and not applied."""
        self.pending.clear()
        self.consumer.assign(self.partitions)

    def read(self) -> None:
        """What the reader has now, decoded, to be applied with the next batch."""
        for m in records(self.consumer.consume(self.settings.worker.batch_size, 0)):
            logical = self.global_logical[m.topic()]
            value = m.value()
            size = len(value) if value else 0
            record, refusal = self.decode(m, logical, size)
            self.pending.append((m, logical, record, refusal, size))

    def apply(self, manager: TaskManager[Any], out: TaskOutput[Any]) -> None:
        """Every pending record to every assigned task."""
        for m, logical, record, refusal, size in self.pending:
            manager.apply_global(logical, lambda p, m=m: GlobalRecord(m, p), record, out, size=size, refusal=refusal)
        self.pending.clear()

    def close(self) -> None:
        self.consumer.close()
