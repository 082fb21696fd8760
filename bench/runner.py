"""`shopmail bench`: throughput, latency and memory figures, each with its baseline measured in the
same run (these machines are noisy: ratios, not absolute numbers, are the figures to quote).

1. core     — the domain core alone (the `simulate` path) in events/s on one core, against the raw
              fastavro decode rate of the same events (the ceiling); state bytes per active customer.
2. worker   — `ProcessorRuntime` through the embedded broker (full: 101,731 events, quick: 51,296),
              against a plain confluent-kafka consume→produce loop over the same topics, with the
              runtime's per-stage wall times over the same window; then the Quix Streams baseline
              (bench/quix_app.py, its own virtualenv) on the same topics, exactly-once.
   scaleout — one vs two `shopmail worker` processes in one group on the same input.
   restore  — a `shopmail worker` SIGKILLed after a backlog of ``restore_customers`` customers; a new
              runtime restores them (keys restored == customers per partition, asserted), timed.
3. latency  — OrderEvent produced → SES answered (the sink's `sent` outcome time), p50/p95/p99 at a
              steady event rate, ``latency_runs`` runs; worker, sink and moto each in their own
              process, with a per-hop split (bench/traced.py) and each process's CPU seconds.
4. sink     — sends/s against moto with the rate limit off, and the measured rate with it on.
6. instructions — instructions per event of decode, the engine and the partition task under
              `valgrind --tool=callgrind` (bench/instructions.py): a count that repeats whatever the
              machine is doing, over the core part's input.
5. simulate — `shopmail simulate` (one process per CPU) over a year of synthetic traffic for
              ``simulate_customers`` customers (full size: 100k, the issue's target is < 60 s), against
              the same run with one process.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.tools.traffic import TrafficSpec, generate
from streams.runtime import background
from schemas import serde
from streams.config import Settings, load_settings
from streams.kafka.io import consumer_config, produce_events, producer_config
from streams.tools.simulate import Simulator, default_workers
from streams.kafka.topics import INPUT_TOPICS, VALUE_SCHEMA, ensure_topics, topic_specs


@dataclass
class BenchConfig:
    core_customers: int = 20_000
    core_days: int = 90
    state_customers: int = 20_000
    worker_customers: int = 50_000  # × worker_days: 101,731 events over 4 input topics
    worker_days: int = 30
    latency_seconds: float = 10.0
    latency_rate: int = 1000
    latency_runs: int = 5  # the target: p99 ≤ 500 ms in 4 of 5 runs
    latency_linger_ms: int = 5  # the shop's producer in the latency runs: librdkafka's and the Java client's default
    sink_commands: int = 600
    sink_rate: float = 100.0
    # SES emulator processes in the sink runs, each SendEmail to the next in turn. moto closes every
    # connection, so each call is a connection its one accept loop takes and a thread it starts under its
    # interpreter lock: one process caps near 0.7 of a core however many calls wait (docs/scaling.md)
    sink_emulators: int = 2
    simulate_customers: int = 100_000
    restore_customers: int = 100_000  # one profile each (2 days of traffic): 100k keys in the changelog
    quix: bool = True  # the Quix Streams baseline (its own virtualenv, created on first use)
    guard_customers: int = 20_000  # bench/guard.py: the shop's traffic + its feedback (full: ≥ 100k events)
    guard_days: int = 60
    guard_rounds: int = 3  # passes with the guard on, and as many off, interleaved
    sink_baseline: str | None = None  # a source tree of another release: its sink interleaved with this one's
    sink_pairs: int = 3  # interleaved (baseline, this) sink runs when sink_baseline is set
    worker_baseline: str | None = None  # a source tree of another release: its worker A/B against this one's
    worker_pairs: int = 3  # interleaved (baseline, this) `shopmail worker` runs when worker_baseline is set
    worker_env: dict[str, str] = field(default_factory=dict)  # settings for this tree's worker only (A/B)


QUICK = BenchConfig(core_customers=3_000, core_days=60, state_customers=3_000, worker_customers=25_000,
                    worker_days=30, latency_seconds=6.0, latency_rate=1000, latency_runs=5, sink_commands=300,
                    sink_rate=100.0, simulate_customers=10_000, restore_customers=20_000)
TINY = BenchConfig(core_customers=200, core_days=30, state_customers=200, worker_customers=100, worker_days=10,
                   latency_seconds=2.0, latency_rate=200, latency_runs=1, sink_commands=40, sink_rate=50.0,
                   simulate_customers=300, restore_customers=300, quix=False, guard_customers=200, guard_days=20,
                   guard_rounds=1, sink_emulators=1)


@dataclass
class Figures:
    rows: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.rows[key] = value


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


# ---- 1. domain core ----------------------------------------------------------------------------

def bench_core(cfg: BenchConfig, out: Figures) -> None:
    settings = load_settings(env={})
    spec = TrafficSpec(customers=cfg.core_customers, days=cfg.core_days, seed=7)
    events = [(t, serde.from_json(VALUE_SCHEMA[t], r)) for t, r in generate(spec)]
    encoded = [serde.encode(VALUE_SCHEMA[t], r) for t, r in events]
    t0 = time.perf_counter()
    for data in encoded:
        serde.decode(data)
    decode_s = time.perf_counter() - t0
    sim = Simulator(settings)
    commands = 0
    t0 = time.perf_counter()
    for topic, rec in events:  # the domain core alone: each partition's engine
        commands += len(sim.task(sim.target(topic, rec)).engine.process(topic, rec).commands)
    core_s = time.perf_counter() - t0
    task_sim = Simulator(settings)
    t0 = time.perf_counter()
    for topic, rec in events:  # the same through the partition task (admission, limits, dead letters)
        task_sim.apply(topic, rec)
    task_s = time.perf_counter() - t0
    out.add("core.events", len(events))
    out.add("core.commands", commands)
    out.add("core.events_per_s", round(len(events) / core_s))
    out.add("core.task_events_per_s", round(len(events) / task_s))
    out.add("core.decode_ceiling_per_s", round(len(encoded) / decode_s))
    out.add("core.ratio_to_decode", round((len(events) / core_s) / (len(encoded) / decode_s), 3))


def bench_instructions(cfg: BenchConfig, out: Figures) -> None:
    """Instructions per event (callgrind) over the core part's events; says why where it cannot count."""
    from bench.instructions import REGIONS, InstructionsUnavailable, count_instructions

    events = list(generate(TrafficSpec(customers=cfg.core_customers, days=cfg.core_days, seed=7)))
    try:
        counts = count_instructions(events)
    except InstructionsUnavailable as exc:
        out.add("instructions.skipped", str(exc))
        return
    out.add("instructions.events", counts.events)
    out.add("instructions.commands", counts.commands)
    for region in REGIONS:
        out.add(f"instructions.{region}_per_event", round(counts.per_event(region)))


