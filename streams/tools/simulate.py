"""`shopmail simulate`: the domain core over a JSONL file, no broker.

Each input line is ``{"topic": "<topic name>", "value": {<event in JSON form>}}``, applied in file
order. Customers are spread over ``topics.partitions`` engines with Kafka's murmur2 partitioner, so
the commands equal what the workers emit for the same log. After the last line every engine's clock
advances to ``until`` and due steps fire. Bad lines are reported (with their line number) and skipped.

Output: one command per line in its canonical JSON form (sorted keys), in firing order. With N worker
processes each reads the whole file, keeps the lines of its partitions (``p % N``), and spools its
commands keyed by the input line that fired them; the spools are merged by that key, so the output is
byte-identical to one process. A worker that dies fails the run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from schemas import serde
from streams.config import Settings
from streams.core.engine import PartitionEngine
from streams.kafka.partitioning import partition_for
from streams.runtime.task import PartitionTask, TaskOutput
from streams.runtime.tasks import TaskManager
from streams.kafka.topics import GLOBAL_INPUT_TOPICS, INPUT_TOPICS, VALUE_SCHEMA

log = logging.getLogger("shopmail.simulate")


@dataclass
class BadLine:
    line: int
    reason: str
    detail: str

    def as_json(self) -> str:
        return json.dumps({"error": self.reason, "line": self.line, "detail": self.detail})


@dataclass
class SimulationResult:
    commands: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    events: int = 0
    count: int = 0  # commands emitted (also when not kept)
    engines: dict[int, PartitionEngine] = field(default_factory=dict)


def default_workers(settings: Settings) -> int:
    """``simulate --workers 0``: one process per CPU, at most one per partition."""
    return min(os.cpu_count() or 1, settings.topics.partitions)


def engine_counters(engines: Iterable[PartitionEngine]) -> dict[str, int]:
    """The engines' counters summed: ``command:<flow>``, ``holdout:<flow>``,
    ``dropped:<flow>:<reason>`` (steps not sent, e.g. no consent, expired, ``late_start``),
    ``late_applied:<topic>`` and ``lateness:<topic>:<le_1h|le_1d|le_7d|gt_7d>`` (events behind the
    watermark, applied all the same), ``future:<topic>`` (too far ahead of the last clock tick to move
    the clock), ``stale:<topic>`` (late facts a newer one superseded), ``duplicate``, ``clock_repaired``."""
    out: dict[str, int] = {}
    for e in engines:
        for key, n in e.stats.items():
            out[key] = out.get(key, 0) + n
    return dict(sorted(out.items()))


def counter_totals(counters: dict[str, int], prefix: str) -> dict[str, int]:
    """``{"late_applied:carts": 3, ...}`` → ``{"carts": 3, ...}`` for one counter prefix."""
    start = len(prefix) + 1
    return {k[start:]: n for k, n in counters.items() if k.startswith(prefix + ":")}


def topic_lookup(settings: Settings) -> dict[str, str]:
    """Topic name (with or without the configured prefix) → logical topic."""
    t = settings.topics
    logical = INPUT_TOPICS + GLOBAL_INPUT_TOPICS
    out = {str(getattr(t, lt)): lt for lt in logical}
    out.update({t.name(lt): lt for lt in logical})
    return out


class Simulator:
    """The partition tasks of a log read from a file, in a ``TaskManager`` (the one the worker drives),
    which admits, orders and processes every record. ``partitions``: the ones this process runs (all
    of them unless it is one of several processes)."""

    def __init__(self, settings: Settings, partitions: Iterable[int] | None = None) -> None:
        self.settings = settings
        self.partitions = settings.topics.partitions
        self.owned = sorted(range(self.partitions) if partitions is None else partitions)
        self.manager: TaskManager[int] = TaskManager(settings)
        self._apply = self.manager.apply
        self.lookup = topic_lookup(settings)
        self.out: TaskOutput[int] = TaskOutput()
        self._partition_of: dict[str, int] = {}  # murmur2 of a customer id, computed once
        self._all_assigned = False

    @property
    def tasks(self) -> dict[int, PartitionTask[int]]:
        return self.manager.tasks

    @property
    def engines(self) -> dict[int, PartitionEngine]:
        return self.manager.engines

    def task(self, p: int) -> PartitionTask[int]:
        return self.manager.task(p)

    def partition(self, customer_id: str) -> int:
        p = self._partition_of.get(customer_id)
        if p is None:
            p = self._partition_of[customer_id] = partition_for(customer_id, self.partitions)
        return p

    def target(self, logical: str, record: dict[str, Any]) -> int:
        """The partition a record belongs to: its customer's, or the one a tick names."""
        if logical == "clock":  # a tick is a partition's clock: apply it to the partition it names
            return int(record["partition"]) % self.partitions
        return self.partition(record["customer_id"])

    def apply(self, logical: str, record: dict[str, Any], line: int = 0, size: int = 0) -> TaskOutput[int]:
        """One record of input line ``line`` (its ``size`` in bytes): what it caused (cleared per call).
        A record of a global topic (inventory) goes to every partition this process runs."""
        out = self.out
        out.clear()
        if logical in GLOBAL_INPUT_TOPICS:
            if not self._all_assigned:
                for p in self.owned:
                    self.manager.task(p)
                self._all_assigned = True
            self.manager.apply_global(logical, lambda p: line, record, out, size=size)
            return out
        if logical == "clock":  # ``target``, inlined: this is the hot path of ``simulate``
            p = int(record["partition"]) % self.partitions
        else:
            p = self._partition_of.get(record["customer_id"])  # type: ignore[assignment]
            if p is None:
                p = self.partition(record["customer_id"])
        self._apply(p, logical, line, record, out, None, size)
        return out

    def advance(self, until_ms: int) -> TaskOutput[int]:
        out = self.out
        out.clear()
        self.manager.advance(until_ms, out)
        return out


