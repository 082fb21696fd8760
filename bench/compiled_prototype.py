"""`shopmail bench --parts compiled-prototype`: the compiled batch engine prototype
(prototypes/compiled_engine) on the live path, against the shipped worker and the Quix Streams baseline.

The worker bench's input (``worker_customers`` × ``worker_days``, seed 3: 101,731 events at full size) is
produced once to the four input topics of a real broker; then, ``pairs`` times and in a rotating order,
four runs, each a process of its own, read all of it from the start with their own consumer group,
exactly-once:

- the prototype (``python -m prototypes.compiled_engine.live``; the records of a partition's topics merged by
  event time, as the worker does and as Quix aligns its streams), twice: with Quix's rule (a step fires at the
  customer's next event past its delay) and with ``--timers`` (on the partition's clock, the worker's rule):
  compiled decode + cart-abandonment state
  + EmailCommand Avro bytes + a changelog record per changed customer, a transaction per 500 records;
- the worker (``ProcessorRuntime``, what `shopmail worker` runs, in a child process of its own);
- bench/quix_app.py (its virtualenv), committing every 500 records like the worker.

Each reports its events/s (first record → last commit) and its CPU seconds from /proc/self/stat (every
thread) from making its clients to its last commit. The first round also checks the work: the prototype's
abandoned-cart commands per step must equal Quix's (the same rules); the worker's abandoned-cart commands
per step are read back from its commands topic and shown beside them (timers, guards: not the same rules).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.runner import (_produce_inputs, _quix_python, _quix_specs, _worker, _worker_settings)
from schemas import serde
from streams.kafka.topics import ensure_topics
from streams.tools.traffic import TrafficSpec, generate

ROOT = Path(__file__).resolve().parent.parent
PROTOTYPE = ROOT / "prototypes" / "compiled_engine"


def _cpu_s() -> float:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _json_line(run: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed: {(run.stderr or run.stdout).strip()[-800:]}")
    out: dict[str, Any] = {}
    for ln in lines:
        out.update(json.loads(ln))
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_prototype(bootstrap: str, prefix: str, group: str, n: int, timers: bool) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "prototypes.compiled_engine.live", "--bootstrap", bootstrap,
                          "--prefix", prefix, "--group", group, "--expect", str(n)] + (["--timers"] if timers else []),
                         capture_output=True, text=True, timeout=900, check=False, env=_env(), cwd=ROOT)
    return _json_line(run, "the compiled engine prototype")


def run_worker(bootstrap: str, prefix: str, app_id: str, n: int, count_steps: bool) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.compiled_prototype", "worker", bootstrap, prefix, app_id, str(n)]
    run = subprocess.run(args + (["count"] if count_steps else []), capture_output=True, text=True, timeout=900,
                         check=False, env=_env(), cwd=ROOT)
    return _json_line(run, "the worker")


def run_quix(python: str, bootstrap: str, prefix: str, group: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shopmail-quix-") as state:
        run = subprocess.run([python, str(PROTOTYPE / "quix_cpu.py"), str(ROOT / "bench" / "quix_app.py"), bootstrap,
                              prefix, group, str(n), str(Path(serde.__file__).parent), "500", state],
                             capture_output=True, text=True, timeout=900, check=False)
    return _json_line(run, "the Quix baseline")


def _worker_child(bootstrap: str, prefix: str, app_id: str, n: int, count_steps: bool) -> None:
    """In the worker's own process: ``_worker`` (the bench's harness of ``ProcessorRuntime``) and its CPU."""
    s = _worker_settings("bench-proto-worker")
    s.topics.prefix = prefix
    s.worker.app_id = app_id
    assert ensure_topics(bootstrap, _quix_specs(s), kafka=s.kafka).healthy
    import streams.runtime.worker  # noqa: F401  (imported before the CPU count starts, as the others are)

    started = _cpu_s()
    run = _worker(s, bootstrap, n)
    cpu = _cpu_s() - started
    out: dict[str, Any] = {"events": run.events, "seconds": round(run.seconds, 3), "cpu_s": round(cpu, 3),
                           "commands": run.commands, "transactions": run.transactions}
    if count_steps:
        from streams.kafka.io import read_topic

        records = read_topic(bootstrap, s.topics.name("commands"), expect=run.commands, timeout_s=120,
                             kafka=s.kafka)
        steps = Counter(r["step"] for r in (m.decoded().record for m in records) if r["flow"] == "abandoned_cart")
        out["abandoned_cart_by_step"] = [steps.get(i, 0) for i in (1, 2, 3)]
        out["commands_read_back"] = len(records)
    print(json.dumps(out))


def _quix_steps(bootstrap: str, prefix: str, expect: int) -> list[int]:
    """Quix's JSON commands per step, read back from its output topic (written by the first Quix run)."""
    from streams.kafka.io import read_topic

    records = read_topic(bootstrap, prefix + "quix.commands", expect=expect, timeout_s=120)
    steps = Counter(json.loads(r.value)["step"] for r in records)
    return [steps.get(i, 0) for i in (1, 2, 3)]


