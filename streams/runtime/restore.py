"""Restore of one partition's state, and the one broker workaround the runtime needs.

``ChangelogRestore`` rebuilds a partition's engine: the local store up to its checkpoint, then the
changelog tail (read_committed) to the end the fetch reports (streams/kafka/log_reader.py) — never to a
ListOffsets high watermark, which some brokers under-report. A local checkpoint outside the changelog
(the topic was recreated) is discarded and the whole changelog read instead.

``OrphanedCommands`` is the workaround, behind its own small interface. Kafka aborts a dead
producer's open transaction when its ``transactional.id`` is initialised again; the embedded Tansu
broker (0.6) *commits* it instead (measured, docs/runtime.md). Commands of such a half-finished batch
become visible although the changelog never recorded the state that emitted them, so the restarted
worker would emit them again. Every transaction therefore records, in the changelog key
``RUNTIME_KEY``, the commands partition's end offset as of its commit; on restore the command ids
visible after that marker are collected and suppressed once if the replayed inputs emit them again.
On Apache Kafka the orphan is aborted and the set is simply empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

from schemas import serde
from streams.config import Settings
from streams.core.engine import PartitionEngine
from streams.kafka.io import client_config
from streams.kafka.log_reader import EOF_CONFIG, read_to_end
from streams.runtime.state_store import LocalStore

log = logging.getLogger("shopmail.restore")

RUNTIME_KEY = "\x01runtime.commands_end"  # changelog key owned by the runtime, not the engine


@dataclass
class Restored:
    engine: PartitionEngine
    changelog_end: int  # next changelog offset: the local store's checkpoint after the next commit
    commands_marker: int  # commands partition end recorded by the last committed transaction
    local_keys: int
    changelog_records: int


def _reader(settings: Settings, bootstrap: str) -> Consumer:
    return Consumer(client_config(settings.kafka, bootstrap, **{
        "group.id": f"{settings.worker.app_id}-restore", "enable.auto.commit": False,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest", **EOF_CONFIG}))


class ChangelogRestore:
    def __init__(self, settings: Settings, bootstrap: str, changelog: str, store: LocalStore,
                 engine_factory: Callable[[Settings, int], PartitionEngine]) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.changelog = changelog
        self.store = store
        self.engine_factory = engine_factory

    def restore(self, partition: int) -> Restored:
        reader = _reader(self.settings, self.bootstrap)
        try:
            low, _ = reader.get_watermark_offsets(TopicPartition(self.changelog, partition), timeout=10)
            values, checkpoint = self.store.load(partition)
            restored = self._read(reader, partition, max(low, checkpoint), values)
            if checkpoint > restored.changelog_end or 0 <= checkpoint < low:
                log.warning("partition %d: local store checkpoint %d outside changelog [%d, %d): discarded",
                            partition, checkpoint, low, restored.changelog_end)
                self.store.discard(partition)
                restored = self._read(reader, partition, low, {})
        finally:
            reader.close()
        restored.engine.restored()
        return restored

    def _read(self, reader: Consumer, partition: int, start: int, local: dict[str, bytes]) -> Restored:
        engine = self.engine_factory(self.settings, partition)
        marker = 0
        n = 0
        for key, value in local.items():
            if key == RUNTIME_KEY:
                marker = int(value or b"0")
            else:
                engine.restore(key, value)

        def apply(m: Message) -> None:
            nonlocal marker, n
            key = m.key().decode()
            if key == RUNTIME_KEY:
                marker = int(m.value() or b"0")
            else:
                engine.restore(key, m.value())
            n += 1

        ends = read_to_end(reader, [TopicPartition(self.changelog, partition, start)], apply,
                           self.settings.worker.restore_timeout_s, f"changelog restore of partition {partition}")
        return Restored(engine, ends.get((self.changelog, partition), start), marker, len(local), n)


class OrphanedCommands:
    def __init__(self, settings: Settings, bootstrap: str, commands_topic: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.commands_topic = commands_topic

    def visible_after(self, partition: int, marker: int) -> tuple[set[str], int]:
        """Command ids visible in commands partition ``partition`` from offset ``marker`` to its end,
        and that end."""
        ids: set[str] = set()

        def collect(m: Message) -> None:
            ids.add(serde.decode(m.value(), "EmailCommand", m.topic()).record["command_id"])

        reader = _reader(self.settings, self.bootstrap)
        try:
            ends = read_to_end(reader, [TopicPartition(self.commands_topic, partition, marker)], collect,
                               self.settings.worker.restore_timeout_s, f"commands partition {partition}")
        finally:
            reader.close()
        if ids:
            log.warning("partition %d: %d command(s) of an unfinished transaction are already visible; "
                        "they will not be emitted again", partition, len(ids))
        return ids, ends.get((self.commands_topic, partition), marker)
