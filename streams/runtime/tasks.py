"""The task manager: every ``PartitionTask`` of one process, and the only thing a driver calls.

A driver — the live worker, ``simulate`` (one process or many), ``replay`` (a worker on a replay
prefix), the faust runtime and the tests — reads records and writes what comes out; everything in
between goes through here:

- ``assign(p, engine)`` / ``revoke(p)``: the partitions this process runs (a file driver lets
  ``task(p)`` create them as records arrive);
- ``offer`` + ``run`` (records that wait for the event-time merge of their partition), or ``apply``
  (a driver with nothing unfetched: processed at once);
- ``apply_global``: a record of a global topic (not keyed by customer) to every assigned task, in
  partition order — its commands and memberships from every partition, an admission refusal and
  ``done`` once, since it is one record (the one place this fan-out is written);
- ``advance``: the clock of every task moves, due steps fire;
- ``changes``: the state changes of the partitions an output ``touched``.

Every output is a ``TaskOutput``: commands already size-checked (``limits.command_oversize``), dead
letters with their reasons, memberships, the records done, and the touched partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from streams.config import Settings
from streams.core.engine import PartitionEngine
from streams.kafka.topics import INPUT_TOPICS
from streams.runtime.limits import Refusal
from streams.runtime.task import PartitionTask, TaskOutput

R = TypeVar("R")

Lag = Callable[[str, int], "int | None"]  # (logical topic, partition) → records not fetched yet (None: unknown)


def _caught_up(logical: str, partition: int) -> int:
    return 0


class TaskManager(Generic[R]):
    def __init__(self, settings: Settings, topics: tuple[str, ...] | list[str] = INPUT_TOPICS) -> None:
        self.settings = settings
        self.topics = tuple(topics)
        self.tasks: dict[int, PartitionTask[R]] = {}
        self._scratch: TaskOutput[R] = TaskOutput()
        self._gone = (0, 0)  # clamped and enforced counts of tasks no longer here (counters only grow)

    # ---- assignment -------------------------------------------------------------------------
    def assign(self, partition: int, engine: PartitionEngine | None = None) -> PartitionTask[R]:
        """Run ``partition`` here with ``engine`` (restored state; a fresh engine when ``None``),
        replacing a task it may have had."""
        self.revoke(partition)
        task: PartitionTask[R] = PartitionTask(self.settings, partition, engine, self.topics)
        self.tasks[partition] = task
        return task

    def task(self, partition: int) -> PartitionTask[R]:
        """The partition's task, assigned with a fresh engine on first use (drivers that read a file)."""
        task = self.tasks.get(partition)
        return task if task is not None else self.assign(partition)

    def revoke(self, partition: int) -> bool:
        """Stop running ``partition`` here (its queued records are forgotten); whether it was assigned."""
        task = self.tasks.pop(partition, None)
        if task is None:
            return False
        clamped, enforced = self._gone
        self._gone = (clamped + task.clamped, enforced + task.merger.enforced)
        return True

    @property
    def partitions(self) -> list[int]:
        return sorted(self.tasks)

    @property
    def engines(self) -> dict[int, PartitionEngine]:
        return {p: task.engine for p, task in self.tasks.items()}

    def __contains__(self, partition: object) -> bool:
        return partition in self.tasks

    def __iter__(self) -> Iterator[int]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    # ---- input ------------------------------------------------------------------------------
    def offer(self, partition: int, logical: str, ref: R, record: dict[str, Any] | None, *,
              key: bytes | None = None, size: int = 0, refusal: Refusal | None = None,
              arrived_at: int | None = None) -> int | None:
        """Queue a record for the merge of its partition (``arrived_at``: its Kafka timestamp, see
        ``worker.merge_order``); returns how many records of ``logical`` the partition now holds (for
        back-pressure), or ``None`` when the partition is not assigned here (a fetch that raced a
        revoke: the next owner processes it)."""
        task = self.tasks.get(partition)
        if task is None:
            return None
        task.offer(logical, ref, record, key=key, size=size, refusal=refusal, arrived_at=arrived_at)
        return task.queued(logical)

    def queued(self, partition: int, logical: str) -> int:
        task = self.tasks.get(partition)
        return task.queued(logical) if task is not None else 0

    def pending(self) -> bool:
        """Whether any task holds queued records."""
        return any(len(task) for task in self.tasks.values())

    def run(self, out: TaskOutput[R], limit: int, lag: Lag = _caught_up, now_ms: float = 0.0) -> int:
        """Process up to ``limit`` queued records over the tasks, each in its merge order; returns how
        many were processed."""
        done = 0
        for p, task in self.tasks.items():
            if done >= limit:
                break
            if len(task):
                n = task.run(out, limit - done, lambda logical, p=p: lag(logical, p), now_ms)
                if n:
                    done += n
                    out.touched.add(p)
        return done

    def apply(self, partition: int, logical: str, ref: R, record: dict[str, Any] | None, out: TaskOutput[R],
              key: bytes | None = None, size: int = 0, refusal: Refusal | None = None) -> None:
        """``offer`` + ``run`` for a driver with nothing unfetched (see ``PartitionTask.apply``); the
        partition's task is assigned with a fresh engine on first use. (The hot path of ``simulate``:
        arguments are passed by position.)"""
        task = self.tasks.get(partition)
        if task is None:
            task = self.assign(partition)
        task.apply(logical, ref, record, out, key, size, refusal)
        out.touched.add(partition)

    def apply_global(self, logical: str, ref_of: Callable[[int], R], record: dict[str, Any] | None,
                     out: TaskOutput[R], *, size: int = 0, refusal: Refusal | None = None) -> None:
        """One record of a global topic to every assigned task, in partition order. What each partition
        does with it (commands, memberships, a processing error of its own) goes to ``out``; an
        admission refusal and ``done`` once (the first partition's), since it is one record.
        ``ref_of(p)``: the driver's handle on the record as applied to partition p."""
        scratch = self._scratch
        first = True
        for p in sorted(self.tasks):
            task = self.tasks[p]
            if first:
                task.apply_global(logical, ref_of(p), record, out, size=size, refusal=refusal)
                first = False
            else:
                scratch.clear()
                task.apply_global(logical, ref_of(p), record, scratch, size=size, refusal=refusal)
                out.take(scratch)
            out.touched.add(p)

    def advance(self, clock_ms: int, out: TaskOutput[R]) -> None:
        """Move every task's clock to ``clock_ms``, in partition order; due steps fire."""
        for p in sorted(self.tasks):
            self.tasks[p].advance(clock_ms, out)
            out.touched.add(p)

    # ---- state ------------------------------------------------------------------------------
    def changes(self, partitions: set[int] | list[int]) -> dict[int, dict[str, bytes | None]]:
        """The state changes of these partitions since they were last taken (assigned ones only)."""
        return {p: self.tasks[p].changes() for p in partitions if p in self.tasks}

    def clear(self) -> None:
        """Forget every queued record (the driver rewinds and offers them again)."""
        for task in self.tasks.values():
            task.clear()

    @property
    def clamped(self) -> int:
        """Records whose free text was clamped, over the life of the process."""
        return self._gone[0] + sum(task.clamped for task in self.tasks.values())

    @property
    def enforced(self) -> int:
        """Records processed while a topic of their partition had none (streams/runtime/merge.py)."""
        return self._gone[1] + sum(task.merger.enforced for task in self.tasks.values())