def bench_state(cfg: BenchConfig, out: Figures) -> None:
    settings = load_settings(env={})
    sim = Simulator(settings)
    for topic, rec in generate(TrafficSpec(customers=cfg.state_customers, days=30, seed=11)):
        sim.apply(topic, rec)
    total = customers = 0
    for engine in sim.engines.values():
        for key, value in engine.drain_changes().items():
            if value is not None and not key.startswith("\x00"):
                total += len(value)
                customers += 1
    out.add("state.customers", customers)
    out.add("state.bytes_per_customer", round(total / max(customers, 1)))


def _simulate_cli(path: str, workers: int) -> tuple[float, str]:
    import subprocess
    import sys

    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--input", path, "--output", os.devnull,
                          "--workers", str(workers)], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"simulate failed ({run.returncode}): {run.stderr[-2000:]}")
    return elapsed, run.stderr.strip().splitlines()[-1]


def bench_simulate(cfg: BenchConfig, out: Figures) -> None:
    """Wall time of the CLI (start-up, parsing, engines, output, merge) over a year of traffic."""
    import tempfile

    from streams.tools.traffic import write_jsonl

    settings = load_settings(env={})
    with tempfile.TemporaryDirectory(prefix="shopmail-bench-") as tmp:
        path = os.path.join(tmp, "year.jsonl")
        with open(path, "w") as f:
            events = write_jsonl(TrafficSpec(customers=cfg.simulate_customers, days=365, seed=1), f,
                                 settings.topics.name)
        workers = default_workers(settings)
        parallel_s, summary = _simulate_cli(path, 0)
        one_s, _ = _simulate_cli(path, 1)
    out.add("simulate.customers", cfg.simulate_customers)
    out.add("simulate.events", events)
    out.add("simulate.workers", workers)
    out.add("simulate.seconds", round(parallel_s, 1))
    out.add("simulate.one_process_seconds", round(one_s, 1))
    out.add("simulate.speedup", round(one_s / parallel_s, 2))
    out.add("simulate.summary", summary)


# ---- 2. worker vs plain loop, Quix Streams, scale-out, restore -------------------------------

def _produce_inputs(settings: Settings, bootstrap: str, events: list[tuple[str, dict[str, Any]]],
                    customers_by_partition: dict[int, set[str]] | None = None) -> None:
    """Produce the events; with ``customers_by_partition``, record where each customer's records landed."""

    def landed(msg: Any) -> None:
        if customers_by_partition is not None:
            customers_by_partition.setdefault(msg.partition(), set()).add(msg.key().decode())

    produce_events(settings, bootstrap, events, on_delivery=landed, **{"linger.ms": 20, "batch.num.messages": 10000})


def _plain_loop(settings: Settings, bootstrap: str, n: int) -> float:
    """consume every input record and produce it to an output topic: the baseline."""
    c = Consumer(consumer_config(settings, bootstrap, f"{settings.worker.app_id}-plain"))
    p = Producer(producer_config(settings, bootstrap))
    started: list[float] = []
    c.subscribe([settings.topics.name(t) for t in INPUT_TOPICS],
                on_assign=lambda consumer, parts: started.append(time.perf_counter()))
    out = settings.topics.prefix + "plain-out"
    seen = 0
    deadline = time.monotonic() + 300
    while seen < n and time.monotonic() < deadline:
        for m in c.consume(500, 0.2):
            if m.error():
                continue
            p.produce(out, key=m.key(), value=m.value())
            seen += 1
        p.poll(0)
    p.flush(30)
    end = time.perf_counter()
    c.close()
    return seen / (end - started[0])


@dataclass
class WorkerRun:
    events: int
    seconds: float
    stage_s: dict[str, float]
    commands: int
    transactions: int
    cpu_s: float = 0.0  # this process's CPU seconds over the same window (the runtime's and librdkafka's threads)
    startup_s: float = 0.0  # from the runtime's start (group join, restore) to its first records: not in ``seconds``


class _StopAt:
    """The runtime's observer: stops it, in its own thread, once ``n`` events are committed, as Quix's app
    stops in its callback at its n-th record (bench/quix_app.py)."""

    def __init__(self, n: int, stop: threading.Event) -> None:
        self.n = n
        self.stop = stop

    def on_batch(self, runtime: Any, by_topic: dict[str, int] | None = None) -> None:
        if runtime.stats.events >= self.n:
            self.stop.set()


