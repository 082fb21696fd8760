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
   reason; a command that could not be produced (over ``limits.max_message_bytes``, by the one rule
   in ``limits.command_oversize``) is a dead letter of the record that caused it.

A process holds its tasks in a ``TaskManager`` (streams/runtime/tasks.py), the one thing a driver
calls; a global record's fan-out to every task lives there.

Modelled on Kafka Streams' StreamTask (record queues per partition, the smallest-timestamp head) and
tested like its TopologyTestDriver: records in, time advanced, outputs asserted, no broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from streams.config import ConfigError, Settings
from streams.core.audiences import Membership
from streams.core.engine import PartitionEngine
from streams.runtime.limits import Refusal, admit, clamp, command_oversize
from streams.runtime.merge import MERGE_ORDERS, PartitionMerger, Pending, event_time_of
from streams.kafka.topics import INPUT_TOPICS

R = TypeVar("R")  # the driver's handle on a record: a Kafka message, a line number, ...


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
    and leaves, in order), ``done`` — every record handed to the engine or dead-lettered, in
    processing order — and ``touched``: the partitions whose state may have changed (filled by the
    ``TaskManager``)."""

    commands: list[tuple[R | None, dict[str, Any]]] = field(default_factory=list)
    dead_letters: list[DeadLetter[R]] = field(default_factory=list)
    done: list[R] = field(default_factory=list)
    memberships: list[Membership] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)

    def clear(self) -> None:
        # each list only when it holds something: a driver clears once per record (the hot path)
        if self.commands:
            self.commands.clear()
        if self.dead_letters:
            self.dead_letters.clear()
        if self.done:
            self.done.clear()
        if self.memberships:
            self.memberships.clear()
        if self.touched:
            self.touched.clear()

    def take(self, other: "TaskOutput[R]") -> None:
        """What another partition's task produced for the same global record: its commands,
        memberships and its own processing errors (an admission refusal and ``done`` are the same
        record's in every partition, already here once)."""
        self.commands.extend(other.commands)
        self.memberships.extend(other.memberships)
        self.dead_letters.extend(d for d in other.dead_letters if not d.admission)


class _Offered(Generic[R]):
    """A record as queued for the merge (one per record: a plain class, see ``Pending``)."""

    __slots__ = ("logical", "ref", "record", "refusal")

    def __init__(self, logical: str, ref: R, record: dict[str, Any] | None, refusal: Refusal | None) -> None:
        self.logical = logical
        self.ref = ref
        self.record = record
        self.refusal = refusal

    def __repr__(self) -> str:
        return f"_Offered(logical={self.logical!r}, ref={self.ref!r}, record={self.record!r}, refusal={self.refusal!r})"


class PartitionTask(Generic[R]):
    def __init__(self, settings: Settings, partition: int, engine: PartitionEngine | None = None,
                 topics: tuple[str, ...] | list[str] = INPUT_TOPICS) -> None:
        self.settings = settings
        self.partition = partition
        self.limits = settings.limits
        self.engine = engine if engine is not None else PartitionEngine(settings, partition)
        self.merger: PartitionMerger[_Offered[R]] = PartitionMerger(
            list(topics), settings.worker.max_idle_ms, settings.worker.max_lag_wait_ms)
        if settings.worker.merge_order not in MERGE_ORDERS:
            raise ConfigError(f"worker.merge_order must be one of {', '.join(MERGE_ORDERS)}, "
                              f"not {settings.worker.merge_order!r}")
        self.by_arrival = settings.worker.merge_order == "arrival"
        self.clamped = 0

    # ---- input ------------------------------------------------------------------------------
    def offer(self, logical: str, ref: R, record: dict[str, Any] | None, *, key: bytes | None = None,
              size: int = 0, refusal: Refusal | None = None, arrived_at: int | None = None) -> None:
        """Queue one record of topic ``logical`` (or the reason it could not be read). ``key`` is
        the record key where the driver has one; ``size`` its encoded size; ``arrived_at`` its Kafka
        timestamp, the merge's order under ``worker.merge_order = "arrival"`` (a record without one
        is merged by its event time)."""
        item = self._admit(logical, ref, record, key, size, refusal)
        if item.refusal is not None:
            at = -1
        elif self.by_arrival and arrived_at is not None and arrived_at >= 0:
            at = arrived_at
        else:
            at = event_time_of(logical, record)  # type: ignore[arg-type]
        self.merger.add(Pending(logical, at, item))

    def apply(self, logical: str, ref: R, record: dict[str, Any] | None, out: TaskOutput[R],
              key: bytes | None = None, size: int = 0, refusal: Refusal | None = None) -> None:
        """``offer`` + ``run`` for a driver with nothing unfetched and nothing queued (a file read in
        order): the record is the only head, so it is processed at once — the same rule, without the
        queue."""
        if self.merger.size or refusal is not None or record is None:
            self.offer(logical, ref, record, key=key, size=size, refusal=refusal)
            self.run(out, self.merger.size)
            return
        refusal = admit(self.limits, logical, key, size, record)  # ``_refusal``, inlined: the hot path
        if refusal is not None:
            self._refused(ref, refusal, out)
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
            refusal = self._refusal(logical, record, key, size)
        elif record is not None:
            record = None
        return _Offered(logical, ref, record, refusal)

    def _refusal(self, logical: str, record: dict[str, Any] | None, key: bytes | None, size: int) -> Refusal | None:
        """Admission (streams/runtime/limits.py): why the record is refused, else ``None`` with its
        free text clamped (counted)."""
        refusal = admit(self.limits, logical, key, size, record)
        if refusal is None and record is not None and clamp(self.limits, record):
            self.clamped += 1
        return refusal

    def _refused(self, ref: R, refusal: Refusal, out: TaskOutput[R]) -> None:
        out.done.append(ref)
        out.dead_letters.append(DeadLetter(ref, refusal.reason, refusal.detail, admission=True))

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
            self._refused(item.ref, item.refusal or Refusal("invalid", "no record"), out)
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
        limits = self.limits
        for cmd in result.commands:
            size = command_oversize(limits, cmd)
            if size:
                out.dead_letters.append(DeadLetter(ref, "output_too_large", (
                    f"{cmd['flow']} step {cmd['step']} command {cmd['command_id']} would be about {size} bytes, "
                    f"over limits.max_message_bytes ({self.limits.max_message_bytes})")))
                continue
            out.commands.append((ref, cmd))

    # ---- state ------------------------------------------------------------------------------
    def changes(self) -> dict[str, bytes | None]:
        return self.engine.drain_changes()

    def clear(self) -> None:
        """Forget queued records (after an aborted transaction the driver rewinds and offers them again)."""
        self.merger.clear()

