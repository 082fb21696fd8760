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
and feeds the same engine.  On assignment the partitions are paused in the rebalance callback and
their engines rebuilt from the changelog (read_committed, to the end the fetch reports) in the loop's
next turn, all partitions of the assignment in one read; they are resumed once restored, so no input
of *p* is fetched before its state is there.

The loop joins parts that each do one job: ``Intake`` (streams/runtime/intake.py: fetch, decode,
pause/resume, lag), ``GlobalReader`` (streams/runtime/global_reader.py), the ``TaskManager``
(streams/runtime/tasks.py: every partition task; the only thing the loop hands records to), and the
``Checkpoint`` (streams/runtime/checkpoint.py: the commit order and the offsets it commits). What is
left here: rebalancing and restore, one transaction per batch (its writes are ``Outputs``,
streams/runtime/outputs.py), and the isolation of a poison record.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from schemas import serde
from streams.config import Settings
from streams.core.decisions import customer_state
from streams.core.engine import PartitionEngine
from streams.core.state import decode_customer, encode
from streams.kafka.partitioning import partition_for
from streams.kafka.io import consumer_config, producer_config
from streams.kafka.topics import GLOBAL_INPUT_TOPICS, INPUT_TOPICS, changelog_topic
from streams.runtime.checkpoint import Checkpoint
from streams.runtime.global_reader import GlobalReader, GlobalRecord
from streams.runtime.intake import Coords, Decoder, Intake
from streams.runtime.outputs import Outputs
from streams.runtime.restore import ChangelogRestore, OrphanedCommands
from streams.runtime.state_store import LocalStore, open_store
from streams.runtime.task import PartitionTask, TaskOutput
from streams.runtime.tasks import TaskManager

log = logging.getLogger("shopmail.processor")

EngineFactory = Callable[[Settings, int], PartitionEngine]
COMMIT_CHECK_RECORDS = 250  # records processed between two looks at the clock (~10 ms of work)
ISOLATE_AFTER_ABORTS = 2  # aborted transactions in a row before records are isolated one per transaction

__all__ = ["ProcessorRuntime", "RuntimeStats", "GlobalRecord", "EngineFactory", "ISOLATE_AFTER_ABORTS"]


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


RESTORING_RETRY_AFTER_S = 5  # a customer query during a partition's restore: ask again after this


