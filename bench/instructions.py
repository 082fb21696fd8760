"""Instructions per event of decode, of the engine and of the partition task, counted by
``valgrind --tool=callgrind``: the same code on the same input gives the same count whatever else the
machine is doing, so a change is judged by a count, not by a noisy time.

The bench writes the events (JSON form) to a file and runs one child process under callgrind with
instrumentation and collection off (the start-up and imports run at valgrind's plain speed, about four
times faster); instrumentation starts once, just before the first region. The child converts and encodes them (not counted), then counts three regions, each
started and stopped through callgrind's client requests (``valgrind/callgrind.h``, compiled here into a
two-function shared library and called through ctypes) and dumped on its own:

- ``decode``: ``serde.decode`` of every encoded value;
- ``engine``: every record through its partition's engine (``engine.process``), the domain core alone;
- ``task``: every record through a fresh ``PartitionTask`` (admission, limits, merge, engine).

Hash randomisation is pinned (``PYTHONHASHSEED=0``) so dict and set layouts, and so the counts, repeat.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGIONS = ("decode", "engine", "task")

_CLIENT_REQUESTS = r"""
#include <valgrind/callgrind.h>
void shopmail_instrument(void) { CALLGRIND_START_INSTRUMENTATION; }
void shopmail_count_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void shopmail_count_stop(const char *region) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(region); }
"""


class InstructionsUnavailable(RuntimeError):
    """valgrind, its callgrind header or a C compiler is missing: the figure cannot be taken here."""


@dataclass(frozen=True)
class InstructionCounts:
    events: int
    commands: int
    total: dict[str, int]  # region → instructions

    def per_event(self, region: str) -> float:
        return self.total[region] / self.events


def _build_client_library(directory: Path) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if shutil.which("valgrind") is None:
        raise InstructionsUnavailable("valgrind is not installed (Debian: apt-get install valgrind)")
    if cc is None:
        raise InstructionsUnavailable("no C compiler (gcc) to build the callgrind client-request library")
    source = directory / "count.c"
    source.write_text(_CLIENT_REQUESTS)
    lib = directory / "libshopmailcount.so"
    run = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(source)], capture_output=True,
                         text=True, check=False)
    if run.returncode != 0:
        raise InstructionsUnavailable(f"cannot build the callgrind client library: {run.stderr.strip()[-400:]}")
    return lib


def _read_totals(out_file: Path) -> dict[str, int]:
    """Each dump is a file ``<out>.<n>`` whose header names the region (``desc: Trigger: Client Request: <region>``)
    and whose ``totals:`` line is the instruction count collected since the last zeroing."""
    totals: dict[str, int] = {}
    for part in sorted(out_file.parent.glob(out_file.name + ".*")):
        region = total = None
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                region = line.rsplit(": ", 1)[1].strip()
            elif line.startswith("totals:") or (total is None and line.startswith("summary:")):
                total = int(line.split()[1])
        if region in REGIONS and total is not None:
            totals[region] = total
    return totals


def count_instructions(events: list[tuple[str, dict[str, Any]]],
                       overrides: dict[str, Any] | None = None) -> InstructionCounts:
    """Run the three regions over ``events`` (topic, JSON-form record) under callgrind and return the counts;
    ``overrides``: settings other than the defaults (a nested dict, as ``load_settings`` takes it)."""
    with tempfile.TemporaryDirectory(prefix="shopmail-callgrind-") as tmp:
        work = Path(tmp)
        lib = _build_client_library(work)
        inputs = work / "events.jsonl"
        with open(inputs, "w") as f:
            for topic, record in events:
                f.write(json.dumps([topic, record]) + "\n")
        out_file = work / "callgrind.out"
        result = work / "result.json"
        env = dict(os.environ, PYTHONHASHSEED="0", SHOPMAIL_BENCH_OVERRIDES=json.dumps(overrides or {}))
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
             sys.executable, "-m", "bench.instructions", str(inputs), str(lib), str(result)],
            capture_output=True, text=True, env=env, check=False)
        if run.returncode != 0 or not result.exists():
            raise RuntimeError(f"the counted run failed ({run.returncode}): {run.stderr[-2000:]}")
        totals = _read_totals(out_file)
        missing = [r for r in REGIONS if r not in totals]
        if missing:
            raise RuntimeError(f"callgrind wrote no count for {missing}: {run.stderr[-1000:]}")
        meta = json.loads(result.read_text())
        return InstructionCounts(events=meta["events"], commands=meta["commands"], total=totals)


def _child(inputs: Path, lib_path: Path, result: Path) -> None:
    """The counted process: everything but the three regions runs with collection off."""
    from schemas import serde
    from streams.config import load_settings
    from streams.kafka.topics import VALUE_SCHEMA
    from streams.tools.simulate import Simulator

    lib = ctypes.CDLL(str(lib_path))
    lib.shopmail_count_stop.argtypes = [ctypes.c_char_p]
    settings = load_settings(env={}, overrides=json.loads(os.environ.get("SHOPMAIL_BENCH_OVERRIDES") or "{}"))
    events = []
    with open(inputs) as f:
        for line in f:
            topic, obj = json.loads(line)
            events.append((topic, serde.from_json(VALUE_SCHEMA[topic], obj)))
    encoded = [serde.encode(VALUE_SCHEMA[t], r) for t, r in events]
    decode = serde.decode

    lib.shopmail_instrument()
    lib.shopmail_count_start()
    for data in encoded:
        decode(data)
    lib.shopmail_count_stop(b"decode")

    sim = Simulator(settings)
    engines = [sim.task(sim.target(topic, rec)).engine for topic, rec in events]
    commands = 0
    lib.shopmail_count_start()
    for engine, (topic, rec) in zip(engines, events):
        commands += len(engine.process(topic, rec).commands)
    lib.shopmail_count_stop(b"engine")

    task_sim = Simulator(settings)
    apply = task_sim.apply
    lib.shopmail_count_start()
    for topic, rec in events:
        apply(topic, rec)
    lib.shopmail_count_stop(b"task")
    result.write_text(json.dumps({"events": len(events), "commands": commands}))


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