def parse_lines(lines: Iterable[Any], settings: Settings, numbered: bool = False
                ) -> Iterator[tuple[int, str | None, dict[str, Any] | None, BadLine | None, int]]:
    """(line number, logical topic, record, bad line, the record's encoded size) per non-blank line."""
    lookup = topic_lookup(settings)
    limit = settings.limits.max_record_bytes
    for n, raw in (lines if numbered else enumerate(lines, start=1)):
        if raw.strip():
            logical, record, bad = parse_line(n, raw, lookup)
            yield n, logical, record, bad, record_size(logical, record, len(raw), limit)


def record_size(logical: str | None, record: dict[str, Any] | None, line_bytes: int, limit: int) -> int:
    """The record's Avro size where it matters: a JSON line is never shorter than the Avro encoding of
    its record, so a line within the limit needs no encoding (0: within the limit)."""
    if line_bytes <= limit or logical is None or record is None:
        return 0
    return len(serde.encode(VALUE_SCHEMA[logical], record))


def parse_line(n: int, raw: Any, lookup: dict[str, str]
               ) -> tuple[str | None, dict[str, Any] | None, BadLine | None]:
    """(logical topic, record, None) for a good line, (None, None, BadLine) for a bad one."""
    try:
        obj = orjson.loads(raw)
    except ValueError as exc:  # orjson.JSONDecodeError
        return None, None, BadLine(n, "bad_line", f"{type(exc).__name__}: {exc}")
    return parse_object(n, obj, lookup)