def _worker(settings: Settings, bootstrap: str, n: int) -> WorkerRun:
    """The in-process runtime from its first records to ``n`` events committed and the runtime stopped
    (consumer and producer closed): the window Quix's run is timed over (bench/quix_app.py: from its first
    processed record to the return of ``app.run()``, which closes its clients). The loop's per-stage wall
    times (``RuntimeStats.stage_s``) over the same window, and the start-up before it (group join,
    assignment, restore, the first fetch), as Quix's ``startup_s`` is its own before its first record.

    Both ends are marked in the loop's own thread: the opening when the first fetch that returned records
    is timed (the loop's stage timer is wrapped on this runtime's stats), the stop by the runtime's observer
    once ``n`` events are committed; nothing else is changed."""
    from streams.runtime.worker import ProcessorRuntime

    stop = threading.Event()
    runtime = ProcessorRuntime(settings, bootstrap, instance_id="bench", write_ticks=False, observer=_StopAt(n, stop))
    stats = runtime.stats
    opened: list[tuple[float, float, dict[str, float], int, int, int]] = []
    loop_timed = stats.timed

    def timed(stage: str, seconds: float) -> None:
        loop_timed(stage, seconds)
        if stage == "fetch" and not opened:  # the first records have just been fetched
            opened.append((time.perf_counter(), time.process_time(), dict(stats.stage_s), stats.events,
                           stats.commands, stats.transactions))

    stats.timed = timed  # type: ignore[method-assign]
    failed: list[BaseException] = []

    def run() -> None:
        try:
            runtime.run(stop)
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the bench's thread
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(600)
    if thread.is_alive():  # never reached n: stop it, and say so
        stop.set()
        thread.join(30)
    end, cpu1 = time.perf_counter(), time.process_time()
    if failed or thread.is_alive() or not opened or stats.events < n:
        raise RuntimeError(f"the worker processed {stats.events} of {n} events"
                           f"{'' if opened else ' and fetched no record'}"
                           f"{' and did not stop' if thread.is_alive() else ''}") from (failed[0] if failed else None)
    at, cpu0, stages0, events0, commands0, transactions0 = opened[0]
    stages = {stage: seconds - stages0.get(stage, 0.0) for stage, seconds in stats.stage_s.items()}
    return WorkerRun(stats.events - events0, end - at, stages, stats.commands - commands0,
                     stats.transactions - transactions0, cpu1 - cpu0, at - started)


def _worker_settings(tag: str) -> Settings:
    s = _bench_settings(tag)
    s.worker.tick_interval_s = 0
    return s


def _quix_specs(settings: Settings) -> list[Any]:
    """The topics, with retention.ms set explicitly on the compacted shop.customers too: Quix copies a
    source topic's retention into its changelog topics and needs it in DescribeConfigs, which the
    embedded broker answers with explicitly set configs only."""
    specs = topic_specs(settings)
    for spec in specs:
        if spec.logical == "customers":
            spec.config["retention.ms"] = str(settings.topics.retention_ms)
    return specs


def bench_worker(cfg: BenchConfig, bootstrap: str, out: Figures) -> list[tuple[str, dict[str, Any]]]:
    settings = _worker_settings("bench-worker")
    assert ensure_topics(bootstrap, _quix_specs(settings), kafka=settings.kafka).healthy
    events = list(generate(TrafficSpec(customers=cfg.worker_customers, days=cfg.worker_days, seed=3)))
    _produce_inputs(settings, bootstrap, events)
    plain = _plain_loop(settings, bootstrap, len(events))
    from streams.runtime.gc_policy import tuned_for_streaming

    with tuned_for_streaming(settings.worker.gc_young_threshold):  # as `shopmail worker` runs (not in a test)
        run = _worker(settings, bootstrap, len(events))
    worker = run.events / run.seconds
    out.add("worker.events", len(events))
    out.add("worker.events_per_s", round(worker))
    out.add("worker.plain_loop_per_s", round(plain))
    out.add("worker.ratio_to_plain", round(worker / plain, 3))
    out.add("worker.seconds", round(run.seconds, 2))
    out.add("worker.startup_s", round(run.startup_s, 3))
    out.add("worker.transactions", run.transactions)
    out.add("worker.commands", run.commands)
    for stage, seconds in sorted(run.stage_s.items(), key=lambda kv: -kv[1]):
        out.add(f"worker.stage.{stage}", f"{seconds:.2f} s ({100 * seconds / run.seconds:.0f} %)")
    other = run.seconds - sum(run.stage_s.values())
    out.add("worker.stage.(outside the timed stages)", f"{other:.2f} s ({100 * other / run.seconds:.0f} %)")
    if cfg.quix:
        bench_quix(settings, bootstrap, len(events), worker, out)
    return events


# Quix Streams baseline ----------------------------------------------------------------------------

QUIX_REQUIREMENTS = ["quixstreams==3.28.1", "fastavro"]


def _quix_python(settings: Settings) -> tuple[str | None, str]:
    """The baseline's interpreter: its own virtualenv (quixstreams pins an older confluent-kafka than
    shopmail), created on first use under the data directory. (None, reason) if it cannot be."""
    import subprocess
    import sys
    from pathlib import Path

    venv = Path(settings.worker.data_dir) / "bench-quix-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import quixstreams, fastavro; print(quixstreams.__version__)"]
    if python.exists():
        ok = subprocess.run(probe, capture_output=True, text=True, check=False)
        if ok.returncode == 0:
            return str(python), ok.stdout.strip()
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", *QUIX_REQUIREMENTS], probe]
    for step in steps:
        run = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
        if run.returncode != 0:
            return None, f"{' '.join(step[:4])} failed: {(run.stderr or run.stdout).strip()[-300:]}"
    return str(python), run.stdout.strip()


QUIX_DEFAULT_COMMIT_S = 5.0  # Quix's own default commit_interval


