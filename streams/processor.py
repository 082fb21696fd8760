"""The processor runtime: a single-threaded confluent-kafka loop with exactly-once transactions.

Why not faust: on the embedded broker faust-streaming's ``exactly_once`` guarantee cannot start
(aiokafka's InitProducerId → ``UnknownError`` from Tansu 0.6.0), and ``at_least_once`` re-emits the
commands of every record processed since the last commit after a SIGKILL.  DESIGN.md names this
loop as the fallback (the Quix Streams design): per-partition state in a ``PartitionEngine``, a
compacted changelog topic, and one Kafka transaction per batch that carries

    email commands + DLQ records + changelog updates + the input offsets

so a crash at any point either commits all of a batch or none of it: no command twice, none lost.

Tansu 0.6.0 deviates from Kafka here (measured, see docs/runtime.md): it never times out an orphaned
transaction, and when the restarted worker re-initialises the same ``transactional.id`` it *commits*
the dead worker's open transaction instead of aborting it.  The runtime makes such a partial batch
harmless: commands of partition *p* go to commands partition *p*; a batch's commands are flushed
before its changelog records are produced (so state never runs ahead of visible commands); every
transaction records the commands partition's end offset in the changelog; and on restore the
command ids visible after that offset are suppressed if the replayed inputs emit them again.  On
Apache Kafka the orphan is aborted and that set is simply empty.

Co-partitioning: all input topics share one partition count and are keyed by customer_id, and the
consumer uses the ``range`` assignor, so partition *p* of every input topic lands on the same worker
and feeds the same engine.  On assignment the engine of *p* is rebuilt from changelog partition *p*
(read_committed, to the end the fetch reports) before any input of *p* is processed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas import serde
from streams.config import Settings
from streams.core.engine import PartitionEngine, Rejection
from streams.kafka_io import consumer_config, producer_config
from streams.log_reader import EOF_CONFIG, read_to_end
from streams.merge import PartitionMerger, Pending, event_time_of
from streams.record_limits import Refusal, admit, clamp, dead_letter_value, fits
from streams.state_store import LocalStore, open_store
from streams.topics import INPUT_TOPICS, VALUE_SCHEMA, changelog_topic

log = logging.getLogger("shopmail.processor")

EngineFactory = Callable[[Settings, int], PartitionEngine]
RUNTIME_KEY = "\x01runtime.commands_end"  # changelog key owned by the runtime, not the engine
ISOLATE_AFTER_ABORTS = 2  # aborted transactions in a row before records are isolated one per transaction
Buffered = tuple[Message, "dict[str, Any] | None", "Refusal | None"]  # a record, decoded or refused


@dataclass
class RuntimeStats:
    events: int = 0
    commands: int = 0
    dead_letters: int = 0
    transactions: int = 0
    aborted: int = 0
    enforced: int = 0  # records processed while a topic of their partition had none (merge.py)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    clamped: int = 0  # records whose free text was cut to the limits (record_limits.clamp)
    oversized_state: int = 0  # changelog values over limits.max_message_bytes, not written
    isolated: int = 0  # records processed one per transaction after repeated aborts
    recoveries: int = 0
    restored_local_keys: int = 0
    restored_changelog_records: int = 0
    by_flow: dict[str, int] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)


class ProcessorRuntime:
    """Run the domain core over the input topics with exactly-once output."""

    def __init__(self, settings: Settings, bootstrap: str, *, instance_id: str | None = None,
                 engine_factory: EngineFactory | None = None, write_ticks: bool | None = None,
                 observer: Any | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.instance_id = instance_id or settings.worker.instance_id or socket.gethostname()
        self.engine_factory: EngineFactory = engine_factory or (lambda s, p: PartitionEngine(s, p))
        self.write_ticks = settings.worker.tick_interval_s > 0 if write_ticks is None else write_ticks
        self.observer = observer  # optional metrics sink with on_batch(stats) / on_dead_letter(topic)
        t = settings.topics
        self.topic_logical = {t.name(lt): lt for lt in INPUT_TOPICS}
        self.commands_topic = t.name("commands")
        self.clock_topic = t.name("clock")
        self.changelog = changelog_topic(settings, "state")
        self.engines: dict[int, PartitionEngine] = {}
        self.store: LocalStore = open_store(settings.worker.store, settings.worker.data_dir, settings.worker.app_id)
        self._changelog_end: dict[int, int] = {}  # partition → next changelog offset after our last write
        self._mergers: dict[int, PartitionMerger[Buffered]] = {}
        self._start_offsets: dict[tuple[str, int], int] = {}  # committed offset at assignment
        self._paused: set[tuple[str, int]] = set()
        self._commands_end: dict[int, int] = {}  # partition → end offset of commands partition (committed)
        self._already_emitted: dict[int, set[str]] = {}  # partition → command ids visible after the marker
        self.stats = RuntimeStats()
        self.ready = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._last_tick = 0.0
        self._needs_recovery = False
        self.limits = settings.limits
        # Crash-loop guard: after ISOLATE_AFTER_ABORTS aborted transactions in a row the runtime
        # processes one record per transaction; a record whose own transaction aborts is poison and
        # is dead-lettered when it comes round again, so no record can stop its partition.
        self._aborts_in_row = 0
        self._isolating = 0  # records still to process one per transaction
        self._in_flight: tuple[int, tuple[str, int, int] | None] = (0, None)  # open transaction: count, first
        self._poison: set[tuple[str, int, int]] = set()

    # ---- lifecycle --------------------------------------------------------------------------
    def _make_clients(self) -> None:
        s = self.settings
        self._consumer = Consumer(consumer_config(
            s, self.bootstrap, s.worker.app_id, **{"client.id": f"{s.worker.app_id}-{self.instance_id}"}))
        self._producer = Producer(producer_config(
            s, self.bootstrap, **{"transactional.id": f"{s.worker.app_id}-{self.instance_id}",
                                  "transaction.timeout.ms": s.worker.transaction_timeout_ms,
                                  "linger.ms": 2}))
        self._producer.init_transactions(30)

    def run(self, stop: threading.Event) -> None:
        self._make_clients()
        assert self._consumer is not None and self._producer is not None
        self._consumer.subscribe(list(self.topic_logical), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("processor %s consuming %s", self.instance_id, ", ".join(self.topic_logical))
        try:
            while not stop.is_set():
                msgs = self._consumer.consume(self.settings.worker.batch_size, 0.05)
                if self._needs_recovery:
                    self._recover_after_abort()
                    continue
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(err)
                    self._buffer(m)
                pending = self._drain_ready()
                ticks = self._due_ticks()
                if not pending and not ticks:
                    if self.engines and not msgs:
                        self.ready.set()
                    continue
                self._process_batch(pending, ticks)
                self._resume_drained()
        finally:
            self._close()

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group: the next join is quick
            except KafkaException:
                pass
        if self._producer is not None:
            self._producer.flush(5)
        self._consumer = self._producer = None
        self.store.close()

    # ---- rebalancing ------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        wanted = sorted({tp.partition for tp in partitions})
        for tp in consumer.committed(partitions, timeout=30):
            self._start_offsets[(tp.topic, tp.partition)] = max(tp.offset, 0)
        for p in wanted:
            if p not in self.engines:
                self.engines[p] = self._restore_partition(p)
            if p not in self._mergers:
                self._mergers[p] = PartitionMerger(list(self.topic_logical), self.settings.worker.max_idle_ms,
                                                   self.settings.worker.max_lag_wait_ms)
        log.info("assigned partitions %s", wanted)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        remaining = {tp.partition for tp in consumer.assignment() if tp.partition not in gone} if partitions else set()
        for p in list(self.engines):
            if p in gone and p not in remaining:
                del self.engines[p]
                self._mergers.pop(p, None)
        for tp in partitions:
            self._paused.discard((tp.topic, tp.partition))
            self._start_offsets.pop((tp.topic, tp.partition), None)
        log.info("revoked partitions %s", sorted(gone))

    def _restore_partition(self, partition: int) -> PartitionEngine:
        """Rebuild partition state: the local store up to its checkpoint, then the changelog tail
        (read_committed) to the end the fetch reports — never to a ListOffsets high watermark, which
        some brokers under-report (streams/log_reader.py)."""
        engine = self.engine_factory(self.settings, partition)
        marker = 0
        local, n = 0, 0

        def apply(m: Message) -> None:
            nonlocal marker, n
            key = m.key().decode()
            if key == RUNTIME_KEY:
                marker = int(m.value() or b"0")
            else:
                engine.restore(key, m.value())
            n += 1

        reader = self._restore_reader()
        try:
            low, _ = reader.get_watermark_offsets(TopicPartition(self.changelog, partition), timeout=10)
            values, checkpoint = self.store.load(partition)
            for key, value in values.items():
                if key == RUNTIME_KEY:
                    marker = int(value or b"0")
                else:
                    engine.restore(key, value)
                local += 1
            start = max(low, checkpoint)
            end = self._read_changelog(reader, partition, start, apply)
            if checkpoint > end or (0 <= checkpoint < low):
                log.warning("partition %d: local store checkpoint %d outside changelog [%d, %d): discarded",
                            partition, checkpoint, low, end)
                self.store.discard(partition)
                engine, marker, local, n = self.engine_factory(self.settings, partition), 0, 0, 0
                end = self._read_changelog(reader, partition, low, apply)
        finally:
            reader.close()
        engine.restored()
        self._changelog_end[partition] = end
        self._already_emitted[partition], self._commands_end[partition] = self._commands_after(partition, marker)
        self.stats.recoveries += 1
        self.stats.restored_local_keys += local
        self.stats.restored_changelog_records += n
        log.info("partition %d restored: %d keys from the local store, %d changelog records (clock %d)",
                 partition, local, n, engine.clock_ms)
        return engine

    def _restore_reader(self) -> Consumer:
        return Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{self.settings.worker.app_id}-restore",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", **EOF_CONFIG})

    def _read_changelog(self, reader: Consumer, partition: int, start: int, apply: Callable[[Message], None]) -> int:
        ends = read_to_end(reader, [TopicPartition(self.changelog, partition, start)], apply,
                           self.settings.worker.restore_timeout_s, f"changelog restore of partition {partition}")
        return ends.get((self.changelog, partition), start)

    def _commands_after(self, partition: int, start: int) -> tuple[set[str], int]:
        """Command ids visible in commands partition ``partition`` from offset ``start`` to the end."""
        ids: set[str] = set()

        def collect(m: Message) -> None:
            ids.add(serde.decode(m.value(), "EmailCommand").record["command_id"])

        reader = self._restore_reader()
        try:
            ends = read_to_end(reader, [TopicPartition(self.commands_topic, partition, start)], collect,
                               self.settings.worker.restore_timeout_s, f"commands partition {partition}")
        finally:
            reader.close()
        if ids:
            log.warning("partition %d: %d command(s) of an unfinished transaction are already visible; "
                        "they will not be emitted again", partition, len(ids))
        return ids, ends.get((self.commands_topic, partition), start)

    def _recover_after_abort(self) -> None:
        """After an aborted transaction the in-memory state ran ahead: rebuild it and rewind."""
        assert self._consumer is not None
        assignment = self._consumer.assignment()
        for p in list(self.engines):
            self.engines[p] = self._restore_partition(p)
        for merger in self._mergers.values():
            merger.clear()
        if self._paused:
            self._consumer.resume([TopicPartition(t, p) for t, p in self._paused])
            self._paused.clear()
        committed = self._consumer.committed(assignment, timeout=10)
        for tp in committed:
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
        self._needs_recovery = False

    # ---- processing -------------------------------------------------------------------------
    def _due_ticks(self) -> list[int]:
        if not self.write_ticks or not self.engines:
            return []
        now = time.monotonic()
        if now - self._last_tick < self.settings.worker.tick_interval_s:
            return []
        self._last_tick = now
        return sorted(self.engines)

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, high watermark − position) for the assigned input partitions (cached)."""
        if self._consumer is None:
            return []
        out = []
        for tp in self._consumer.assignment():
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            pos = self._consumer.position([tp])[0].offset
            if high >= 0 and pos >= 0:
                out.append((tp.topic, tp.partition, max(0, high - pos)))
        return out

    def _buffer(self, m: Message) -> None:
        merger = self._mergers.get(m.partition())
        if merger is None:  # assignment raced a revoke: the next owner reprocesses it
            return
        record, refusal = self._read(m)
        at = -1 if record is None else event_time_of(self.topic_logical[m.topic()], record)
        merger.add(Pending(m.topic(), at, (m, record, refusal)))
        if merger.queued(m.topic()) > self.settings.worker.max_buffered and (m.topic(), m.partition()) not in self._paused:
            assert self._consumer is not None
            self._consumer.pause([TopicPartition(m.topic(), m.partition())])
            self._paused.add((m.topic(), m.partition()))

    def _read(self, m: Message) -> tuple[dict[str, Any] | None, Refusal | None]:
        """Decode and admit one input record: the record, or why it goes to the DLQ. Never raises."""
        logical = self.topic_logical[m.topic()]
        value = m.value()
        refusal = admit(self.limits, logical, m.key(), len(value) if value else 0, None)
        if refusal is not None:
            return None, refusal
        try:
            record: dict[str, Any] = serde.decode(value, VALUE_SCHEMA[logical]).record
            event_time_of(logical, record)
        except serde.SerdeError as exc:
            return None, Refusal(exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - any unreadable record is a dead letter, never a crash
            return None, Refusal("invalid", f"{type(exc).__name__}: {exc}")
        refusal = admit(self.limits, logical, m.key(), 0, record)
        if refusal is not None:
            return None, refusal
        if clamp(self.limits, record):
            self.stats.clamped += 1
        return record, None

    def _resume_drained(self) -> None:
        if not self._paused:
            return
        assert self._consumer is not None
        low = self.settings.worker.max_buffered // 4
        ready = [(t, p) for t, p in self._paused if p not in self._mergers or self._mergers[p].queued(t) <= low]
        if ready:
            self._consumer.resume([TopicPartition(t, p) for t, p in ready])
            self._paused.difference_update(ready)

    def _unfetched(self, topic: str, partition: int) -> int | None:
        """Records of this topic-partition not fetched yet, as far as the last fetch response knows
        (0: caught up; ``None``: not known yet)."""
        assert self._consumer is not None
        tp = TopicPartition(topic, partition)
        _, high = self._consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            return None
        pos = self._consumer.position([tp])[0].offset
        if pos < 0:
            pos = self._start_offsets.get((topic, partition), -1)
        if pos < 0:
            return None
        return max(0, high - pos)

    def _drain_ready(self) -> list[Pending[Buffered]]:
        limit = 1 if self._isolating else self.settings.worker.batch_size
        now_ms = time.monotonic() * 1000
        out: list[Pending[Buffered]] = []
        for p, merger in self._mergers.items():
            if len(out) >= limit:
                break
            if len(merger):
                before = merger.enforced
                out.extend(merger.drain(limit - len(out), lambda t, p=p: self._unfetched(t, p), now_ms))
                self.stats.enforced += merger.enforced - before
        return out

    def _process_batch(self, pending: list[Pending[Buffered]], ticks: list[int]) -> None:
        assert self._consumer is not None and self._producer is not None
        producer = self._producer
        producer.begin_transaction()
        touched: set[int] = set()
        processed: dict[tuple[str, int], int] = {}
        batch_commands = 0
        first = pending[0].item[0] if pending else None
        self._in_flight = (len(pending), (first.topic(), first.partition(), first.offset()) if first else None)
        try:
            for item in pending:
                m, record, refusal = item.item
                touched.add(m.partition())
                processed[(m.topic(), m.partition())] = m.offset() + 1
                batch_commands += self._handle(m, record, refusal)
            now_ms = int(time.time() * 1000)
            for p in ticks:
                self._produce(self.clock_topic, f"clock-{p}".encode(),
                              serde.encode("ClockTick", {"partition": p, "tick_at": now_ms, "source": self.instance_id}),
                              partition=p)
            if batch_commands:
                producer.flush(60)  # commands are on the broker before the state that says they were sent
            changes: dict[int, dict[str, bytes | None]] = {}
            for p in touched:
                engine = self.engines.get(p)
                if engine is None:
                    continue
                changes[p] = engine.drain_changes()
                changes[p][RUNTIME_KEY] = str(self._commands_end.get(p, 0)).encode()
                for key, value in list(changes[p].items()):
                    kb = key.encode()
                    if not fits(self.limits, kb, value):
                        del changes[p][key]
                        self._state_too_large(p, key, value, pending)
                        continue
                    self._produce(self.changelog, kb, value, partition=p, on_delivery=self._on_changelog_delivered)
            if processed:
                offsets = [TopicPartition(t, p, off) for (t, p), off in processed.items()]
                producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(60)
            producer.poll(0)
            for p, changed in changes.items():
                self.store.apply(p, changed, self._changelog_end.get(p, 0))
        except KafkaException as exc:
            kerr = exc.args[0] if exc.args else None
            if kerr is not None and hasattr(kerr, "txn_requires_abort") and kerr.txn_requires_abort():
                log.warning("transaction aborted (%s); rebuilding state from the changelog", kerr)
                producer.abort_transaction(30)
                self._aborted()
                return
            raise
        self._committed(len(pending))
        self.stats.transactions += 1
        self.stats.events += len(pending)
        self.stats.commands += batch_commands
        if self.observer is not None:
            by_topic: dict[str, int] = {}
            for item in pending:
                by_topic[item.topic] = by_topic.get(item.topic, 0) + 1
            self.observer.on_batch(self, by_topic)

    def _aborted(self) -> None:
        """An aborted transaction: rebuild and rewind; a record that aborts alone is poison."""
        self.stats.aborted += 1
        self._needs_recovery = True
        self._aborts_in_row += 1
        count, first = self._in_flight
        if self._isolating and count == 1 and first is not None:
            self._poison.add(first)
            log.error("%s[%d]@%d aborted its own transaction: it will be dead-lettered", *first)
        if self._aborts_in_row >= ISOLATE_AFTER_ABORTS and not self._isolating:
            self._isolating = max(count, 1)
            log.warning("%d aborted transactions in a row: processing the next %d records one per transaction",
                        self._aborts_in_row, self._isolating)

    def _committed(self, records: int) -> None:
        self._aborts_in_row = 0
        if self._isolating:
            self.stats.isolated += records
            self._isolating = max(0, self._isolating - records)

    def _handle(self, m: Message, record: dict[str, Any] | None, refusal: Refusal | None) -> int:
        """The one place where a record's fate is decided: processed (commands produced) or
        dead-lettered with its reason. Nothing a single record carries can raise out of here."""
        topic = m.topic()
        engine = self.engines.get(m.partition())
        if engine is None:  # assignment raced a revoke: the next owner reprocesses it
            return 0
        if (topic, m.partition(), m.offset()) in self._poison:
            self._poison.discard((topic, m.partition(), m.offset()))
            self._dead_letter(m, "transaction_failed", "the record's own transaction aborted "
                                                      f"{ISOLATE_AFTER_ABORTS}+ times; skipped so the partition goes on")
            return 0
        if refusal is not None or record is None:
            reason, detail = (refusal.reason, refusal.detail) if refusal else ("invalid", "no record")
            self._dead_letter(m, reason, detail)
            return 0
        try:
            result = engine.process(self.topic_logical[topic], record)
        except Exception as exc:  # a domain bug must not stall the partition: DLQ with the reason
            log.exception("engine failed on %s[%d]@%d", topic, m.partition(), m.offset())
            self._dead_letter(m, "processing_error", f"{type(exc).__name__}: {exc}")
            return 0
        for rej in result.rejections:
            self._dead_letter(m, rej.reason, rej.detail)
        assert self._producer is not None
        already = self._already_emitted.get(m.partition())
        emitted = 0
        for cmd in result.commands:
            if already and cmd["command_id"] in already:
                already.discard(cmd["command_id"])
                continue
            key, value = cmd["customer_id"].encode(), serde.encode("EmailCommand", cmd)
            if not fits(self.limits, key, value):
                self._dead_letter(m, "output_too_large",
                                  f"{cmd['flow']} step {cmd['step']} command {cmd['command_id']} would be "
                                  f"{len(value)} bytes, over limits.max_message_bytes ({self.limits.max_message_bytes})")
                continue
            try:
                self._produce(self.commands_topic, key, value, partition=m.partition(), timestamp=cmd["created_at"],
                              on_delivery=self._on_command_delivered)
            except KafkaException as exc:  # refused by the client (e.g. its message.max.bytes): this record only
                if exc.args and getattr(exc.args[0], "fatal", lambda: False)():
                    raise
                self._dead_letter(m, "produce_failed", f"{cmd['flow']} step {cmd['step']}: {exc}")
                continue
            self.stats.by_flow[cmd["flow"]] = self.stats.by_flow.get(cmd["flow"], 0) + 1
            emitted += 1
        return emitted

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        """Produce, waiting for room when the local queue is full (never an error for that)."""
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _state_too_large(self, partition: int, key: str, value: bytes | None,
                         pending: list[Pending[Buffered]]) -> None:
        """A customer's state grew past what the changelog accepts: it is not written (the changelog
        keeps the last state that fit), and the records of this batch that made it grow are
        dead-lettered with the reason, so the fact is visible and replayable."""
        self.stats.oversized_state += 1
        size = len(value) if value else 0
        log.error("partition %d: state of %r is %d bytes, over limits.max_message_bytes (%d); not written",
                  partition, key[:80], size, self.limits.max_message_bytes)
        for item in pending:
            m, record, _ = item.item
            if m.partition() == partition and record is not None and record.get("customer_id") == key:
                self._dead_letter(m, "state_too_large", f"the customer's state would be {size} bytes, over "
                                                        f"limits.max_message_bytes ({self.limits.max_message_bytes})")

    def _on_changelog_delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            p = msg.partition()
            self._changelog_end[p] = max(self._changelog_end.get(p, 0), msg.offset() + 1)

    def _on_command_delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            p = msg.partition()
            self._commands_end[p] = max(self._commands_end.get(p, 0), msg.offset() + 1)

    def _dead_letter(self, m: Message, reason: str, detail: str) -> None:
        value, note = dead_letter_value(self.limits, m.value())
        key, _ = dead_letter_value(self.limits, m.key())
        dl = {"original_value": value, "original_key": key, "topic": m.topic(), "partition": m.partition(),
              "offset": m.offset(), "error": reason, "detail": (detail[:2000] + note),
              "failed_at": int(time.time() * 1000), "component": "processor"}
        self._produce(m.topic() + ".dlq", key, serde.encode("DeadLetter", dl))
        self.stats.dead_letters += 1
        self.stats.dead_letter_reasons[reason] = self.stats.dead_letter_reasons.get(reason, 0) + 1
        log.debug("dead-lettered %s[%d]@%d: %s: %s", m.topic(), m.partition(), m.offset(), reason, detail[:200])
        if self.observer is not None and hasattr(self.observer, "on_dead_letter"):
            self.observer.on_dead_letter(m.topic())


def rejection_reasons(rejections: list[Rejection]) -> list[str]:
    return [r.reason for r in rejections]


def default_instance_id() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()
