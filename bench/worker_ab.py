"""`shopmail bench --parts worker --worker-baseline TREE`: the worker's CPU per event, this tree against
another release's, as `shopmail worker` child processes on the same input, interleaved.

The worker bench's input (``cfg.worker_customers`` × ``cfg.worker_days``, seed 3: 101,731 events at full
size) is produced once to the input topics of a real broker, each record encoded with the baseline
tree's own contract of its topic (its ``schemas/<Name>.avsc``), so both releases read every record: this
tree reads an older contract as an older writer version. Then ``cfg.worker_pairs`` pairs run, the
baseline first in each: one `shopmail worker` process of that tree (``PYTHONPATH=<tree>``), with its own
consumer group, changelog, instance id and output topics (commands, audiences, coupons: a runtime that
finds command ids already in its commands topic does not emit them again), reading every record from the
start. Its CPU seconds (user + system, /proc) are read from its start to the moment its group has
committed every input record. Start-up is taken out: before each measured run the same tree's worker is
started the same way on empty input topics and its CPU seconds read once it reports both partitions
assigned (``/healthz``) and it has idled a further second; that idle start-up (imports, topic check,
group join, empty restore, a second of polling) is subtracted.

``--worker-env KEY=VALUE`` sets a setting for this tree's worker only (and its idle start-up): one
the baseline does not know, e.g. to switch off a feature added since.

The commands of the two runs of a pair are read back and compared: the same command ids, and the same
bytes where the two releases' EmailCommand contracts are the same (Parsing Canonical Form). The figures:
CPU ms per event per side per pair, the ratio (this ÷ baseline) per pair and its median.
"""

from __future__ import annotations

import copy
import io
import json
import os
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from bench.runner import (BenchConfig, Figures, _Committed, _child, _cpu_s, _in_tree, _quix_specs, _stop,
                          _worker_settings)
from schemas import serde
from streams.config import Settings
from streams.kafka.embedded_broker import free_port
from streams.kafka.io import produce_encoded, read_topic
from streams.kafka.topics import VALUE_SCHEMA, ensure_topics
from streams.tools.traffic import TrafficSpec, generate

HERE = str(Path(__file__).resolve().parent.parent)
OUTPUTS = ("commands", "audiences", "coupons")  # per run: a runtime skips command ids already in its commands topic
SINGLE_OBJECT_MAGIC = b"\xc3\x01"


@dataclass
class AbRun:
    side: str  # "before" (the baseline tree) or "now" (this tree)
    pair: int
    events: int
    cpu_s: float  # start → every input record committed
    idle_start_cpu_s: float  # the same tree's worker, start → assigned and idle (subtracted)
    wall_s: float
    load1: float
    commands: dict[str, bytes] = field(repr=False, default_factory=dict)  # command_id → value bytes

    @property
    def cpu_ms_per_event(self) -> float:
        return (self.cpu_s - self.idle_start_cpu_s) * 1000 / self.events


def contract(tree: str, name: str) -> dict[str, Any]:
    """The tree's current Avro contract ``name`` (schemas/<name>.avsc), parsed."""
    with open(os.path.join(tree, "schemas", f"{name}.avsc")) as f:
        return fastavro.parse_schema(json.load(f))


def same_contract(tree_a: str, tree_b: str, name: str) -> bool:
    return to_parsing_canonical_form(contract(tree_a, name)) == to_parsing_canonical_form(contract(tree_b, name))


def encode_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Single-object encoding with ``schema`` as the writer (header: magic + CRC-64-AVRO fingerprint, LE)."""
    fp = int(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"), 16)
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + fp.to_bytes(8, "little"))
    fastavro.schemaless_writer(buf, schema, record)  # fields the contract does not have are not written
    return buf.getvalue()


def encoded_inputs(events: list[tuple[str, dict[str, Any]]], baseline: str) -> list[tuple[str, bytes, bytes]]:
    """(logical topic, key, value) per event, each value written with the baseline tree's contract."""
    schemas: dict[str, dict[str, Any]] = {}
    rows = []
    for topic, rec in events:
        name = VALUE_SCHEMA[topic]
        if name not in schemas:
            schemas[name] = contract(baseline, name)
        rows.append((topic, str(rec["customer_id"]).encode(), encode_with(schemas[name], rec)))
    for topic, _, value in rows[:1] + rows[-1:]:  # this tree reads the baseline's writer version
        serde.decode(value, VALUE_SCHEMA[topic])
    return rows


def produce_rows(settings: Settings, bootstrap: str, rows: list[tuple[str, bytes, bytes]]) -> None:
    produce_encoded(settings, bootstrap, ((settings.topics.name(topic), key, value) for topic, key, value in rows),
                    **{"linger.ms": 20, "batch.num.messages": 10000})