def bench_quix(settings: Settings, bootstrap: str, n: int, worker_per_s: float, out: Figures) -> None:
    """bench/quix_app.py on the worker bench's input topics (its own consumer group), exactly-once:
    once with Quix's default commit interval (5 s), once with the worker's rule (a checkpoint every
    ``worker.batch_size`` records or ``worker.commit_interval_ms``, whichever comes first)."""
    import subprocess
    import tempfile
    from pathlib import Path

    python, version = _quix_python(settings)
    if python is None:
        out.add("quix.unavailable", version)
        return
    out.add("quix.version", version)
    out.add("quix.does", "decode + per-customer profile/cart state + abandoned-cart steps when the customer's next "
                         "event is past the delay (no timers, no other flows, no quiet hours/caps/holdouts/"
                         "dedupe/DLQ, JSON output), exactly-once")
    app = str(Path(__file__).with_name("quix_app.py"))
    schemas = str(Path(serde.__file__).parent)
    w = settings.worker
    like_worker = (w.batch_size, w.commit_interval_ms / 1000 if w.commit_interval_ms > 0 else QUIX_DEFAULT_COMMIT_S)
    for label, (commit_every, commit_interval_s) in (("", (0, QUIX_DEFAULT_COMMIT_S)),
                                                     ("commit_like_worker.", like_worker)):
        group = f"{settings.worker.app_id}-quix{commit_every}"
        with tempfile.TemporaryDirectory(prefix="shopmail-quix-") as state:
            run = subprocess.run([python, app, bootstrap, settings.topics.prefix, group, str(n), schemas,
                                  str(commit_every), state, str(commit_interval_s)], capture_output=True, text=True,
                                 timeout=900, check=False)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
        if run.returncode != 0 or not lines:
            out.add(f"quix.{label}error", (run.stderr or run.stdout).strip()[-500:])
            continue
        res = json.loads(lines[-1])
        per_s = res["events"] / res["seconds"]
        out.add(f"quix.{label}events_per_s", round(per_s))
        out.add(f"quix.{label}commands", res["commands"])
        out.add(f"quix.{label}startup_s", res.get("startup_s"))
        out.add(f"worker.ratio_to_quix{'_commit_like_worker' if label else ''}", round(worker_per_s / per_s, 3))
    out.add("quix.commit_like_worker", f"every {like_worker[0]} records or {like_worker[1]:g} s")


# scale-out and restore: `shopmail worker` processes ---------------------------------------------

class _Committed:
    """Sum of the group's committed input offsets (records: the inputs are written without transactions)."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.c = Consumer(consumer_config(settings, bootstrap, settings.worker.app_id))
        self.tps = [TopicPartition(settings.topics.name(t), p) for t in INPUT_TOPICS
                    for p in range(settings.topics.partitions)]

    def total(self) -> int:
        return sum(max(tp.offset, 0) for tp in self.c.committed(self.tps, timeout=10))

    def wait_for(self, n: int, timeout_s: float) -> list[tuple[float, int]]:
        """Poll until ``n`` records are committed; the (time, committed) series."""
        series: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.total()
            series.append((time.perf_counter(), done))
            if done >= n:
                return series
            time.sleep(0.05)
        raise RuntimeError(f"workers committed {series[-1][1] if series else 0} of {n} records in {timeout_s} s")

    def close(self) -> None:
        self.c.close()


def _crossing(series: list[tuple[float, int]], level: float) -> float:
    return next(t for t, done in series if done >= level)


def bench_scaleout(events: list[tuple[str, dict[str, Any]]], bootstrap: str, out: Figures) -> None:
    """One vs two `shopmail worker` processes in one group on the same input: committed records per
    second between 10 % and 90 % of the input (start-up and the group join excluded)."""
    n = len(events)
    rates: dict[int, float] = {}
    for procs in (1, 2):
        s = _worker_settings(f"bench-scale{procs}")
        assert ensure_topics(bootstrap, topic_specs(s), kafka=s.kafka).healthy
        _produce_inputs(s, bootstrap, events)
        committed = _Committed(s, bootstrap)
        children = [_child(["worker", "--instance-id", f"scale-{i}"], s, bootstrap, {}) for i in range(procs)]
        try:
            series = committed.wait_for(n, 900)
            cpu = [_cpu_s(ch.pid) for ch in children]
        finally:
            _stop(children)
            committed.close()
        t10, t90 = _crossing(series, 0.1 * n), _crossing(series, 0.9 * n)
        if t90 <= t10:  # tiny inputs finish within one poll: fall back to launch → done
            t10, t90 = series[0][0], series[-1][0]
        rates[procs] = 0.8 * n / (t90 - t10)
        out.add(f"scaleout.{procs}_process.events_per_s", round(rates[procs]))
        out.add(f"scaleout.{procs}_process.cpu_s", [round(c, 1) for c in cpu])
    out.add("scaleout.events", n)
    out.add("scaleout.ratio_2_to_1", round(rates[2] / rates[1], 2))


def bench_restore(cfg: BenchConfig, bootstrap: str, out: Figures) -> None:
    """A `shopmail worker` process works through a backlog of ``restore_customers`` customers, is
    SIGKILLed, and a new runtime with the same instance id restores its partitions from the changelog:
    keys restored must equal the customers whose records landed in each partition."""
    import signal

    from streams.runtime.worker import ProcessorRuntime

    s = _worker_settings("bench-restore")
    assert ensure_topics(bootstrap, topic_specs(s), kafka=s.kafka).healthy
    events = list(generate(TrafficSpec(customers=cfg.restore_customers, days=2, seed=13)))
    customers: dict[int, set[str]] = {}
    _produce_inputs(s, bootstrap, events, customers)
    committed = _Committed(s, bootstrap)
    worker = _child(["worker", "--instance-id", "bench-restore"], s, bootstrap, {})
    try:
        committed.wait_for(len(events), 900)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        committed.close()
    runtime = ProcessorRuntime(s, bootstrap, instance_id="bench-restore", write_ticks=False)
    restore_s: list[float] = []
    restore_many = runtime.restore.restore_many

    def timed(partitions: list[int]) -> Any:  # the runtime restores its partitions together, in one read
        t0 = time.perf_counter()
        try:
            return restore_many(partitions)
        finally:
            restore_s.append(time.perf_counter() - t0)

    runtime.restore.restore_many = timed  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    started = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + 600
    while set(runtime.tasks) != set(customers) and time.monotonic() < deadline:
        time.sleep(0.005)
    ready_s = time.perf_counter() - started
    keys = {p: len(task.engine.customers) for p, task in runtime.tasks.items()}
    records = runtime.stats.restored_changelog_records
    stop.set()
    thread.join(30)
    expected = {p: len(ids) for p, ids in customers.items()}
    if keys != expected:
        raise RuntimeError(f"restore lost or invented state: keys restored {keys} != customers per partition {expected}")
    total = sum(keys.values())
    seconds = sum(restore_s)
    out.add("restore.customers", total)
    out.add("restore.keys_restored_by_partition", keys)
    out.add("restore.changelog_records", records)
    out.add("restore.seconds", round(seconds, 3))
    out.add("restore.seconds_per_100k_customers", round(seconds * 100_000 / total, 2))
    out.add("restore.restart_to_ready_s", round(ready_s, 2))  # includes waiting out the killed member's session


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc); NaN when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _broker_pid() -> int | None:
    """The embedded broker, when this process started it."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if rest.split()[1] == me and "tansu" in name:
            return int(entry)
    return None


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except Exception:  # noqa: BLE001
            proc.kill()


