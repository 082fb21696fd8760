"""`shopmail simulate`: the domain core over a JSONL file, no broker.

Each input line is ``{"topic": "<topic name>", "value": {<event in JSON form>}}``, applied in file
order. Customers are spread over ``topics.partitions`` engines with Kafka's murmur2 partitioner, so
the commands equal what the workers emit for the same log. After the last line every engine's clock
advances to ``until`` and due steps fire. Bad lines are reported (with their line number) and skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from schemas import serde
from streams.config import Settings
from streams.core.engine import PartitionEngine
from streams.partitioning import partition_for
from streams.topics import INPUT_TOPICS, VALUE_SCHEMA


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


def topic_lookup(settings: Settings) -> dict[str, str]:
    """Topic name (with or without the configured prefix) → logical topic."""
    t = settings.topics
    out = {str(getattr(t, lt)): lt for lt in INPUT_TOPICS}
    out.update({t.name(lt): lt for lt in INPUT_TOPICS})
    return out


class Simulator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partitions = settings.topics.partitions
        self.engines: dict[int, PartitionEngine] = {}
        self.lookup = topic_lookup(settings)

    def engine(self, p: int) -> PartitionEngine:
        e = self.engines.get(p)
        if e is None:
            e = self.engines[p] = PartitionEngine(self.settings, p)
        return e

    def apply(self, logical: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        if logical == "clock":  # a tick is a partition's clock: apply it to the partition it names
            engines = [self.engine(int(record["partition"]) % self.partitions)]
        else:
            engines = [self.engine(partition_for(record["customer_id"], self.partitions))]
        out: list[dict[str, Any]] = []
        for e in engines:
            res = e.process(logical, record)
            out.extend(res.commands)
        return out

    def advance(self, until_ms: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for p in sorted(self.engines):
            out.extend(self.engines[p].advance(until_ms).commands)
        return out


def parse_lines(lines: Iterable[Any], settings: Settings, numbered: bool = False
                ) -> Iterator[tuple[int, str | None, dict[str, Any] | None, BadLine | None]]:
    lookup = topic_lookup(settings)
    for n, raw in (lines if numbered else enumerate(lines, start=1)):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            topic = obj["topic"]
            logical = lookup.get(topic)
            if logical is None:
                raise serde.SerdeError("unknown_topic", f"{topic!r} is not an input topic")
            record = serde.from_json(VALUE_SCHEMA[logical], obj["value"])
            yield n, logical, record, None
        except serde.SerdeError as exc:
            yield n, None, None, BadLine(n, exc.reason, exc.detail)
        except (ValueError, KeyError, TypeError) as exc:
            yield n, None, None, BadLine(n, "bad_line", f"{type(exc).__name__}: {exc}")


def simulate(lines: Iterable[str], settings: Settings, until_ms: int | None = None,
             on_bad: Any = None, on_command: Any = None, keep: bool = True) -> SimulationResult:
    """``keep=False`` streams commands to ``on_command`` only (a year of a large shop does not fit)."""
    sim = Simulator(settings)
    result = SimulationResult(engines=sim.engines)
    for _, logical, record, bad in parse_lines(lines, settings):
        if bad is not None:
            result.bad_lines.append(bad)
            if on_bad:
                on_bad(bad)
            continue
        assert logical is not None and record is not None
        result.events += 1
        for cmd in sim.apply(logical, record):
            result.count += 1
            if keep:
                result.commands.append(cmd)
            if on_command:
                on_command(cmd)
    if until_ms is not None:
        for cmd in sim.advance(until_ms):
            result.count += 1
            if keep:
                result.commands.append(cmd)
            if on_command:
                on_command(cmd)
    return result


def write_commands(commands: Iterable[dict[str, Any]], out: TextIO) -> None:
    for cmd in commands:
        out.write(serde.dumps_json("EmailCommand", cmd) + "\n")


# ---- parallel: partitions are independent, exactly as on the workers --------------------------

_CUSTOMER = re.compile(r'"customer_id"\s*:\s*"((?:[^"\\]|\\.)*)"')
_PARTITION = re.compile(r'"partition"\s*:\s*(\d+)')
_CHUNK = 4000
_UNTIL = 1 << 62  # sort key of commands fired by the final clock advance


def _route(line: str, partitions: int) -> int:
    """The engine partition a raw line belongs to (cheap: no JSON parse); 0 when unsure."""
    m = _CUSTOMER.search(line)
    if m:
        return partition_for(json.loads(f'"{m.group(1)}"'), partitions)
    m = _PARTITION.search(line)
    return int(m.group(1)) % partitions if m else 0


def _worker(settings: Settings, inbox: Any, outbox: Any, until_ms: int | None, spool: str) -> None:
    """Runs its partitions; writes "<line>\t<seq>\t<command>" lines (already in order) to ``spool``."""
    import gc

    gc.freeze()  # the state has no reference cycles: keep the collector off the growing heap
    sim = Simulator(settings)
    bad: list[BadLine] = []
    events = count = 0
    with open(spool, "w") as out:
        while True:
            chunk = inbox.get()
            if chunk is None:
                break
            for n, logical, record, err in parse_lines(((n, line) for n, line in chunk), settings, numbered=True):
                if err is not None:
                    bad.append(err)
                    continue
                events += 1
                for seq, cmd in enumerate(sim.apply(logical, record)):  # type: ignore[arg-type]
                    out.write(f"{n:012d}\t{seq:06d}\t{serde.dumps_json('EmailCommand', cmd)}\n")
                    count += 1
        if until_ms is not None:
            for p in sorted(sim.engines):
                for seq, cmd in enumerate(sim.engines[p].advance(until_ms).commands):
                    out.write(f"{_UNTIL + p:012d}\t{seq:06d}\t{serde.dumps_json('EmailCommand', cmd)}\n")
                    count += 1
    outbox.put((events, count, bad))


def simulate_parallel(lines: Iterable[str], settings: Settings, until_ms: int | None, workers: int,
                      out: TextIO) -> tuple[int, int, list[BadLine]]:
    """Same output, same order as ``simulate``: workers spool their (ordered) commands to files that
    are merged by the input line that fired them. Returns (events, commands, bad lines)."""
    import heapq
    import multiprocessing as mp
    import os
    import tempfile

    ctx = mp.get_context("fork")
    partitions = settings.topics.partitions
    spool_dir = tempfile.mkdtemp(prefix="shopmail-simulate-")
    spools = [os.path.join(spool_dir, f"w{w}.tsv") for w in range(workers)]
    inboxes = [ctx.Queue(maxsize=64) for _ in range(workers)]
    outbox = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(settings, inboxes[w], outbox, until_ms, spools[w]), daemon=True)
             for w in range(workers)]
    for proc in procs:
        proc.start()
    chunks: list[list[tuple[int, str]]] = [[] for _ in range(workers)]
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        w = _route(line, partitions) % workers
        chunks[w].append((n, line))
        if len(chunks[w]) >= _CHUNK:
            inboxes[w].put(chunks[w])
            chunks[w] = []
    for w in range(workers):
        if chunks[w]:
            inboxes[w].put(chunks[w])
        inboxes[w].put(None)
    events = count = 0
    bad: list[BadLine] = []
    for _ in procs:
        e, c, b = outbox.get()
        events += e
        count += c
        bad.extend(b)
    for proc in procs:
        proc.join()
    files = [open(path) for path in spools]  # noqa: SIM115
    try:
        for line in heapq.merge(*files):  # fixed-width keys: text order is (line, seq) order
            out.write(line.split("\t", 2)[2])
    finally:
        for f in files:
            f.close()
        for path in spools:
            os.unlink(path)
        os.rmdir(spool_dir)
    bad.sort(key=lambda b: b.line)
    return events, count, bad