def run_settings(base: Settings, name: str) -> Settings:
    """``base``'s input topics; its own group, changelog and outputs."""
    s = copy.deepcopy(base)
    s.worker.app_id = f"{base.worker.app_id}-{name}"
    for output in OUTPUTS:
        setattr(s.topics, output, f"{getattr(base.topics, output)}-{name}")
    return s


def child_env(s: Settings) -> dict[str, str]:
    """The run's output topics. Every other setting is the tree's own default (``--worker-env`` sets one
    for this tree only)."""
    return {f"SHOPMAIL_TOPICS__{output.upper()}": getattr(s.topics, output) for output in OUTPUTS}


def idle_start_cpu(tree: str, base: Settings, bootstrap: str, name: str, extra: dict[str, str]) -> float:
    """CPU seconds of the tree's worker on empty input topics, from its start until it reports both
    partitions assigned (/healthz) and has idled one second more."""
    s = run_settings(base, name)
    s.topics.prefix = f"{base.topics.prefix}idle-{name}."
    assert ensure_topics(bootstrap, _quix_specs(s), kafka=s.kafka).healthy
    port = free_port()
    proc = _child(["worker", "--instance-id", name], s, bootstrap,
                  {**child_env(s), **extra, "SHOPMAIL_WORKER__WEB_PORT": str(port)}, tree=tree)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker of {tree} exited with {proc.returncode} before it was assigned")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker of {tree} was not assigned both partitions in 120 s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
            except (OSError, ValueError):
                body = {}
            details = body.get("details", body)
            if len(details.get("assigned_partitions", [])) == s.topics.partitions and not details.get("restoring"):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        return _cpu_s(proc.pid)
    finally:
        _stop([proc])


def run_side(tree: str, side: str, pair: int, base: Settings, bootstrap: str, n: int,
             extra: dict[str, str] | None = None) -> AbRun:
    """One measured run of ``tree``'s worker; ``extra``: more environment for it (and its idle start-up)."""
    name = f"{side}{pair}"
    extra = extra or {}
    idle = idle_start_cpu(tree, base, bootstrap, f"{name}-idle", extra)
    s = run_settings(base, name)
    assert ensure_topics(bootstrap, _quix_specs(s), kafka=s.kafka).healthy
    committed = _Committed(s, bootstrap)
    t0 = time.perf_counter()
    proc = _child(["worker", "--instance-id", name], s, bootstrap, {**child_env(s), **extra}, tree=tree)
    try:
        deadline = time.monotonic() + 1800
        while True:
            done = committed.total()
            if done >= n:
                cpu = _cpu_s(proc.pid)
                wall = time.perf_counter() - t0
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the worker of {tree} exited with {proc.returncode} after {done} of {n} records")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker of {tree} committed {done} of {n} records in 1800 s")
            time.sleep(0.05)
    finally:
        _stop([proc])
        committed.close()
    records = read_topic(bootstrap, s.topics.name("commands"), timeout_s=300, kafka=s.kafka)
    commands = {serde.decode(r.value).record["command_id"]: bytes(r.value) for r in records}
    if len(commands) != len(records):
        raise RuntimeError(f"{side} pair {pair}: {len(records)} command records but {len(commands)} command ids")
    return AbRun(side, pair, n, cpu, idle, wall, os.getloadavg()[0], commands)


@dataclass
class CommandDifference:
    only_before: list[str]
    only_now: list[str]
    bytes_compared: bool  # the two EmailCommand contracts are the same
    differing: dict[str, list[str]]  # command_id → the fields whose values differ (bytes compared only)
    context_keys: dict[str, int] = field(default_factory=dict)  # "<flow>/<step>: <context key>" → commands

    @property
    def same(self) -> bool:
        return not (self.only_before or self.only_now or self.differing)

    def summary(self) -> dict[str, Any]:
        fields: dict[str, int] = {}
        for names in self.differing.values():
            for f in names:
                fields[f] = fields.get(f, 0) + 1
        return {"same": self.same, "only_before": len(self.only_before), "only_now": len(self.only_now),
                "bytes_compared": self.bytes_compared, "bytes_differ": len(self.differing),
                "fields_differing": fields, "context_keys_differing": self.context_keys, "examples": (self.only_before[:3] + self.only_now[:3]
                                                         + list(self.differing)[:3])}