# ---- 3 + 4. latency and sink --------------------------------------------------------------------

class _Ses:
    """moto's SES server in its own process (like SES: not sharing our GIL) + a verified sender."""

    def __init__(self, settings: Settings) -> None:
        import os
        import subprocess
        import sys
        import urllib.request

        import boto3

        from streams.kafka.embedded_broker import free_port

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        boto3.client("sesv2", endpoint_url=self.url, region_name=settings.ses.region).create_email_identity(
            EmailIdentity=settings.ses.from_address)
        settings.ses.endpoint_url = self.url
        settings.ses.use_account_rate = False

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _outcomes(settings: Settings, bootstrap: str, expect: int, timeout_s: float = 120) -> list[dict[str, Any]]:
    from streams.kafka.io import read_topic

    return [r.decoded().record for r in read_topic(bootstrap, settings.topics.name("outcomes"), expect=expect,
                                                    timeout_s=timeout_s, kafka=settings.kafka)]


def _bench_settings(tag: str) -> Settings:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    s = load_settings(env={})
    stamp = f"{tag}-{int(time.time() * 1000)}"
    s.topics.prefix = f"{stamp}."
    s.topics.partitions = 2
    s.worker.app_id = stamp
    s.sink.group_id = f"{stamp}-sink"
    s.worker.store = "memory://"
    return s


def _run_sink(settings: Settings, bootstrap: str) -> tuple[Any, threading.Event, threading.Thread]:
    from sinks.service import SinkService

    service = SinkService(settings, bootstrap, instance_id="bench")
    bg = background.start(service.run, "bench-sink")
    if not service.ready.wait(60) or bg.errors:
        raise RuntimeError(f"sink did not start: {bg.errors}")
    return service, bg.stop, bg.thread


def bench_sink(cfg: BenchConfig, bootstrap: str, out: Figures) -> None:
    """The sink in its own process against moto in its own process; SendEmail request times are
    recorded by a proxy in between (outcome timestamps are per transaction, too coarse for a rate), the
    sink's CPU seconds from /proc over the same window (first to last SendEmail) → CPU ms per email; the
    emulator's (moto: ``cfg.sink_emulators`` processes, summed), the broker's and this process's (the proxy)
    the same way, with the
    cores each used over the window (CPU seconds ÷ wall seconds): what the sends/s was bound by.

    With ``cfg.sink_baseline`` (a source tree of another release) the unlimited run is repeated
    ``cfg.sink_pairs`` times, that tree's sink and this one's interleaved (baseline first in each pair), each
    with its own defaults and the user's settings; the figures are the medians and their ratios."""
    out.add("sink.emulators", max(1, cfg.sink_emulators))
    sides: list[tuple[str, str | None]] = [("", None)]
    if cfg.sink_baseline:
        sides = [("before.", cfg.sink_baseline), ("", None)]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in sides}
    for pair in range(cfg.sink_pairs if cfg.sink_baseline else 1):
        for label, tree in sides:
            runs[label].append(_sink_run(cfg, bootstrap, f"{label}unlimited{pair}", 0.0, out, tree))
    for label, results in runs.items():
        for key in ("sends_per_s", "cpu_ms_per_email", "sink_cores", "moto_cpu_ms_per_email", "moto_cores",
                    "emulator_busiest_cores", "broker_cores", "bench_cores"):
            values = [r[key] for r in results if r[key] == r[key]]
            out.add(f"sink.{label}unlimited.{key}", round(statistics.median(values), 2) if values else None)
            if len(results) > 1:
                out.add(f"sink.{label}unlimited.{key}.runs", [round(r[key], 2) for r in results])
        out.add(f"sink.{label}unlimited.sends", results[-1]["sends"])
    if cfg.sink_baseline:
        for key in ("sends_per_s", "cpu_ms_per_email"):
            before, now = out.rows.get(f"sink.before.unlimited.{key}"), out.rows.get(f"sink.unlimited.{key}")
            out.add(f"sink.ratio.{key}", round(now / before, 2) if before and now else None)
        _sink_parts(cfg, sides, out)
    limited = _sink_run(cfg, bootstrap, "limited", cfg.sink_rate, out, None)
    out.add("sink.limited.sends", limited["sends"])
    out.add("sink.limited.sends_per_s", limited["sends_per_s"])
    out.add("sink.limited.configured_rate", cfg.sink_rate)
    out.add("sink.limited.max_in_any_1s", limited["max_in_any_1s"])


