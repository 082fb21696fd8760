"""The processor runtime: a single-threaded confluent-kafka loop with exactly-once transactions.

Why not faust: on the embedded broker faust-streaming's ``exactly_once`` guarantee cannot start
(aiokafka's InitProducerId → ``UnknownError`` from Tansu 0.6.0), and ``at_least_once`` re-emits the
commands of every record processed since the last commit after a SIGKILL.  So the processors run
this loop instead (the Quix Streams design): per-partition state in a ``PartitionEngine``, a
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
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas import serde
from streams.config import Settings
from streams.core.audiences import membership_key
from streams.core.engine import PartitionEngine
from streams.kafka.io import client_config, consumer_config, producer_config
from streams.runtime.limits import Refusal
from streams.runtime.checkpoint import Checkpoint, resumable
from streams.runtime.dead_letters import dead_letter
from streams.runtime.restore import ChangelogRestore, OrphanedCommands
from streams.runtime.state_store import LocalStore, open_store
from streams.runtime.task import PartitionTask, TaskOutput, apply_global_everywhere
from streams.kafka.topics import GLOBAL_INPUT_TOPICS, INPUT_TOPICS, VALUE_SCHEMA, changelog_topic

log = logging.getLogger("shopmail.processor")

EngineFactory = Callable[[Settings, int], PartitionEngine]
ISOLATE_AFTER_ABORTS = 2  # aborted transactions in a row before records are isolated one per transaction
Coords = tuple[str, int, int]  # topic, partition, offset


class GlobalRecord:
    """A global topic's record as applied to one partition task: its commands go to that partition."""

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


@dataclass
class RuntimeStats:
    events: int = 0
    commands: int = 0
    memberships: int = 0  # audience joins and leaves written
    dead_letters: int = 0
    transactions: int = 0
    aborted: int = 0
    enforced: int = 0  # records processed while a topic of their partition had none (runtime/merge.py)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    clamped: int = 0  # records whose free text was cut to the limits (record_limits.clamp)
    oversized_state: int = 0  # changelog values over limits.max_message_bytes, not written
    isolated: int = 0  # records processed one per transaction after repeated aborts
    recoveries: int = 0
    restored_local_keys: int = 0
    restored_changelog_records: int = 0
    by_flow: dict[str, int] = field(default_factory=dict)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    # wall seconds per stage of the loop (shopmail bench reports them): fetch (consume that returned
    # records), idle (consume that returned none), decode (decode + admit + queue), process (merge +
    # engine), emit (encode + produce commands and dead letters), changelog (drain + produce), flush,
    # offsets, commit (commit_transaction + local store)
    stage_s: dict[str, float] = field(default_factory=dict)

    def timed(self, stage: str, seconds: float) -> None:
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds


