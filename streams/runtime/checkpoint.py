"""The commit of one batch, in the one order that keeps the worker exactly-once on every broker.

Inside one Kafka transaction:
1. the batch's **commands** and audience changes (produced while the batch ran) are flushed — on the broker before the
   state that says they were emitted (see streams/runtime/restore.py for why this order matters on
   a broker that commits a dead producer's transaction);
2. the **changelog**: every changed key of every touched partition, plus the runtime marker (the
   commands partition's end) — each value checked against ``limits.max_message_bytes`` first;
3. the **input offsets** (``send_offsets_to_transaction``): the checkpoint owns them — the loop tells
   it which records a batch processed (``processed``), and they are committed or forgotten with the
   transaction (``commit``/``abort``);
4. **commit**; only then
5. the **local store** takes the changes, with the changelog offset they reach as its checkpoint,
   so it never holds uncommitted state.

An abort at any step leaves nothing of the batch visible (on Apache Kafka) and the caller rebuilds
state from the changelog and rewinds to the committed offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.config import LimitSettings
from streams.runtime.global_reader import GlobalRecord
from streams.runtime.limits import fits
from streams.runtime.restore import RUNTIME_KEY
from streams.runtime.state_store import LocalStore

log = logging.getLogger("shopmail.checkpoint")

Produce = Callable[..., None]
RESUME_ATTEMPTS = 10


def resumable(call: Callable[[], Any], what: str, attempts: int = RESUME_ATTEMPTS) -> None:
    """Run a transactional producer call, calling it again while it fails with a retriable error: a
    broker that stalls makes ``commit_transaction``/``abort_transaction`` time out with "retry call to
    resume", and librdkafka's contract is to call them again. Anything else (fatal, abortable, or still
    failing after ``attempts`` calls) is raised to the caller."""
    for attempt in range(1, attempts + 1):
        try:
            call()
            return
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if (attempt == attempts or not isinstance(err, KafkaError) or not err.retriable() or err.fatal()
                    or err.txn_requires_abort()):
                raise
            log.warning("%s did not finish (%s): calling it again (%d of %d)", what, err, attempt + 1, attempts)


class Checkpoint:
    def __init__(self, producer: Producer, produce: Produce, changelog: str, store: LocalStore,
                 limits: LimitSettings) -> None:
        self.producer = producer
        self.produce = produce  # the runtime's produce (waits for queue room)
        self.changelog = changelog
        self.store = store
        self.limits = limits
        self.changelog_end: dict[int, int] = {}  # partition → next changelog offset after our last write
        self.commands_end: dict[int, int] = {}  # partition → end of the commands partition we wrote
        self.offsets: dict[tuple[str, int], int] = {}  # (topic, partition) → next offset, this transaction

    def processed(self, done: Iterable[Any]) -> None:
        """The records a batch processed: their next offsets go with the transaction. A global record
        is read outside the group and has none."""
        offsets = self.offsets
        for m in done:
            if type(m) is not GlobalRecord:
                offsets[(m.topic(), m.partition())] = m.offset() + 1

    def abort(self) -> None:
        """Abort the open transaction (again while a stalled broker asks for it) and forget its offsets."""
        self.offsets.clear()
        resumable(lambda: self.producer.abort_transaction(30), "abort_transaction")

    def restored(self, partition: int, changelog_end: int, commands_end: int) -> None:
        self.changelog_end[partition] = changelog_end
        self.commands_end[partition] = commands_end

    def on_command_delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            p = msg.partition()
            self.commands_end[p] = max(self.commands_end.get(p, 0), msg.offset() + 1)

    def _on_changelog_delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            p = msg.partition()
            self.changelog_end[p] = max(self.changelog_end.get(p, 0), msg.offset() + 1)

    def commit(self, changes: Callable[[], dict[int, dict[str, bytes | None]]],
               group_metadata: Any, outputs: int, on_oversized: Callable[[int, str, bytes | None], None],
               timed: Callable[[str, float], None] = lambda stage, seconds: None) -> None:
        """Steps 1–5 for a begun transaction. ``changes()``: partition → changelog key → value (None:
        delete), drained after the commands are flushed; a value over the limit is not written and
        reported to ``on_oversized``. The offsets are those of the records ``processed`` since the
        last commit or abort. ``timed(stage, seconds)`` receives each step's wall time."""
        offsets = [TopicPartition(t, p, off) for (t, p), off in self.offsets.items()]
        producer = self.producer
        clock = time.perf_counter
        started = clock()
        if outputs:
            producer.flush(60)  # 1. commands (and audience changes) first
        flushed = clock()
        changed_by_partition = changes()
        for p, changed in changed_by_partition.items():  # 2. state
            for key, value in list(changed.items()):
                kb = key.encode()
                if not fits(self.limits, kb, value):
                    del changed[key]
                    on_oversized(p, key, value)
                    continue
                self.produce(self.changelog, kb, value, partition=p)
            # the marker goes last: its delivery report alone carries the partition's end offset
            # (delivery is in order within a partition, and a failed delivery fails the commit)
            marker = changed[RUNTIME_KEY] = str(self.commands_end.get(p, 0)).encode()
            self.produce(self.changelog, RUNTIME_KEY.encode(), marker, partition=p,
                         on_delivery=self._on_changelog_delivered)
        produced = clock()
        if offsets:  # 3. input offsets
            resumable(lambda: producer.send_offsets_to_transaction(offsets, group_metadata, 30), "sending offsets")
        sent = clock()
        resumable(lambda: producer.commit_transaction(60), "commit_transaction")  # 4.
        self.offsets.clear()
        producer.poll(0)
        for p, changed in changed_by_partition.items():  # 5. local store, committed state only
            self.store.apply(p, changed, self.changelog_end.get(p, 0))
        timed("flush", flushed - started)
        timed("changelog", produced - flushed)
        timed("offsets", sent - produced)
        timed("commit", clock() - sent)