def _sink_parts(cfg: BenchConfig, sides: list[tuple[str, str | None]], out: Figures) -> None:
    """CPU ms per email of each part of the sink's work (bench/sink_cpu.py: links, render, MIME, SES call),
    each side in its own process, interleaved ``cfg.sink_pairs`` times; medians per part."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sink_cpu.py")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in sides}
    for _ in range(cfg.sink_pairs):
        for label, tree in sides:
            run = subprocess.run([sys.executable, script, "--emails", str(cfg.sink_commands)],
                                 env={**os.environ, "PYTHONPATH": tree or here}, cwd=tree or here,
                                 capture_output=True, text=True, check=True, timeout=600)
            results[label].append(json.loads(run.stdout.strip().splitlines()[-1]))
    for label, runs in results.items():
        for part in ("links_and_context_ms", "render_ms", "mime_ms", "ses_call_ms", "total_ms"):
            out.add(f"sink.parts.{label}{part}", round(statistics.median(r[part] for r in runs), 3))


def _sink_run(cfg: BenchConfig, bootstrap: str, label: str, rate: float, out: Figures,
              tree: str | None) -> dict[str, float]:
    """One sink child (from ``tree``, else this tree) sending ``cfg.sink_commands`` commands against moto."""
    from bench.fault_proxy import FaultProxy

    s = _bench_settings(f"bench-sink-{label.replace('.', '-')}")
    s.ses.max_send_rate = rate
    assert ensure_topics(bootstrap, topic_specs(s), kafka=s.kafka).healthy
    emulators = [_Ses(s) for _ in range(max(1, cfg.sink_emulators))]  # each with the sender verified
    proxy = FaultProxy(emulators[0].url, others=[e.url for e in emulators[1:]])
    s.ses.endpoint_url = proxy.url
    now = int(time.time() * 1000)
    p = Producer(producer_config(s, bootstrap))
    for i in range(cfg.sink_commands):
        cmd = {"command_id": f"b{i}", "customer_id": f"c{i % 97}", "to": f"c{i % 97}@example.com",
               "flow": "order_confirmation", "step": 1, "template": "order_confirmation/step1",
               "locale": "en", "variant": "control", "category": "transactional", "send_at": now,
               "expires_at": now + 3_600_000, "trigger_event_id": f"e{i}", "created_at": now,
               "context": json.dumps({"order_id": f"o{i}", "total": "10.00", "currency": "EUR", "cross_sell": [],
                                      "items": [{"sku": "S", "name": "Mug", "price": "10.00", "quantity": 1}]})}
        p.produce(s.topics.name("commands"), key=cmd["customer_id"].encode(), value=serde.encode("EmailCommand", cmd))
    p.flush(30)
    # the sink child takes the user's settings (SHOPMAIL_SES__MAX_CONCURRENCY and the rest from the
    # environment or SHOPMAIL_CONFIG); the figure names the concurrency it ran with
    sink = _child(["sink", "--instance-id", f"bench-{label}"], s, bootstrap, {}, tree=tree)
    out.add(f"sink.{'before.' if tree else ''}max_concurrency", _max_concurrency(tree))
    # CPU seconds of each process on the send path: the sink, the emulator (all its processes), the broker,
    # and this process (the proxy between the sink and the emulator, and the outcome reader)
    broker = _broker_pid()
    procs: dict[str, list[int]] = {"sink": [sink.pid], "moto": [e.proc.pid for e in emulators],
                                   "broker": [broker] if broker else [], "bench": [os.getpid()]}
    every_pid = [pid for pids in procs.values() for pid in pids]
    samples: list[tuple[int, float, dict[int, float]]] = []  # (sends so far, monotonic s, CPU s per pid)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            samples.append((len(proxy.sends()), time.monotonic(), {pid: _cpu_s(pid) for pid in every_pid}))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _outcomes(s, bootstrap, cfg.sink_commands, timeout_s=300)
        done.set()
        sampler.join()
        times = sorted(r.at for r in proxy.sends())
        span = (times[-1] - times[0]) if len(times) > 1 else float("nan")
        sending = [row for row in samples if 0 < row[0] < len(times)]
        first, last = (sending[0], sending[-1]) if len(sending) > 1 else (None, None)
        sent = last[0] - first[0] if first and last else 0
        worst = max((sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)), default=0)
        result = {"sends": len(times), "sends_per_s": round((len(times) - 1) / span, 1) if span == span and span > 0
                  else float("nan"), "max_in_any_1s": worst}
        def used(pids: list[int]) -> float:  # CPU seconds of ``pids`` over the window
            return sum(last[2][pid] - first[2][pid] for pid in pids) if first and last and sent and pids \
                else float("nan")

        for name, pids in procs.items():  # per email, and the cores used over the window (CPU s ÷ wall s)
            result["cpu_ms_per_email" if name == "sink" else f"{name}_cpu_ms_per_email"] = \
                used(pids) * 1000 / sent if sent else float("nan")
            result[f"{name}_cores"] = used(pids) / (last[1] - first[1]) if sent else float("nan")
        # one emulator process near its cap (~0.7 of a core) would hide in the sum: the busiest one beside it
        result["emulator_busiest_cores"] = max(used([pid]) for pid in procs["moto"]) / (last[1] - first[1]) \
            if sent else float("nan")
        return result
    finally:
        done.set()
        _stop([sink])  # killed if it does not end in 30 s
        proxy.close()
        for e in emulators:
            e.close()
        _drop_topics(s, bootstrap)


def _drop_topics(s: Settings, bootstrap: str) -> None:
    """Delete a run's topics: a broker holding every earlier run's topics answers the next run slower (the
    embedded broker's CPU per run grew run by run), which would favour the earlier side of a pair."""
    import sys

    from streams.kafka.topics import delete_topics

    refused = {name: why for name, why in delete_topics(bootstrap, [t.name for t in topic_specs(s)], s.kafka).items()
               if why is not None}
    if refused:
        print(f"bench: topics not deleted: {refused}", file=sys.stderr)


def _max_concurrency(tree: str | None) -> int:
    """``ses.max_concurrency`` as a sink from ``tree`` (else this tree) reads it from the user's settings."""
    if not tree:
        return load_settings().ses.max_concurrency
    return int(_in_tree(tree, "print(s.ses.max_concurrency)"))


def _in_tree(tree: str, code: str, extra: dict[str, str] | None = None) -> str:
    """What ``code`` prints when run by another release's source ``tree`` with its settings loaded as ``s``
    (the user's environment, and ``extra`` on top)."""
    import subprocess
    import sys

    program = f"from streams.config import load_settings; s = load_settings(); {code}"
    return subprocess.run([sys.executable, "-c", program], env={**os.environ, **(extra or {}), "PYTHONPATH": tree},
                          cwd=tree, capture_output=True, text=True, check=True).stdout.strip()


def _child(args: list[str], settings: Settings, bootstrap: str, extra: dict[str, str],
           module: str = "streams.cli", tree: str | None = None) -> Any:
    """A `shopmail` subprocess with the bench's settings (like a pod: its own interpreter and GIL);
    ``module="bench.traced"`` runs it with the latency bench's timestamps; ``tree``: the source tree it runs
    from (another release, for an interleaved comparison), else this one."""
    import subprocess
    import sys

    env = dict(os.environ)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SHOPMAIL_TOPICS__PREFIX": settings.topics.prefix,
                "SHOPMAIL_TOPICS__PARTITIONS": str(settings.topics.partitions),
                "SHOPMAIL_WORKER__APP_ID": settings.worker.app_id, "SHOPMAIL_WORKER__STORE": "memory://",
                "SHOPMAIL_WORKER__TICK_INTERVAL_S": str(settings.worker.tick_interval_s),
                "SHOPMAIL_WORKER__WEB_PORT": "0", "SHOPMAIL_SINK__WEB_PORT": "0",
                "SHOPMAIL_SINK__GROUP_ID": settings.sink.group_id, "SHOPMAIL_SES__ENDPOINT_URL": settings.ses.endpoint_url,
                "SHOPMAIL_SES__USE_ACCOUNT_RATE": "false", "SHOPMAIL_SES__MAX_SEND_RATE": str(settings.ses.max_send_rate)})
    env.update(extra)
    if tree:
        env["PYTHONPATH"] = tree
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tree or None)