class ProcessorRuntime:
    """Run the domain core over the input topics with exactly-once output."""

    def __init__(self, settings: Settings, bootstrap: str, *, instance_id: str | None = None,
                 engine_factory: EngineFactory | None = None, write_ticks: bool | None = None,
                 observer: Any | None = None) -> None:
        settings.worker.check_transactions()
        self.settings = settings
        self.bootstrap = bootstrap
        serde.configure(settings.registry)  # registry framing in and (registry.output_framing) out
        configured = instance_id or settings.worker.instance_id
        self.engine_factory: EngineFactory = engine_factory or (lambda s, p: PartitionEngine(s, p))
        self.write_ticks = settings.worker.tick_interval_s > 0 if write_ticks is None else write_ticks
        self.observer = observer  # optional metrics sink with on_batch(stats) / on_dead_letter(topic)
        t = settings.topics
        self.topic_logical = {t.name(lt): lt for lt in INPUT_TOPICS}
        self.global_logical = {t.name(lt): lt for lt in GLOBAL_INPUT_TOPICS}
        self.commands_topic = t.name("commands")
        self.changelog = changelog_topic(settings, "state")
        self.limits = settings.limits
        self.manager: TaskManager[Message] = TaskManager(settings, INPUT_TOPICS)
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
        self._to_restore: set[int] = set()  # assigned, paused, state not restored yet (the loop restores them)
        self._already_emitted: dict[int, set[str]] = {}  # partition → command ids visible after the marker
        self.stats = RuntimeStats()
        self.ready = threading.Event()
        self.decode = Decoder(settings, ISOLATE_AFTER_ABORTS)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._checkpoint: Checkpoint | None = None
        self._outputs: Outputs | None = None
        self._intake: Intake | None = None
        self._global: GlobalReader | None = None
        self._last_tick = 0.0
        self._needs_recovery = False
        self._out: TaskOutput[Message] = TaskOutput()
        # Crash-loop guard: after ISOLATE_AFTER_ABORTS aborted transactions in a row the runtime
        # processes one record per transaction; a record whose own transaction aborts is poison and
        # is dead-lettered when it comes round again, so no record can stop its partition.
        self._aborts_in_row = 0
        self._isolating = 0  # records still to process one per transaction
        self._in_flight: tuple[int, Coords | None] = (0, None)  # open transaction: record count, first record

    @property
    def tasks(self) -> dict[int, PartitionTask[Message]]:
        return self.manager.tasks

    @property
    def engines(self) -> dict[int, PartitionEngine]:
        return self.manager.engines

    def customer(self, customer_id: str) -> tuple[int, dict[str, Any]]:
        """An interactive query (the ops endpoint ``/customers/{id}``, on the ops thread): the customer's
        state in words and next due steps, from a copy taken by one ``encode`` call — a single C call
        under the interpreter lock, so the copy is whole and the loop is never locked or paused.
        (status, body): 503 ``restoring`` (with ``retry_after_s``) for a partition assigned here whose
        state is still being restored; 404 for a customer of a partition this worker does not run, or
        one it has no state of."""
        p = partition_for(customer_id, self.settings.topics.partitions)
        task = self.manager.tasks.get(p)
        restoring = sorted(set(self.restoring) | set(self._to_restore))  # copies: the loop replaces them
        if task is None and p in restoring:
            return 503, {"error": "restoring", "customer_id": customer_id, "partition": p,
                         "restoring_partitions": restoring, "retry_after_s": RESTORING_RETRY_AFTER_S}
        if task is None:
            return 404, {"error": "not_owned", "customer_id": customer_id, "partition": p,
                         "assigned_partitions": sorted(self.manager.tasks)}
        engine = task.engine
        clock = engine.clock_ms
        live = engine.customers.get(customer_id)
        if live is None:
            return 404, {"error": "unknown_customer", "customer_id": customer_id, "partition": p}
        copy = decode_customer(encode(live))
        return 200, {"partition": p, **customer_state(customer_id, copy, engine.flows, clock)}

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
        self._outputs = Outputs(s, self._producer, self.stats, self.observer, self.instance_id, self._already_emitted)
        self._checkpoint = Checkpoint(self._producer, self._outputs.produce, self.changelog, self.store, self.limits)
        self._outputs.on_command_delivered = self._checkpoint.on_command_delivered
        self._intake = Intake(s, self._consumer, self.topic_logical, self.manager, self.decode)
        if self.global_logical:
            self._global = GlobalReader(s, self.bootstrap, self.instance_id, self.global_logical, self.decode)

    def run(self, stop: threading.Event) -> None:
        self._make_clients()
        assert self._consumer is not None and self._intake is not None
        intake = self._intake
        self._consumer.subscribe(list(self.topic_logical), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("processor %s consuming %s", self.instance_id, ", ".join(self.topic_logical))
        try:
            stats = self.stats
            clock = time.perf_counter
            while not stop.is_set():
                self.beat_at = time.monotonic()
                if self._needs_recovery:
                    self._recover_after_abort()
                if self._to_restore:
                    self._restore_assigned()
                started = clock()
                msgs = intake.fetch()
                fetched = clock()
                stats.timed("fetch" if msgs else "idle", fetched - started)
                for m in msgs:
                    intake.offer(m)
                if self._global is not None and self.manager.tasks:  # nothing to apply them to before
                    self._global.read()
                stats.timed("decode", clock() - fetched)
                ticks = self._due_ticks()
                if not self.manager.pending() and not ticks and not (self._global and self._global.pending):
                    if self.manager.tasks and not msgs and not self._to_restore:
                        self.ready.set()
                    continue
                self._process_batch(ticks, started)
                intake.resume_drained()
        finally:
            self._close()

    def _beat(self) -> None:
        self.beat_at = time.monotonic()

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, high watermark − position) for the assigned input partitions (cached)."""
        return self._intake.lag() if self._intake is not None else []

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
        self._consumer = self._producer = None
        self._global = self._intake = None
        self.store.close()

    # ---- rebalancing: the callbacks only pause and forget; restore runs in the loop -----------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._intake is not None
        self._intake.assigned(partitions)
        consumer.assign(partitions)
        new = sorted({tp.partition for tp in partitions} - set(self.manager.tasks))
        self._intake.hold([tp for tp in partitions if tp.partition in new])
        if new:
            if not self._to_restore:
                self.restore_started = time.monotonic()
            self._to_restore.update(new)
            self.restoring = sorted(self._to_restore)
        log.info("assigned partitions %s (restoring %s)", sorted({tp.partition for tp in partitions}), new)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        remaining = {tp.partition for tp in consumer.assignment() if tp.partition not in gone} if partitions else set()
        for p in gone - remaining:
            if self.manager.revoke(p):
                self.store.release(p)  # the next owner may be another worker on this host
            self._to_restore.discard(p)
        self.restoring = sorted(self._to_restore)
        if self._intake is not None:
            self._intake.revoked(partitions)
        if self.observer is not None and hasattr(self.observer, "on_revoke"):
            self.observer.on_revoke([(tp.topic, tp.partition) for tp in partitions], gone - remaining)
        log.info("revoked partitions %s", sorted(gone))

    def _restore_assigned(self) -> None:
        """The loop's turn for newly assigned partitions: their state (all of them in one read), then
        the global topics again from the beginning (a new partition has not seen them through this
        worker yet), then their input."""
        partitions = set(self._to_restore)
        self._restore_partitions(sorted(partitions))
        self._to_restore -= partitions
        self.restoring = sorted(self._to_restore)
        if self._global is not None:
            self._global.rewind()
        assert self._intake is not None
        self._intake.release(partitions)

    def _restore_partitions(self, partitions: list[int]) -> dict[int, PartitionTask[Message]]:
        """Rebuild the partitions' engines together (one changelog read for all of them, one read of
        the commands partitions), not one partition after another, and assign them to the manager."""
        if not partitions:
            return {}
        if not self._to_restore:
            self.restore_started = time.monotonic()
        self.restoring = sorted(set(partitions) | self._to_restore)
        try:
            restored = self.restore.restore_many(sorted(partitions))
            orphans = self.orphans.visible_after({p: r.commands_marker for p, r in restored.items()})
        finally:
            self.restoring = sorted(self._to_restore - set(partitions))
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
            tasks[p] = self.manager.assign(p, r.engine)
        seconds = time.monotonic() - self.restore_started
        log.info("restored partitions %s in %.3f s", sorted(partitions), seconds)
        if self.observer is not None and hasattr(self.observer, "on_restore"):
            self.observer.on_restore(len(partitions), seconds)
        return tasks

    def _recover_after_abort(self) -> None:
        """After an aborted transaction the in-memory state ran ahead: rebuild it (the partitions held
        while it is read) and rewind to the committed offsets."""
        assert self._consumer is not None and self._intake is not None
        intake = self._intake
        partitions = set(self.manager.tasks)
        intake.hold([tp for tp in self._consumer.assignment() if tp.partition in partitions])
        self._restore_partitions(sorted(partitions))
        intake.rewind()
        intake.release(partitions)
        if self._global is not None:
            self._global.rewind()
        self._needs_recovery = False

    # ---- one batch, one transaction ---------------------------------------------------------
    def _due_ticks(self) -> list[int]:
        if not self.write_ticks or not self.manager.tasks:
            return []
        now = time.monotonic()
        if now - self._last_tick < self.settings.worker.tick_interval_s:
            return []
        self._last_tick = now
        return self.manager.partitions

    def _run_tasks(self, out: TaskOutput[Message], turn_started: float) -> None:
        """The queued records of one transaction: at most ``worker.batch_size``, and no more once
        ``worker.commit_interval_ms`` has passed since the loop's turn began (``turn_started``,
        ``time.perf_counter()`` before the fetch: the previous turn ended with its commit), as Kafka
        Streams commits once ``commit.interval.ms`` has passed since its last commit. The clock is read
        between chunks of ``COMMIT_CHECK_RECORDS`` records."""
        assert self._intake is not None
        w = self.settings.worker
        limit = 1 if self._isolating else w.batch_size
        lag = self._intake.lag_reader()
        now_ms = time.monotonic() * 1000
        deadline = turn_started + w.commit_interval_ms / 1000 if w.commit_interval_ms > 0 else float("inf")
        more_ready = True  # the last chunk was full: more records may be ready now
        while len(out.done) < limit:
            chunk = min(limit - len(out.done), COMMIT_CHECK_RECORDS)
            more_ready = self.manager.run(out, chunk, lag, now_ms) == chunk
            if not more_ready or time.perf_counter() >= deadline:
                break
        self.stats.enforced = self.manager.enforced
        self.stats.clamped = self.manager.clamped
        self._intake.full_batch_ready = more_ready  # the next fetch does not wait for records

    def _process_batch(self, ticks: list[int], turn_started: float) -> None:
        assert self._consumer is not None and self._producer is not None
        assert self._checkpoint is not None and self._outputs is not None
        producer = self._producer
        checkpoint = self._checkpoint
        outputs = self._outputs
        out = self._out
        out.clear()
        stats = self.stats
        clock = time.perf_counter
        producer.begin_transaction()
        try:
            started = clock()
            if self._global is not None:
                self._global.apply(self.manager, out)
            self._run_tasks(out, turn_started)
            processed_at = clock()
            stats.timed("process", processed_at - started)
            first = out.done[0] if out.done else None
            self._in_flight = (len(out.done), (first.topic(), first.partition(), first.offset()) if first else None)
            batch_commands = outputs.commands(out)
            batch_memberships = outputs.memberships(out)
            for d in out.dead_letters:
                outputs.dead_letter(d.ref, d.reason, d.detail)
            stats.timed("emit", clock() - processed_at)
            outputs.ticks(ticks, int(time.time() * 1000))
            checkpoint.processed(out.done)
            checkpoint.commit(lambda: self.manager.changes(out.touched), self._consumer.consumer_group_metadata(),
                              batch_commands + batch_memberships,
                              lambda p, key, value: outputs.state_too_large(p, key, value, out.done), stats.timed)
        except KafkaException as exc:
            kerr = exc.args[0] if exc.args else None
            if kerr is not None and hasattr(kerr, "txn_requires_abort") and kerr.txn_requires_abort():
                log.warning("transaction aborted (%s); rebuilding state from the changelog", kerr)
                checkpoint.abort()  # a stalled broker: called again
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

    def _aborted(self) -> None:
        """An aborted transaction: rebuild and rewind; a record that aborts alone is poison."""
        self.stats.aborted += 1
        self._needs_recovery = True
        self.manager.clear()
        self._aborts_in_row += 1
        count, first = self._in_flight
        if self._isolating and count == 1 and first is not None:
            self.decode.poison.add(first)
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
