"""Restore of partitions' state (all partitions of an assignment read together), and the one broker
workaround the runtime needs.

``ChangelogRestore`` rebuilds partitions' engines: each one's local store up to its checkpoint, then the
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
    # fetch.wait.max.ms: an empty partition's end is known from the first fetch response; with the
    # librdkafka default (500 ms) every restore waited that long for each reader before seeing it
    return Consumer(client_config(settings.kafka, bootstrap, **{
        "group.id": f"{settings.worker.app_id}-restore", "enable.auto.commit": False,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms, **EOF_CONFIG}))


class ChangelogRestore:
    """Rebuilds partitions' engines. ``restore_many`` reads every partition's changelog tail with one
    reader at once (fetches cover all of them), so the cost of a rebalance is that of the largest tail,
    not the sum of a fixed per-partition wait; an empty changelog costs one fetch round trip."""

    def __init__(self, settings: Settings, bootstrap: str, changelog: str, store: LocalStore,
                 engine_factory: Callable[[Settings, int], PartitionEngine],
                 progress: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.changelog = changelog
        self.store = store
        self.engine_factory = engine_factory
        self.progress = progress  # called as records are applied (the health check's heartbeat)

    def restore(self, partition: int) -> Restored:
        return self.restore_many([partition])[partition]

    def restore_many(self, partitions: list[int]) -> dict[int, Restored]:
        if not partitions:
            return {}
        reader = _reader(self.settings, self.bootstrap)
        try:
            lows = {p: reader.get_watermark_offsets(TopicPartition(self.changelog, p), timeout=10)[0]
                    for p in partitions}
            local = {p: self.store.load(p) for p in partitions}
            restored = self._read(reader, {p: (max(lows[p], local[p][1]), local[p][0]) for p in partitions})
            stale = [p for p in partitions
                     if local[p][1] > restored[p].changelog_end or 0 <= local[p][1] < lows[p]]
            for p in stale:
                log.warning("partition %d: local store checkpoint %d outside changelog [%d, %d): discarded",
                            p, local[p][1], lows[p], restored[p].changelog_end)
                self.store.discard(p)
            if stale:
                restored.update(self._read(reader, {p: (lows[p], {}) for p in stale}))
        finally:
            reader.close()
        for r in restored.values():
            r.engine.restored()
        return restored

    def _read(self, reader: Consumer, starts: dict[int, tuple[int, dict[str, bytes]]]) -> dict[int, Restored]:
        """Each partition from its local values, then its changelog from its start offset to the end."""
        engines: dict[int, PartitionEngine] = {}
        markers: dict[int, int] = {}
        counts: dict[int, int] = {}
        for p, (_, local) in starts.items():
            engine = engines[p] = self.engine_factory(self.settings, p)
            markers[p] = counts[p] = 0
            for key, value in local.items():
                if key == RUNTIME_KEY:
                    markers[p] = int(value or b"0")
                else:
                    engine.restore(key, value)
        progress = self.progress

        def apply(m: Message) -> None:
            p = m.partition()
            key = m.key().decode()
            if key == RUNTIME_KEY:
                markers[p] = int(m.value() or b"0")
            else:
                engines[p].restore(key, m.value())
            counts[p] += 1
            progress()

        ends = read_to_end(reader, [TopicPartition(self.changelog, p, start) for p, (start, _) in starts.items()],
                           apply, self.settings.worker.restore_timeout_s,
                           f"changelog restore of partitions {sorted(starts)}")
        return {p: Restored(engines[p], ends.get((self.changelog, p), start), markers[p], len(local), counts[p])
                for p, (start, local) in starts.items()}


class OrphanedCommands:
    def __init__(self, settings: Settings, bootstrap: str, commands_topic: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.commands_topic = commands_topic

    def visible_after(self, markers: dict[int, int]) -> dict[int, tuple[set[str], int]]:
        """Per commands partition: the command ids visible from offset ``markers[p]`` to its end, and
        that end (all partitions read by one reader at once)."""
        ids: dict[int, set[str]] = {p: set() for p in markers}

        def collect(m: Message) -> None:
            ids[m.partition()].add(serde.decode(m.value(), "EmailCommand", m.topic()).record["command_id"])

        reader = _reader(self.settings, self.bootstrap)
        try:
            ends = read_to_end(reader, [TopicPartition(self.commands_topic, p, marker) for p, marker in markers.items()],
                               collect, self.settings.worker.restore_timeout_s,
                               f"commands partitions {sorted(markers)}")
        finally:
            reader.close()
        for p, found in ids.items():
            if found:
                log.warning("partition %d: %d command(s) of an unfinished transaction are already visible; "
                            "they will not be emitted again", p, len(found))
        return {p: (ids[p], ends.get((self.commands_topic, p), marker)) for p, marker in markers.items()}