HOPS = ("produce → worker batch start", "worker batch → commit", "commit → sink fetch",
        "sink fetch → render start", "render", "build MIME", "prepared → SES call", "SES call",
        "SES answered → outcome committed")


def _hops(trace_path: str, produced: dict[str, float]) -> dict[str, list[float]]:
    """Per-hop milliseconds per order, from the traced worker's and sink's timestamps."""
    worker: dict[str, tuple[float, float]] = {}
    fetched: dict[str, float] = {}
    render: dict[str, float] = {}
    prepared: dict[str, tuple[float, float]] = {}
    sent: dict[str, tuple[float, float]] = {}
    settled: dict[str, float] = {}
    with open(trace_path) as f:
        for line in f:
            r = json.loads(line)
            if "w" in r:
                worker.setdefault(r["w"], (r["start"], r["end"]))
            elif "f" in r:
                fetched.setdefault(r["f"], r["t"])
            elif "r" in r:
                render.setdefault(r["r"], r["s"])
            elif "p" in r:
                prepared.setdefault(r["p"], (r["t0"], r["t1"]))
            elif "x" in r:
                sent.setdefault(r["x"], (r["t0"], r["t1"]))
            elif "o" in r:
                for cid in r["o"]:
                    settled.setdefault(cid, r["t"])
    hops: dict[str, list[float]] = {h: [] for h in HOPS}
    for cid, at in produced.items():
        if not all(cid in d for d in (worker, fetched, render, prepared, sent, settled)):
            continue
        (w0, w1), (p0, p1), (s0, s1) = worker[cid], prepared[cid], sent[cid]
        for hop, ms in zip(HOPS, (w0 * 1000 - at, (w1 - w0) * 1000, (fetched[cid] - w1) * 1000, (p0 - fetched[cid]) * 1000,
                                  render[cid] * 1000, (p1 - p0 - render[cid]) * 1000, (s0 - p1) * 1000,
                                  (s1 - s0) * 1000, (settled[cid] - s1) * 1000)):
            hops[hop].append(ms)
    return hops


def _latency_run(cfg: BenchConfig, bootstrap: str, run: int) -> dict[str, Any]:
    """One run: steady event rate (10 % orders); worker, sink and moto in their own processes."""
    import random
    import tempfile

    from streams.core.ids import command_id

    s = _bench_settings(f"bench-latency{run}")
    s.worker.tick_interval_s = 1.0
    s.ses.max_send_rate = 0.0
    assert ensure_topics(bootstrap, topic_specs(s), kafka=s.kafka).healthy
    ses = _Ses(s)
    trace = tempfile.NamedTemporaryFile(prefix="shopmail-latency-", suffix=".jsonl", delete=False)  # noqa: SIM115
    trace.close()
    env = {"SHOPMAIL_BENCH_TRACE": trace.name}
    worker = _child(["worker", "--instance-id", f"bench-latency{run}"], s, bootstrap, env, module="bench.traced")
    sink = _child(["sink", "--instance-id", f"bench-latency{run}"], s, bootstrap, env, module="bench.traced")
    procs = {"worker": worker.pid, "sink": sink.pid, "moto": ses.proc.pid, "broker": _broker_pid()}
    try:
        producer = Producer(producer_config(s, bootstrap, **{"linger.ms": cfg.latency_linger_ms}))
        # warm-up: wait until an order goes all the way through (group joins, state restore)
        warm = {"event_id": "warm-o", "customer_id": "warm", "occurred_at": int(time.time() * 1000), "type": "placed",
                "order_id": "warm", "email": "warm@example.com", "total": "1.00", "currency": "EUR",
                "items": [{"sku": "S", "name": "Mug", "price": "1.00", "quantity": 1}]}
        producer.produce(s.topics.name("orders"), key=b"warm", value=serde.encode("OrderEvent", serde.from_json("OrderEvent", warm)))
        producer.flush(10)
        _outcomes(s, bootstrap, 1, timeout_s=90)
        cpu0 = {name: _cpu_s(pid) if pid else float("nan") for name, pid in procs.items()}
        bench_cpu0 = time.process_time()
        wall0 = time.perf_counter()
        produced: dict[str, float] = {}
        acknowledged: dict[str, float] = {}  # command id → when the broker acknowledged its order (delivery report)
        not_acknowledged: list[str] = []  # failed deliveries (reported beside the figure)

        def on_ack(cmd_id: str) -> Any:
            return lambda err, msg: (acknowledged.__setitem__(cmd_id, time.time() * 1000) if err is None
                                     else not_acknowledged.append(cmd_id))

        rnd = random.Random(5)
        interval = 1.0 / cfg.latency_rate
        n = int(cfg.latency_seconds * cfg.latency_rate)
        start = time.perf_counter()
        for i in range(n):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            cid = f"lat-{rnd.randrange(5000)}"
            at = int(time.time() * 1000)
            if i % 10 == 0:
                rec = {"event_id": f"lat-o{i}", "customer_id": cid, "occurred_at": at, "type": "placed",
                       "order_id": f"o{i}", "email": f"{cid}@example.com", "total": "9.00", "currency": "EUR",
                       "items": [{"sku": "S", "name": "Mug", "price": "9.00", "quantity": 1}]}
                cmd_id = command_id("order_confirmation", 1, cid, rec["event_id"])
                producer.produce(s.topics.name("orders"), key=cid.encode(),
                                 value=serde.encode("OrderEvent", serde.from_json("OrderEvent", rec)),
                                 on_delivery=on_ack(cmd_id))
                produced[cmd_id] = time.time() * 1000
            else:
                rec = {"event_id": f"lat-c{i}", "customer_id": cid, "occurred_at": at, "type": "item_added",
                       "cart_id": f"k-{cid}", "items": [{"sku": "S", "name": "Mug", "price": "9.00", "quantity": 1}]}
                producer.produce(s.topics.name("carts"), key=cid.encode(),
                                 value=serde.encode("CartEvent", serde.from_json("CartEvent", rec)))
            producer.poll(0)
        producer.flush(30)
        achieved = n / (time.perf_counter() - start)
        outs = _outcomes(s, bootstrap, len(produced) + 1, timeout_s=120)
        wall = time.perf_counter() - wall0
        cpu = {name: round(_cpu_s(pid) - cpu0[name], 1) if pid else None for name, pid in procs.items()}
        cpu["bench (producer, reader)"] = round(time.process_time() - bench_cpu0, 1)
        latencies = [o["occurred_at"] - produced[o["command_id"]] for o in outs
                     if o["command_id"] in produced and o["outcome"] == "sent"]
    finally:
        _stop([sink, worker])
        ses.close()
        _drop_topics(s, bootstrap)
    time.sleep(0.2)
    hops = _hops(trace.name, produced)
    os.unlink(trace.name)
    acked = [acknowledged[c] - at for c, at in produced.items() if c in acknowledged]
    return {"events_per_s": achieved, "orders": len(produced), "latencies": latencies, "hops": hops, "acked": acked,
            "not_acked": len(not_acknowledged),
            "cpu_s": cpu, "wall_s": wall, "load": os.getloadavg()[0]}


