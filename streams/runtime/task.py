"""One partition task: the domain core of one partition, fed by every input topic of that partition.

Every driver — the live worker, ``simulate`` (one process or many), ``replay`` and the tests — hands
its records to a ``PartitionTask`` and gets back plain lists: the commands to emit (with the record
that caused each) and the dead letters (with their reasons). No driver keeps ordering, admission or
dead-letter rules of its own; a driver only reads records (Avro bytes, JSON lines) and writes what
comes out (a Kafka transaction, a file).

The rules, in order, for each record offered:
1. **Admission** (streams/runtime/limits.py): a record that could not be read, is over the size
   limit, has an empty customer id or a key that differs from it, or an overlong id, becomes a dead
   letter; free text is clamped.
2. **Ordering** (streams/runtime/merge.py): records wait per topic and are handed to the engine in
   event-time order across topics, holding back while a topic of the partition may still have older
   records to fetch (the driver says how many it has not fetched: ``lag``). A driver that has nothing
   unfetched (a file) gets every record processed at once, in the order offered.
3. **Processing**: the engine's commands; an engine error or rejection is a dead letter with the
   reason; a command that could not be produced (over ``limits.max_message_bytes``) is a dead letter
   of the record that caused it.

Modelled on Kafka Streams' StreamTask (record queues per partition, the smallest-timestamp head) and
tested like its TopologyTestDriver: records in, time advanced, outputs asserted, no broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from streams.config import Settings
from streams.core.audiences import Membership
from streams.core.engine import PartitionEngine
from streams.runtime.limits import Refusal, admit, clamp
from streams.runtime.merge import PartitionMerger, Pending, event_time_of
from streams.kafka.topics import INPUT_TOPICS

R = TypeVar("R")  # the driver's handle on a record: a Kafka message, a line number, ...

COMMAND_FIELDS_BYTES = 4096  # generous bound on a command's fields other than its context (ids ≤ 256 chars)


def caught_up(topic: str) -> int:
    """The lag of a driver that has nothing left to fetch (a file, a test)."""
    return 0


@dataclass
class DeadLetter(Generic[R]):
    ref: R
    reason: str
    detail: str
    admission: bool = False  # refused before the engine saw it (the same in every partition)


@dataclass
class TaskOutput(Generic[R]):
    """What a task produced since it was created or cleared: ``commands`` as (cause, command) in firing
    order (cause ``None``: fired by time advancing), ``dead_letters``, ``memberships`` (audience joins
    and leaves, in order), and ``done`` — every record handed to the engine or dead-lettered, in
    processing order."""

    commands: list[tuple[R | None, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[DeadLetter[R]] = field(default_factory=list)
    done: list[R] = field(default_factory=list)
    memberships: list[Membership] = field(default_factory=list)

    def clear(self) -> None:
        self.commands.clear()
        self.dead_letters.clear()
        self.done.clear()
        self.memberships.clear()

    def take(self, other: "TaskOutput[R]") -> None:
        """What another partition's task produced for the same global record: its commands,
        memberships and its own processing errors (an admission refusal and ``done`` are the same
        record's in every partition, already here once)."""
        self.commands.extend(other.commands)
        self.memberships.extend(other.memberships)
        self.dead_letters.extend(d for d in other.dead_letters if not d.admission)


@dataclass
class _Offered(Generic[R]):
    logical: str
    ref: R
    record: dict[str, Any] | None
    refusal: Refusal | None


class PartitionTask(Generic[R]):
    def __init__(self, settings: Settings, partition: int, engine: PartitionEngine | None = None,
                 topics: tuple[str, ...] | list[str] = INPUT_TOPICS) -> None:
        self.settings = settings
        self.partition = partition
        self.limits = settings.limits
        self.engine = engine if engine is not None else PartitionEngine(settings, partition)
        self.merger: PartitionMerger[_Offered[R]] = PartitionMerger(
            list(topics), settings.worker.max_idle_ms, settings.worker.max_lag_wait_ms)
        self.clamped = 0
        self._max_bytes = self.limits.max_message_bytes - self.limits.record_overhead_bytes

    # ---- input ------------------------------------------------------------------------------
    def offer(self, logical: str, ref: R, record: dict[str, Any] | None, *, key: bytes | None = None,
              size: int = 0, refusal: Refusal | None = None) -> None:
        """Queue one record of topic ``logical`` (or the reason it could not be read). ``key`` is
        the record key where the driver has one; ``size`` its encoded size."""
        item = self._admit(logical, ref, record, key, size, refusal)
        at = -1 if item.refusal is not None else event_time_of(logical, record)  # type: ignore[arg-type]
        self.merger.add(Pending(logical, at, item))

    def apply(self, logical: str, ref: R, record: dict[str, Any] | None, out: TaskOutput[R], *,
              key: bytes | None = None, size: int = 0, refusal: Refusal | None = None) -> None:
        """``offer`` + ``run`` for a driver with nothing unfetched and nothing queued (a file read in
        order): the record is the only head, so it is processed at once — the same rule, without the
        queue."""
        if self.merger.size or refusal is not None or record is None:
            self.offer(logical, ref, record, key=key, size=size, refusal=refusal)
            self.run(out, self.merger.size)
            return
        refusal = admit(self.limits, logical, key, size, record)
        if refusal is not None:
            out.done.append(ref)
            out.dead_letters.append(DeadLetter(ref, refusal.reason, refusal.detail, admission=True))
            return
        if clamp(self.limits, record):
            self.clamped += 1
        self._run_engine(logical, ref, record, out)

    def apply_global(self, logical: str, ref: R, record: dict[str, Any] | None, out: TaskOutput[R], *,
                     size: int = 0, refusal: Refusal | None = None) -> None:
        """A record of a global topic (not keyed by customer, e.g. inventory): applied at once, in its
        arrival order among this partition's records — it is not co-partitioned, so there is no
        event-time merge to take part in (Kafka Streams' global tables work the same way)."""
        item = self._admit(logical, ref, record, None, size, refusal)
        self._process(item, out)

    def _admit(self, logical: str, ref: R, record: dict[str, Any] | None, key: bytes | None, size: int,
               refusal: Refusal | None) -> _Offered[R]:
        if refusal is None:
            refusal = admit(self.limits, logical, key, size, record)
            if refusal is None and record is not None and clamp(self.limits, record):
                self.clamped += 1
        elif record is not None:
            record = None
        return _Offered(logical, ref, record, refusal)

    def queued(self, logical: str) -> int:
        return self.merger.queued(logical)

    def __len__(self) -> int:
        return len(self.merger)

    # ---- processing -------------------------------------------------------------------------
    def run(self, out: TaskOutput[R], limit: int, lag: Callable[[str], int | None] = caught_up,
            now_ms: float = 0.0) -> int:
        """Process up to ``limit`` queued records in merge order; returns how many."""
        ready = self.merger.drain(limit, lag, now_ms)
        for pending in ready:
            self._process(pending.item, out)
        return len(ready)

    def advance(self, clock_ms: int, out: TaskOutput[R]) -> None:
        """Move the partition's clock (``simulate --until``); due steps fire."""
        for cmd in self.engine.advance(clock_ms).commands:
            out.commands.append((None, cmd))
        memberships = self.engine.drain_memberships()
        if memberships:
            out.memberships.extend(memberships)

    def _process(self, item: _Offered[R], out: TaskOutput[R]) -> None:
        if item.refusal is not None or item.record is None:
            refusal = item.refusal or Refusal("invalid", "no record")
            out.done.append(item.ref)
            out.dead_letters.append(DeadLetter(item.ref, refusal.reason, refusal.detail, admission=True))
            return
        self._run_engine(item.logical, item.ref, item.record, out)

    def _run_engine(self, logical: str, ref: R, record: dict[str, Any], out: TaskOutput[R]) -> None:
        out.done.append(ref)
        try:
            result = self.engine.process(logical, record)
        except Exception as exc:  # noqa: BLE001 - a domain bug must not stall the partition
            out.dead_letters.append(DeadLetter(ref, "processing_error", f"{type(exc).__name__}: {exc}"))
            return
        if self.engine.audiences.events:
            out.memberships.extend(self.engine.drain_memberships())
        if result.rejections:
            for rej in result.rejections:
                out.dead_letters.append(DeadLetter(ref, rej.reason, rej.detail))
        for cmd in result.commands:
            size = self._oversize(cmd)
            if size:
                out.dead_letters.append(DeadLetter(ref, "output_too_large", (
                    f"{cmd['flow']} step {cmd['step']} command {cmd['command_id']} would be about {size} bytes, "
                    f"over limits.max_message_bytes ({self.limits.max_message_bytes})")))
                continue
            out.commands.append((ref, cmd))

    def _oversize(self, cmd: dict[str, Any]) -> int:
        """0 when the command fits in ``limits.max_message_bytes``; else about how large it would be."""
        n = len(cmd["context"])
        if n * 4 + COMMAND_FIELDS_BYTES <= self._max_bytes:  # fits even at 4 UTF-8 bytes a character: not counted
            return 0
        size = len(cmd["context"].encode()) + COMMAND_FIELDS_BYTES
        return size if size > self._max_bytes else 0

    # ---- state ------------------------------------------------------------------------------
    def changes(self) -> dict[str, bytes | None]:
        return self.engine.drain_changes()

    def clear(self) -> None:
        """Forget queued records (after an aborted transaction the driver rewinds and offers them again)."""
        self.merger.clear()


def apply_global_everywhere(tasks: Iterable[tuple[int, PartitionTask[R]]], logical: str, ref_of: Callable[[int], R],
                            record: dict[str, Any] | None, out: TaskOutput[R], scratch: TaskOutput[R], *,
                            size: int = 0, refusal: Refusal | None = None) -> None:
    """One record of a global topic to every partition task, in partition order: what each partition
    does with it (commands, memberships, a processing error of its own) goes to ``out``; an admission
    refusal and ``done`` once (the first partition's), since it is one record. ``ref_of(p)``: the driver's handle on it for partition p."""
    first = True
    for p, task in tasks:
        if first:
            task.apply_global(logical, ref_of(p), record, out, size=size, refusal=refusal)
            first = False
            continue
        scratch.clear()
        task.apply_global(logical, ref_of(p), record, scratch, size=size, refusal=refusal)
        out.take(scratch)