def compare_commands(before: dict[str, bytes], now: dict[str, bytes], bytes_comparable: bool) -> CommandDifference:
    only_before = sorted(set(before) - set(now))
    only_now = sorted(set(now) - set(before))
    differing: dict[str, list[str]] = {}
    context_keys: dict[str, int] = {}
    if bytes_comparable:
        for cid in sorted(set(before) & set(now)):
            if before[cid] != now[cid]:
                a, b = serde.decode(before[cid]).record, serde.decode(now[cid]).record
                differing[cid] = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                if "context" in differing[cid]:
                    for key in differing_keys(json.loads(a["context"]), json.loads(b["context"])):
                        label = f"{b['flow']}/{b['step']}: {key}"
                        context_keys[label] = context_keys.get(label, 0) + 1
    return CommandDifference(only_before, only_now, bytes_comparable, differing, context_keys)


def transaction_settings(tree: str, extra: dict[str, str]) -> str:
    """How ``tree``'s worker bounds a transaction with ``extra`` in its environment (a release without
    ``worker.commit_interval_ms`` bounds it by ``worker.batch_size`` alone)."""
    batch, interval = _in_tree(tree, "print(s.worker.batch_size, getattr(s.worker, 'commit_interval_ms', 0))",
                               extra).split()
    return f"{batch} records" + (f" or {interval} ms" if int(interval) > 0 else "")


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def bench_worker_ab(cfg: BenchConfig, bootstrap: str, out: Figures) -> list[AbRun]:
    baseline = cfg.worker_baseline or HERE
    base = _worker_settings("bench-worker-ab")
    assert ensure_topics(bootstrap, _quix_specs(base), kafka=base.kafka).healthy
    events = list(generate(TrafficSpec(customers=cfg.worker_customers, days=cfg.worker_days, seed=3)))
    produce_rows(base, bootstrap, encoded_inputs(events, baseline))
    n = len(events)
    bytes_comparable = same_contract(baseline, HERE, "EmailCommand")
    runs: list[AbRun] = []
    differences: list[dict[str, Any]] = []
    for pair in range(cfg.worker_pairs):  # the order alternates: a load that drifts within a pair favours neither
        if pair % 2 == 0:
            before = run_side(baseline, "before", pair, base, bootstrap, n)
            now = run_side(HERE, "now", pair, base, bootstrap, n, cfg.worker_env)
        else:
            now = run_side(HERE, "now", pair, base, bootstrap, n, cfg.worker_env)
            before = run_side(baseline, "before", pair, base, bootstrap, n)
        runs += [before, now]
        differences.append(compare_commands(before.commands, now.commands, bytes_comparable).summary())
    befores = [r for r in runs if r.side == "before"]
    nows = [r for r in runs if r.side == "now"]
    ratios = [a.cpu_ms_per_event / b.cpu_ms_per_event if b.cpu_ms_per_event > 0 else float("nan")
              for b, a in zip(befores, nows)]
    out.add("worker_ab.baseline", baseline)
    if cfg.worker_env:
        out.add("worker_ab.now.env", cfg.worker_env)
    out.add("worker_ab.before.transaction", transaction_settings(baseline, {}))
    out.add("worker_ab.now.transaction", transaction_settings(HERE, cfg.worker_env))
    out.add("worker_ab.events", n)
    out.add("worker_ab.pairs", cfg.worker_pairs)
    out.add("worker_ab.before.cpu_ms_per_event", [round(r.cpu_ms_per_event, 4) for r in befores])
    out.add("worker_ab.now.cpu_ms_per_event", [round(r.cpu_ms_per_event, 4) for r in nows])
    out.add("worker_ab.before.cpu_s", [round(r.cpu_s, 2) for r in befores])
    out.add("worker_ab.now.cpu_s", [round(r.cpu_s, 2) for r in nows])
    out.add("worker_ab.before.idle_start_cpu_s", [round(r.idle_start_cpu_s, 2) for r in befores])
    out.add("worker_ab.now.idle_start_cpu_s", [round(r.idle_start_cpu_s, 2) for r in nows])
    out.add("worker_ab.before.wall_s", [round(r.wall_s, 1) for r in befores])
    out.add("worker_ab.now.wall_s", [round(r.wall_s, 1) for r in nows])
    out.add("worker_ab.load1", [round(r.load1, 2) for r in runs])
    out.add("worker_ab.ratio", [round(x, 3) for x in ratios])
    out.add("worker_ab.ratio_median", round(statistics.median(ratios), 3))
    out.add("worker_ab.before.cpu_ms_per_event_median", round(statistics.median(r.cpu_ms_per_event for r in befores), 4))
    out.add("worker_ab.now.cpu_ms_per_event_median", round(statistics.median(r.cpu_ms_per_event for r in nows), 4))
    out.add("worker_ab.before.commands", [len(r.commands) for r in befores])
    out.add("worker_ab.now.commands", [len(r.commands) for r in nows])
    out.add("worker_ab.commands_compared", differences)
    out.add("worker_ab.same_commands", all(d["same"] for d in differences))
    return runs