LATENCY_P99_TARGET_MS = 500.0


def bench_latency(cfg: BenchConfig, bootstrap: str, out: Figures) -> None:
    """Order produced → SES answered (the sink's `sent` outcome time), ``latency_runs`` runs in a row,
    each with its per-hop split (bench/traced.py) and every process's CPU seconds over the run."""
    runs = [_latency_run(cfg, bootstrap, i) for i in range(cfg.latency_runs)]
    for i, r in enumerate(runs):
        lat = r["latencies"]
        tag = f"latency.run{i + 1}"
        out.add(f"{tag}.p50_p95_p99_ms", [round(percentile(lat, q)) for q in (50, 95, 99)])
        out.add(f"{tag}.events_per_s", round(r["events_per_s"]))
        out.add(f"{tag}.measured", f"{len(lat)} of {r['orders']} orders")
        out.add(f"{tag}.cpu_s", {**r["cpu_s"], "wall": round(r["wall_s"], 1), "load1": round(r["load"], 2)})
        for hop in HOPS:
            ms = r["hops"][hop]
            out.add(f"{tag}.hop.{hop}", f"p50 {percentile(ms, 50):.1f} / p99 {percentile(ms, 99):.1f} ms")
        # the shop's producer alone, inside the first hop: produce() → the broker's acknowledgement (its
        # delivery report, served by the producer's poll after every event: up to about 1 ms late)
        acked, failed = r["acked"], r["not_acked"]
        summary = f"p50 {percentile(acked, 50):.1f} / p99 {percentile(acked, 99):.1f} ms" if acked else "none acknowledged"
        out.add(f"{tag}.produce → broker acknowledged", summary + (f", {failed} not acknowledged" if failed else ""))
    pooled = [x for r in runs for x in r["latencies"]]
    out.add("latency.runs", len(runs))
    out.add("latency.p50_ms", round(percentile(pooled, 50), 1))
    out.add("latency.p95_ms", round(percentile(pooled, 95), 1))
    out.add("latency.p99_ms", round(percentile(pooled, 99), 1))
    out.add("latency.worst_run_p99_ms", max(round(percentile(r["latencies"], 99)) for r in runs))
    within = sum(1 for r in runs if r["latencies"] and percentile(r["latencies"], 99) <= LATENCY_P99_TARGET_MS)
    out.add("latency.runs_with_p99_within_500ms", f"{within} of {len(runs)}")
    out.add("latency.load1_per_run", [round(r["load"], 2) for r in runs])
    out.add("latency.mean_ms", round(statistics.fmean(pooled), 1) if pooled else None)


def run_bench(cfg: BenchConfig, parts: list[str], bootstrap: str | None = None) -> Figures:
    from streams.kafka.embedded_broker import kafka_bootstrap

    figures = Figures()
    if "core" in parts:
        bench_core(cfg, figures)
        bench_state(cfg, figures)
    if "simulate" in parts:
        bench_simulate(cfg, figures)
    if "instructions" in parts:
        bench_instructions(cfg, figures)
    if "guard" in parts:
        from bench.guard import bench_guard

        bench_guard(cfg.guard_customers, cfg.guard_days, cfg.guard_rounds, figures)
    if "guard-instructions" in parts:
        from bench.guard import bench_guard_instructions

        bench_guard_instructions(cfg.core_customers // 4, cfg.core_days, figures)
    broker_parts = [p for p in parts if p in ("worker", "scaleout", "restore", "latency", "sink")]
    if broker_parts:
        with kafka_bootstrap(bootstrap) as bs:
            events: list[tuple[str, dict[str, Any]]] | None = None
            if "worker" in parts:
                events = bench_worker(cfg, bs, figures)
            if "scaleout" in parts:
                if events is None:
                    events = list(generate(TrafficSpec(customers=cfg.worker_customers, days=cfg.worker_days, seed=3)))
                bench_scaleout(events, bs, figures)
            if "restore" in parts:
                bench_restore(cfg, bs, figures)
            if "latency" in parts:
                bench_latency(cfg, bs, figures)
            if "sink" in parts:
                bench_sink(cfg, bs, figures)
    return figures