def parse_object(n: int, obj: Any, lookup: dict[str, str]
                 ) -> tuple[str | None, dict[str, Any] | None, BadLine | None]:
    """``parse_line`` of a line already parsed as JSON."""
    try:
        topic = obj["topic"]
        logical = lookup.get(topic)
        if logical is None:
            raise serde.SerdeError("unknown_topic", f"{topic!r} is not an input topic")
        return logical, serde.from_json(VALUE_SCHEMA[logical], obj["value"]), None
    except serde.SerdeError as exc:
        return None, None, BadLine(n, exc.reason, exc.detail)
    except (ValueError, KeyError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        return None, None, BadLine(n, "bad_line", f"{type(exc).__name__}: {exc}")


def simulate(lines: Iterable[str], settings: Settings, until_ms: int | None = None,
             on_bad: Any = None, on_command: Any = None, keep: bool = True,
             on_membership: Any = None) -> SimulationResult:
    """``keep=False`` streams commands to ``on_command`` only (a year of a large shop does not fit);
    ``on_membership`` gets each audience join and leave."""
    sim = Simulator(settings)
    result = SimulationResult()

    def emitted(out: TaskOutput[int]) -> None:
        for _, cmd in out.commands:
            result.count += 1
            if keep:
                result.commands.append(cmd)
            if on_command:
                on_command(cmd)
        if on_membership:
            for m in out.memberships:
                on_membership(m)

    for n, logical, record, bad, size in parse_lines(lines, settings):
        if bad is not None:
            result.bad_lines.append(bad)
            if on_bad:
                on_bad(bad)
            continue
        assert logical is not None and record is not None
        result.events += 1
        out = sim.apply(logical, record, n, size)
        for dead in out.dead_letters:
            bad = BadLine(n, dead.reason, dead.detail)
            result.bad_lines.append(bad)
            if on_bad:
                on_bad(bad)
        emitted(out)
    if until_ms is not None:
        emitted(sim.advance(until_ms))
    result.engines = sim.engines
    return result


_COMMAND_FIELDS = frozenset(f["name"] for f in serde.registry().get("EmailCommand").raw["fields"])


def command_line(cmd: dict[str, Any]) -> bytes:
    """One output line: the command's canonical JSON form (``serde.dumps_json``). The engine builds
    every field of the schema with its type, so when the field set matches the record is written
    as it is; anything else takes the validating path."""
    if cmd.keys() == _COMMAND_FIELDS:
        return serde.canonical_json_bytes(cmd, newline=True)
    return (serde.dumps_json("EmailCommand", cmd) + "\n").encode()


# ---- parallel: partitions are independent, exactly as on the workers --------------------------

_CUSTOMER = re.compile(rb'"customer_id"\s*:\s*"((?:[^"\\]|\\.)*)"')
_CUSTOMER_COMPACT = b'"customer_id":"'
_PARTITION = re.compile(rb'"partition"\s*:\s*(\d+)')
_KEY = b"%019d\t%06d\t"  # input line (or final advance), sequence: fixed width, so text order = key order
_KEY_LEN = 27
GLOBAL_SEQ = 10_000  # a global record's commands are keyed (line, partition × this + seq): partition order
_UNTIL = 10**18  # key of commands fired by the final clock advance (after every input line)
IO_BUFFER = 1 << 20  # gigabytes go through the input, the spools and the output: few large syscalls


class OutputFile:
    """An output written to a temporary file beside ``path`` and moved onto it only by :meth:`commit`
    (one rename on the same file system): a run that fails or finds nothing leaves an existing file
    as it was. What is not a regular file (``/dev/null``, a named pipe) is written directly. A path whose
    directory is missing, or that is a directory, fails at :meth:`open`, before any work, naming ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp: Path | None = None
        self._file: BinaryIO | None = None

    def open(self) -> BinaryIO:
        if self.path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(self.path))
        if self.path.exists() and not self.path.is_file():  # /dev/null, a pipe: written to, never replaced
            self._file = open(self.path, "wb", buffering=IO_BUFFER)  # noqa: SIM115 - closed by commit or discard
            return self._file
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        except OSError as exc:  # the directory is missing or closed to us: name the file asked for
            raise type(exc)(exc.errno, exc.strerror, str(self.path)) from None
        self._tmp = Path(tmp)
        self._file = open(fd, "wb", buffering=IO_BUFFER)  # noqa: SIM115 - closed by commit or discard
        return self._file

    def commit(self) -> None:
        assert self._file is not None, "open() first"
        self._file.close()
        if self._tmp is None:  # not a regular file: written in place
            return
        mode = self.path.stat().st_mode & 0o7777 if self.path.exists() else 0o666 & ~_umask()
        os.chmod(self._tmp, mode)  # mkstemp makes it 0600: keep the replaced file's (or the usual) mode
        os.replace(self._tmp, self.path)
        self._tmp = None

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def watch_position(f: BinaryIO, report: Callable[[int], None], every_s: float = 0.25) -> Callable[[], None]:
    """Report how far ``f`` has been read (bytes, the OS file position) every ``every_s`` from a
    background thread, so the reading loop itself does no progress work; returns the stop function."""
    raw = getattr(f, "raw", f)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every_s):
            try:
                report(raw.tell())
            except (OSError, ValueError):  # closed
                return

    threading.Thread(target=watch, name="simulate-progress", daemon=True).start()
    return stop.set


class _Router:
    """The engine partition a raw line belongs to, without parsing the JSON (each worker reads the
    whole file and keeps its own lines); ``None`` when the line names no customer or partition."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.cache: dict[bytes, int] = {}  # customer id as written (escapes included) → partition

    def __call__(self, line: bytes) -> int | None:
        m = _CUSTOMER.search(line)
        if m:
            raw = m.group(1)
            p = self.cache.get(raw)
            if p is None:
                key = orjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
                p = self.cache[raw] = partition_for(key, self.partitions)
            return p
        m = _PARTITION.search(line)
        return int(m.group(1)) % self.partitions if m else None


def _spool_by_partition(write: Any, sim: Simulator, out: TaskOutput[int], key: Any) -> int:
    """Spool commands that several partitions fired for one input (a global record, the final
    advance), each keyed by ``key(partition, seq)``: the merge puts them in partition order, as one
    process writes them. A command's partition is its customer's."""
    seqs: dict[int, int] = {}
    for _, cmd in out.commands:
        q = sim.partition(cmd["customer_id"])
        seq = seqs[q] = seqs.get(q, -1) + 1
        write(key(q, seq) + command_line(cmd))
    return len(out.commands)


def _worker(settings: Settings, path: str, w: int, workers: int, until_ms: int | None, spool: str,
            outbox: Any, positions: Any = None) -> None:
    """Runs the partitions ``p % workers == w`` over the whole input; writes "<key><command>" lines
    (in key order) to ``spool``. Lines that name no partition (bad lines) belong to worker 0; a global
    record goes to every worker, each applying it to its own partitions."""
    import gc

    gc.disable()  # the state has no reference cycles worth collecting; a full pass costs seconds
    partitions = settings.topics.partitions
    sim = Simulator(settings, range(w, partitions, workers))
    route = _Router(partitions)
    limit = settings.limits.max_record_bytes
    bad: list[BadLine] = []
    events = count = 0
    try:
        with open(path, "rb", buffering=IO_BUFFER) as src, open(spool, "wb", buffering=IO_BUFFER) as out:
            if positions is not None:
                watch_position(src, lambda pos: positions.__setitem__(w, pos))
            lookup = topic_lookup(settings)
            known = route.cache  # ids seen before: a compact `"customer_id":"…"` is looked up inline
            skip = len(_CUSTOMER_COMPACT)
            write = out.write
            for n, line in enumerate(src, start=1):
                start = line.find(_CUSTOMER_COMPACT)
                p = known.get(line[start + skip:line.find(b'"', start + skip)]) if start >= 0 else None
                if p is None:
                    if not line.strip():
                        continue
                    p = route(line)
                    if p is None:  # no customer, no partition: a global record (every worker) or a bad line
                        logical, record, err = parse_line(n, line, lookup)
                        if err is None and logical in GLOBAL_INPUT_TOPICS:
                            assert record is not None
                            events += w == 0  # counted once, as in ``simulate``
                            task_out = sim.apply(logical, record, n, record_size(logical, record, len(line), limit))
                            # a refusal is the same on every worker: reported once, like a bad line
                            bad.extend(BadLine(n, d.reason, d.detail) for d in task_out.dead_letters
                                       if w == 0 or not d.admission)
                            count += _spool_by_partition(write, sim, task_out,
                                                         lambda q, seq, n=n: _KEY % (n, q * GLOBAL_SEQ + seq))
                            continue
                        p = 0  # bad lines: worker 0
                if p % workers != w:
                    continue
                logical, record, err = parse_line(n, line, lookup)
                if err is not None:
                    bad.append(err)
                    continue
                assert logical is not None and record is not None
                if sim.target(logical, record) % workers != w:
                    raise RuntimeError(f"line {n}: routed to worker {w} but its partition belongs to another")
                task_out = sim.apply(logical, record, n, record_size(logical, record, len(line), limit))
                events += 1
                for dead in task_out.dead_letters:
                    bad.append(BadLine(n, dead.reason, dead.detail))
                for seq, (_, cmd) in enumerate(task_out.commands):
                    write(_KEY % (n, seq) + command_line(cmd))
                    count += 1
            if until_ms is not None:
                count += _spool_by_partition(write, sim, sim.advance(until_ms),
                                             lambda q, seq: _KEY % (_UNTIL + q, seq))
        outbox.put((events, count, bad, None, engine_counters(sim.engines.values())))
        log.info("simulate worker %d: %d events, %d commands in %.1f s CPU", w, events, count, time.process_time())
    except Exception as exc:  # noqa: BLE001 — reported by the parent, which fails the run
        outbox.put((events, count, bad, f"worker {w}: {type(exc).__name__}: {exc}", {}))


def simulate_parallel(path: str, settings: Settings, until_ms: int | None, workers: int,
                      out: BinaryIO, progress: Callable[[int], None] | None = None
                      ) -> tuple[int, int, list[BadLine], dict[str, int]]:
    """Same output, same order as ``simulate``: each worker reads the whole file, runs its share of
    the partitions and spools its (ordered) commands; the spools are merged by the input line that
    fired them. Returns (events, commands, bad lines, engine counters). ``progress(bytes)``: how far
    the slowest worker has read the input, a few times a second."""
    import heapq
    import multiprocessing as mp
    import queue
    import tempfile

    ctx = mp.get_context("fork")
    spool_dir = tempfile.mkdtemp(prefix="shopmail-simulate-")
    spools = [os.path.join(spool_dir, f"w{w}.tsv") for w in range(workers)]
    outbox = ctx.Queue()
    positions = ctx.Array("q", workers, lock=False) if progress else None
    procs = [ctx.Process(target=_worker, args=(settings, str(path), w, workers, until_ms, spools[w], outbox,
                                               positions), daemon=True) for w in range(workers)]
    for proc in procs:
        proc.start()
    events = count = 0
    bad: list[BadLine] = []
    failures: list[str] = []
    counters: dict[str, int] = {}
    try:
        reported = 0
        while reported < len(procs):
            try:
                e, c, b, failure, worker_counters = outbox.get(timeout=0.25 if progress else 1.0)
            except queue.Empty:  # a worker killed outright (OOM, signal) never reports: do not wait forever
                if progress and positions is not None:
                    progress(min(positions))
                dead = [f"worker {w} died (exit code {p.exitcode})" for w, p in enumerate(procs)
                        if p.exitcode not in (None, 0)]
                if dead:
                    for proc in procs:
                        if proc.is_alive():
                            proc.terminate()
                    raise RuntimeError("; ".join(dead)) from None
                continue
            reported += 1
            events += e
            count += c
            bad.extend(b)
            if failure:
                failures.append(failure)
            for key, n in worker_counters.items():
                counters[key] = counters.get(key, 0) + n
        for proc in procs:
            proc.join()
        if failures:
            raise RuntimeError("; ".join(failures))
        merge_started = time.perf_counter()
        files = [open(p, "rb", buffering=IO_BUFFER) for p in spools]  # noqa: SIM115
        try:
            for line in heapq.merge(*files):  # fixed-width keys: byte order is (line, seq) order
                out.write(line[_KEY_LEN:])
        finally:
            for f in files:
                f.close()
        log.info("simulate merge: %.1f s", time.perf_counter() - merge_started)
    finally:
        for p in spools:
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(spool_dir)
    bad.sort(key=lambda b: b.line)
    return events, count, bad, dict(sorted(counters.items()))