def compare_with_worker(bootstrap: str, prefix: str, worker_topic: str) -> dict[str, int]:
    """The prototype's commands (``--timers``) against the worker's abandoned-cart commands, by command id
    (hash of flow, step, customer and trigger event) and byte for byte. Every round wrote the same commands
    again (deterministic ids), so each side is read as a set."""
    from prototypes.compiled_engine.live import output_topics
    from streams.kafka.io import read_topic

    mine = {serde.decode(r.value).record["command_id"]: r.value
            for r in read_topic(bootstrap, output_topics(prefix, True)[0], timeout_s=300, idle_s=3)}
    worker = {}
    for r in read_topic(bootstrap, worker_topic, timeout_s=300, idle_s=3):
        cmd = serde.decode(r.value).record
        if cmd["flow"] == "abandoned_cart":
            worker[cmd["command_id"]] = r.value
    same_ids = mine.keys() & worker.keys()
    differing: Counter[str] = Counter()  # field → commands where it differs
    for k in same_ids:
        if mine[k] != worker[k]:
            a, b = serde.decode(mine[k]).record, serde.decode(worker[k]).record
            ca, cb = json.loads(a.pop("context")), json.loads(b.pop("context"))
            differing.update(f for f in a if a[f] != b[f])
            differing.update(f"context.{f}" for f in ca.keys() | cb.keys() if ca.get(f) != cb.get(f))
    return {"prototype_timers": len(mine), "worker": len(worker), "same_command_id": len(same_ids),
            "same_bytes": sum(1 for k in same_ids if mine[k] == worker[k]), "fields_differing": dict(differing)}


def bench_compiled_prototype(customers: int, days: int, pairs: int, bootstrap: str, out: Any) -> None:
    base = _worker_settings("bench-proto")
    assert ensure_topics(bootstrap, _quix_specs(base), kafka=base.kafka).healthy
    events = list(generate(TrafficSpec(customers=customers, days=days, seed=3)))
    _produce_inputs(base, bootstrap, events)
    n = len(events)
    prefix = base.topics.prefix
    python, version = _quix_python(base)
    runs: dict[str, list[dict[str, Any]]] = {"prototype": [], "prototype_timers": [], "worker": [], "quix": []}
    order = ["prototype", "worker", "prototype_timers", "quix"] if python else ["prototype", "worker",
                                                                                 "prototype_timers"]
    for r in range(pairs):
        for who in order[r % len(order):] + order[:r % len(order)]:
            tag = f"{base.worker.app_id}-{who}{r}"
            if who.startswith("prototype"):
                res = run_prototype(bootstrap, prefix, tag, n, timers=who == "prototype_timers")
            elif who == "worker":
                res = run_worker(bootstrap, prefix, tag, n, count_steps=not runs["worker"])
            else:
                assert python is not None
                res = run_quix(python, bootstrap, prefix, tag, n)
                if not runs["quix"]:
                    res["abandoned_cart_by_step"] = _quix_steps(bootstrap, prefix, res["commands"])
            if res["events"] < n:
                raise RuntimeError(f"{who} (round {r + 1}) processed {res['events']} of {n} records")
            res["events_per_s"] = round(res["events"] / res["seconds"])
            res["cpu_us_per_event"] = round(1e6 * res["cpu_s"] / res["events"], 1)
            runs[who].append(res)
            out.add(f"compiled_prototype.run.{r + 1}.{who}", {k: res[k] for k in ("events_per_s", "cpu_s",
                                                                                   "cpu_us_per_event")})
    out.add("compiled_prototype.events", n)
    out.add("compiled_prototype.pairs", pairs)
    if not python:
        out.add("compiled_prototype.quix_unavailable", version)
    else:
        out.add("compiled_prototype.quix_version", version)
    med = {who: (statistics.median(x["events_per_s"] for x in rs), statistics.median(x["cpu_s"] for x in rs))
           for who, rs in runs.items() if rs}
    for who, (rate, cpu) in med.items():
        out.add(f"compiled_prototype.{who}.events_per_s", [x["events_per_s"] for x in runs[who]])
        out.add(f"compiled_prototype.{who}.cpu_s", [x["cpu_s"] for x in runs[who]])
    for mine in ("prototype", "prototype_timers"):
        for other in ("worker", "quix"):
            if other in med:
                out.add(f"compiled_prototype.{mine}.events_per_s_ratio_to_{other}",
                        round(med[mine][0] / med[other][0], 2))
                out.add(f"compiled_prototype.{mine}.cpu_ratio_to_{other}", round(med[mine][1] / med[other][1], 3))
        first = runs[mine][0]
        for key in ("commands_by_step", "changelog_records", "dead_letters", "transactions"):
            out.add(f"compiled_prototype.{mine}.{key}", first[key])
    out.add("compiled_prototype.abandoned_cart_commands_compared",
            compare_with_worker(bootstrap, prefix, base.topics.name("commands")))
    proto = runs["prototype"][0]
    out.add("compiled_prototype.worker.commands", runs["worker"][0]["commands"])
    out.add("compiled_prototype.worker.abandoned_cart_by_step", runs["worker"][0]["abandoned_cart_by_step"])
    if runs["quix"]:
        quix_steps = runs["quix"][0]["abandoned_cart_by_step"]
        out.add("compiled_prototype.quix.abandoned_cart_by_step", quix_steps)
        out.add("compiled_prototype.prototype_commands_equal_quix", quix_steps == proto["commands_by_step"])


def bench_part(cfg: Any, out: Any, pairs: int = 3) -> None:
    """The part as `shopmail bench --parts compiled-prototype` runs it: the worker bench's size, on the
    broker the bench uses (``KAFKA_BOOTSTRAP_SERVERS``, else an embedded one)."""
    from streams.kafka.embedded_broker import kafka_bootstrap

    with kafka_bootstrap(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
        bench_compiled_prototype(cfg.worker_customers, cfg.worker_days, pairs, bootstrap, out)


if __name__ == "__main__":  # the worker's child process: worker BOOTSTRAP PREFIX APP_ID N [count]
    if sys.argv[1:2] == ["worker"]:
        _worker_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6:7] == ["count"])