class ProcessorRuntime:
    """Run the domain core over the input topics with exactly-once output."""

    def __init__(self, settings: Settings, bootstrap: str, *, instance_id: str | None = None,
                 engine_factory: EngineFactory | None = None, write_ticks: bool | None = None,
                 observer: Any | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        serde.configure(settings.registry)  # registry framing in and (registry.output_framing) out
        configured = instance_id or settings.worker.instance_id
        self.engine_factory: EngineFactory = engine_factory or (lambda s, p: PartitionEngine(s, p))
        self.write_ticks = settings.worker.tick_interval_s > 0 if write_ticks is None else write_ticks
        self.observer = observer  # optional metrics sink with on_batch(stats) / on_dead_letter(topic)
        t = settings.topics
        self.topic_logical = {t.name(lt): lt for lt in INPUT_TOPICS}
        self.commands_topic = t.name("commands")
        self.audiences_topic = t.name("audiences")
        self.clock_topic = t.name("clock")
        self.changelog = changelog_topic(settings, "state")
        self.limits = settings.limits
        self.tasks: dict[int, PartitionTask[Message]] = {}
        # the local store claims a state directory; the n-th live worker on this host gets its own
        # (slot n), and without a configured instance id "<hostname>-<n>" as transactional.id suffix
        self.store: LocalStore = open_store(settings.worker.store, settings.worker.data_dir, settings.worker.app_id)
        hostname = socket.gethostname()
        self.instance_id = configured or (hostname if self.store.slot == 1 else f"{hostname}-{self.store.slot}")
        # health (streams/runtime/metrics.py): the loop's last turn, and the partitions being restored
        self.beat_at = time.monotonic()
        self.restoring: list[int] = []
        self.restore_started = 0.0
        self.restore = ChangelogRestore(settings, bootstrap, self.changelog, self.store, self.engine_factory,
                                        progress=self._beat)
        self.orphans = OrphanedCommands(settings, bootstrap, self.commands_topic)
        self._start_offsets: dict[tuple[str, int], int] = {}  # committed offset at assignment
        self._paused: set[tuple[str, int]] = set()
        self._already_emitted: dict[int, set[str]] = {}  # partition → command ids visible after the marker
        self.stats = RuntimeStats()
        self.ready = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._checkpoint: Checkpoint | None = None
        self._last_tick = 0.0
        self._needs_recovery = False
        self._out: TaskOutput[Message] = TaskOutput()
        self._scratch: TaskOutput[Message] = TaskOutput()
        self.global_logical = {t.name(lt): lt for lt in GLOBAL_INPUT_TOPICS}
        self._global: Consumer | None = None
        self._global_partitions: list[TopicPartition] = []
        self._global_pending: list[tuple[Message, str, dict[str, Any] | None, Refusal | None, int]] = []
        self._full_batch_ready = False  # the last batch hit the batch limit: more is queued and ready
        # Crash-loop guard: after ISOLATE_AFTER_ABORTS aborted transactions in a row the runtime
        # processes one record per transaction; a record whose own transaction aborts is poison and
        # is dead-lettered when it comes round again, so no record can stop its partition.
        self._aborts_in_row = 0
        self._isolating = 0  # records still to process one per transaction
        self._in_flight: tuple[int, Coords | None] = (0, None)  # open transaction: record count, first record
        self._poison: set[Coords] = set()

    @property
    def engines(self) -> dict[int, PartitionEngine]:
        return {p: task.engine for p, task in self.tasks.items()}

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
        self._checkpoint = Checkpoint(self._producer, self._produce, self.changelog, self.store, self.limits)

    def run(self, stop: threading.Event) -> None:
        self._make_clients()
        assert self._consumer is not None and self._producer is not None
        self._global = self._global_reader()
        self._consumer.subscribe(list(self.topic_logical), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("processor %s consuming %s", self.instance_id, ", ".join(self.topic_logical))
        try:
            stats = self.stats
            clock = time.perf_counter
            while not stop.is_set():
                self.beat_at = time.monotonic()
                started = clock()
                msgs = self._fetch()
                fetched = clock()
                stats.timed("fetch" if msgs else "idle", fetched - started)
                if self._needs_recovery:
                    self._recover_after_abort()
                    continue
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(err)
                    self._offer(m)
                self._read_global()
                stats.timed("decode", clock() - fetched)
                ticks = self._due_ticks()
                if not any(len(task) for task in self.tasks.values()) and not ticks and not self._global_pending:
                    if self.tasks and not msgs:
                        self.ready.set()
                    continue
                self._process_batch(ticks)
                self._resume_drained()
        finally:
            self._close()

    def _beat(self) -> None:
        self.beat_at = time.monotonic()

    def _fetch(self) -> list[Message]:
        """The records the client has now. Waits (up to 50 ms) only when no full batch is queued, and
        then only until the first record arrives: ``consume(n, t)`` waits for n records or the whole
        timeout, which stalled every batch while thousands of records sat queued, and added up to
        50 ms to every record's latency at low rates."""
        assert self._consumer is not None
        n = self.settings.worker.batch_size
        if self._full_batch_ready:
            return self._consumer.consume(n, 0)
        first = self._consumer.poll(0.05)
        if first is None:
            return []
        return [first, *self._consumer.consume(n - 1, 0)]

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group: the next join is quick
            except KafkaException:
                pass
        if self._producer is not None:
            self._producer.flush(5)
        if self._global is not None:
            self._global.close()
        self._consumer = self._producer = self._global = None
        self.store.close()

    # ---- rebalancing ------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        wanted = sorted({tp.partition for tp in partitions})
        for tp in consumer.committed(partitions, timeout=30):
            self._start_offsets[(tp.topic, tp.partition)] = max(tp.offset, 0)
        self.tasks.update(self._restore_partitions([p for p in wanted if p not in self.tasks]))
        self._rewind_global()  # a new partition has not seen the global topics through this worker yet
        log.info("assigned partitions %s", wanted)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        remaining = {tp.partition for tp in consumer.assignment() if tp.partition not in gone} if partitions else set()
        for p in list(self.tasks):
            if p in gone and p not in remaining:
                del self.tasks[p]
                self.store.release(p)  # the next owner may be another worker on this host
        for tp in partitions:
            self._paused.discard((tp.topic, tp.partition))
            self._start_offsets.pop((tp.topic, tp.partition), None)
        if self.observer is not None and hasattr(self.observer, "on_revoke"):
            self.observer.on_revoke([(tp.topic, tp.partition) for tp in partitions], gone - remaining)
        log.info("revoked partitions %s", sorted(gone))

    def _restore_partitions(self, partitions: list[int]) -> dict[int, PartitionTask[Message]]:
        """Rebuild the partitions' engines together (one changelog read for all of them, one read of
        the commands partitions), not one partition after another."""
        if not partitions:
            return {}
        self.restore_started = time.monotonic()
        self.restoring = sorted(partitions)
        try:
            restored = self.restore.restore_many(self.restoring)
            orphans = self.orphans.visible_after({p: r.commands_marker for p, r in restored.items()})
        finally:
            self.restoring = []
        tasks: dict[int, PartitionTask[Message]] = {}
        for p, r in sorted(restored.items()):
            ids, commands_end = orphans[p]
            self._already_emitted[p] = ids
            if self._checkpoint is not None:
                self._checkpoint.restored(p, r.changelog_end, commands_end)
            self.stats.recoveries += 1
            self.stats.restored_local_keys += r.local_keys
            self.stats.restored_changelog_records += r.changelog_records
            log.info("partition %d restored: %d keys from the local store, %d changelog records (clock %d)",
                     p, r.local_keys, r.changelog_records, r.engine.clock_ms)
            tasks[p] = PartitionTask(self.settings, p, r.engine, INPUT_TOPICS)
        seconds = time.monotonic() - self.restore_started
        log.info("restored partitions %s in %.3f s", sorted(partitions), seconds)
        if self.observer is not None and hasattr(self.observer, "on_restore"):
            self.observer.on_restore(len(partitions), seconds)
        return tasks

    def _recover_after_abort(self) -> None:
        """After an aborted transaction the in-memory state ran ahead: rebuild it and rewind."""
        assert self._consumer is not None
        assignment = self._consumer.assignment()
        self.tasks.update(self._restore_partitions(list(self.tasks)))
        if self._paused:
            self._consumer.resume([TopicPartition(t, p) for t, p in self._paused])
            self._paused.clear()
        committed = self._consumer.committed(assignment, timeout=10)
        for tp in committed:
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
        self._rewind_global()
        self._needs_recovery = False

    # ---- global topics (not keyed by customer) ------------------------------------------------
    def _global_reader(self) -> Consumer | None:
        """A consumer of every partition of the global topics (inventory), outside the group: every
        worker needs all of it. It is read from the beginning at start and after an abort — the
        engine keeps the newest record per key and counts older ones as stale — so its offsets are
        never committed (Kafka Streams restores a GlobalKTable the same way)."""
        if not self.global_logical:
            return None
        assert self._consumer is not None
        reader = Consumer(client_config(self.settings.kafka, self.bootstrap, **{
            "group.id": f"{self.settings.worker.app_id}-global-{self.instance_id}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "auto.offset.reset": "earliest"}))
        md = reader.list_topics(timeout=10)
        self._global_partitions = [TopicPartition(t, p, OFFSET_BEGINNING) for t in self.global_logical
                                   if t in md.topics for p in md.topics[t].partitions]
        reader.assign(self._global_partitions)
        return reader

    def _rewind_global(self) -> None:
        self._global_pending.clear()
        if self._global is not None:
            self._global.assign(self._global_partitions)

    def _read_global(self) -> None:
        if self._global is None or not self.tasks:  # nothing to apply them to yet
            return
        for m in self._global.consume(self.settings.worker.batch_size, 0):
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(m.error())
                continue
            logical = self.global_logical[m.topic()]
            value = m.value()
            size = len(value) if value else 0
            record, refusal = self._decode(m, logical, size)
            self._global_pending.append((m, logical, record, refusal, size))

    def _apply_global(self, out: TaskOutput[Message]) -> None:
        """Every pending global record to every partition task, before the batch's own records; its
        dead letters once (the first task's), its commands per partition."""
        tasks = sorted(self.tasks.items())
        for m, logical, record, refusal, size in self._global_pending:
            apply_global_everywhere(tasks, logical, lambda p, m=m: GlobalRecord(m, p), record, out, self._scratch,
                                    size=size, refusal=refusal)
        self._global_pending.clear()

    # ---- intake -----------------------------------------------------------------------------
    def _due_ticks(self) -> list[int]:
        if not self.write_ticks or not self.tasks:
            return []
        now = time.monotonic()
        if now - self._last_tick < self.settings.worker.tick_interval_s:
            return []
        self._last_tick = now
        return sorted(self.tasks)

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

    def _offer(self, m: Message) -> None:
        task = self.tasks.get(m.partition())
        if task is None:  # assignment raced a revoke: the next owner reprocesses it
            return
        logical = self.topic_logical[m.topic()]
        value = m.value()
        size = len(value) if value else 0
        record, refusal = self._decode(m, logical, size)
        clamped = task.clamped
        task.offer(logical, m, record, key=m.key(), size=size, refusal=refusal)
        self.stats.clamped += task.clamped - clamped
        if task.queued(logical) > self.settings.worker.max_buffered and (m.topic(), m.partition()) not in self._paused:
            assert self._consumer is not None
            self._consumer.pause([TopicPartition(m.topic(), m.partition())])
            self._paused.add((m.topic(), m.partition()))

    def _decode(self, m: Message, logical: str, size: int) -> tuple[dict[str, Any] | None, Refusal | None]:
        """The record, or why it cannot be read. Never raises."""
        if (m.topic(), m.partition(), m.offset()) in self._poison:
            return None, Refusal("transaction_failed", f"the record's own transaction aborted "
                                                       f"{ISOLATE_AFTER_ABORTS}+ times; skipped so the partition goes on")
        if size > self.limits.max_record_bytes:
            return None, None  # the task refuses it by size without it being decoded
        try:
            return serde.decode(m.value(), VALUE_SCHEMA[logical], m.topic()).record, None
        except serde.SerdeError as exc:
            return None, Refusal(exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - any unreadable record is a dead letter, never a crash
            return None, Refusal("invalid", f"{type(exc).__name__}: {exc}")

    def _resume_drained(self) -> None:
        if not self._paused:
            return
        assert self._consumer is not None
        low = self.settings.worker.max_buffered // 4
        ready = [(t, p) for t, p in self._paused
                 if p not in self.tasks or self.tasks[p].queued(self.topic_logical[t]) <= low]
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

    # ---- one batch, one transaction ---------------------------------------------------------
    def _run_tasks(self, out: TaskOutput[Message]) -> None:
        limit = 1 if self._isolating else self.settings.worker.batch_size
        now_ms = time.monotonic() * 1000
        t = self.settings.topics
        lags: dict[tuple[str, int], int | None] = {}  # one position/watermark look-up per drain, not per record

        def lag(logical: str, p: int) -> int | None:
            if (logical, p) not in lags:
                lags[(logical, p)] = self._unfetched(t.name(logical), p)
            return lags[(logical, p)]

        for p, task in self.tasks.items():
            left = limit - len(out.done)
            if left <= 0:
                break
            if len(task):
                before = task.merger.enforced
                task.run(out, left, lambda lt, p=p: lag(lt, p), now_ms)
                self.stats.enforced += task.merger.enforced - before
        self._full_batch_ready = len(out.done) >= limit

    def _process_batch(self, ticks: list[int]) -> None:
        assert self._consumer is not None and self._producer is not None and self._checkpoint is not None
        producer = self._producer
        out = self._out
        out.clear()
        stats = self.stats
        clock = time.perf_counter
        producer.begin_transaction()
        try:
            started = clock()
            self._apply_global(out)
            self._run_tasks(out)
            processed_at = clock()
            stats.timed("process", processed_at - started)
            first = out.done[0] if out.done else None
            self._in_flight = (len(out.done), (first.topic(), first.partition(), first.offset()) if first else None)
            batch_commands = self._emit(out)
            batch_memberships = self._emit_memberships(out)
            for d in out.dead_letters:
                self._dead_letter(d.ref, d.reason, d.detail)
            stats.timed("emit", clock() - processed_at)
            now_ms = int(time.time() * 1000)
            for p in ticks:
                self._produce(self.clock_topic, f"clock-{p}".encode(),
                              serde.encode("ClockTick", {"partition": p, "tick_at": now_ms, "source": self.instance_id}, self.clock_topic),
                              partition=p)
            processed: dict[tuple[str, int], int] = {}
            touched: set[int] = set()
            for m in out.done:
                touched.add(m.partition())
                if m.__class__ is not GlobalRecord:  # global topics are read outside the group: no offsets
                    processed[(m.topic(), m.partition())] = m.offset() + 1
                else:  # applied to every partition task: every one of them may have changed state
                    touched.update(self.tasks)
            offsets = [TopicPartition(t, p, off) for (t, p), off in processed.items()]
            self._checkpoint.commit(lambda: {p: self.tasks[p].changes() for p in touched if p in self.tasks}, offsets, self._consumer.consumer_group_metadata(), batch_commands + batch_memberships,
                                    lambda p, key, value: self._state_too_large(p, key, value, out.done),
                                    stats.timed)
        except KafkaException as exc:
            kerr = exc.args[0] if exc.args else None
            if kerr is not None and hasattr(kerr, "txn_requires_abort") and kerr.txn_requires_abort():
                log.warning("transaction aborted (%s); rebuilding state from the changelog", kerr)
                resumable(lambda: producer.abort_transaction(30), "abort_transaction")  # a stalled broker: again
                self._aborted()
                return
            raise
        self._committed(len(out.done))
        self.stats.transactions += 1
        self.stats.events += len(out.done)
        self.stats.commands += batch_commands
        self.stats.memberships += batch_memberships
        if self.observer is not None:
            by_topic: dict[str, int] = {}
            for m in out.done:
                by_topic[m.topic()] = by_topic.get(m.topic(), 0) + 1
            self.observer.on_batch(self, by_topic)

    def _emit(self, out: TaskOutput[Message]) -> int:
        """Produce the batch's commands to the commands partition of the input that caused them."""
        assert self._checkpoint is not None
        emitted = 0
        on_delivery = self._checkpoint.on_command_delivered
        by_flow = self.stats.by_flow
        for m, cmd in out.commands:
            assert m is not None
            p = m.partition()
            already = self._already_emitted.get(p)
            if already and cmd["command_id"] in already:
                already.discard(cmd["command_id"])
                continue
            try:
                self._produce(self.commands_topic, cmd["customer_id"].encode(), serde.encode("EmailCommand", cmd, self.commands_topic),
                              partition=p, timestamp=cmd["created_at"], on_delivery=on_delivery)
            except KafkaException as exc:  # refused by the client (e.g. its message.max.bytes): this record only
                if exc.args and getattr(exc.args[0], "fatal", lambda: False)():
                    raise
                self._dead_letter(m, "produce_failed", f"{cmd['flow']} step {cmd['step']}: {exc}")
                continue
            by_flow[cmd["flow"]] = by_flow.get(cmd["flow"], 0) + 1
            emitted += 1
        return emitted

    def _emit_memberships(self, out: TaskOutput[Message]) -> int:
        """Audience joins and leaves of the batch, in the same transaction as the state that holds them
        (and, like commands, flushed before that state is written)."""
        topic = self.audiences_topic
        for ev in out.memberships:
            self._produce(topic, membership_key(ev["audience"], ev["customer_id"]).encode(),
                          serde.encode("AudienceMembership", ev, topic), timestamp=ev["changed_at"])
        return len(out.memberships)

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

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        """Produce, waiting for room when the local queue is full (never an error for that)."""
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _state_too_large(self, partition: int, key: str, value: bytes | None, done: list[Message]) -> None:
        """A customer's state grew past what the changelog accepts: it is not written (the changelog
        keeps the last state that fit), and the records of this batch that made it grow are
        dead-lettered with the reason, so the fact is visible and replayable."""
        self.stats.oversized_state += 1
        size = len(value) if value else 0
        log.error("partition %d: state of %r is %d bytes, over limits.max_message_bytes (%d); not written",
                  partition, key[:80], size, self.limits.max_message_bytes)
        kb = key.encode()
        for m in done:
            if m.partition() == partition and m.key() == kb:
                self._dead_letter(m, "state_too_large", f"the customer's state would be {size} bytes, over "
                                                        f"limits.max_message_bytes ({self.limits.max_message_bytes})")

    def _dead_letter(self, ref: Message, reason: str, detail: str) -> None:
        m = ref.message if isinstance(ref, GlobalRecord) else ref
        dl = dead_letter(self.limits, topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(),
                         value=m.value(), reason=reason, detail=detail, component="processor")
        self._produce(m.topic() + ".dlq", dl["original_key"], serde.encode("DeadLetter", dl, m.topic() + ".dlq"))
        self.stats.dead_letters += 1
        self.stats.dead_letter_reasons[reason] = self.stats.dead_letter_reasons.get(reason, 0) + 1
        log.debug("dead-lettered %s[%d]@%d: %s: %s", m.topic(), m.partition(), m.offset(), reason, detail[:200])
        if self.observer is not None and hasattr(self.observer, "on_dead_letter"):
            self.observer.on_dead_letter(m.topic())

