"""Does asking the worker about customers (``GET /customers/{id}`` on the ops port) slow its loop?

    python bench/ops_query_latency.py EVENTS.jsonl [--rounds 2] [--query-rate 200] [--batch-size 100]

Starts an embedded broker, produces the file's events into a fresh set of topics per run, and runs the
processor loop (``ProcessorRuntime``) over them until every record is processed, timing each batch the
loop processes (``_process_batch``: merge, engine, produce, commit). Runs alternate: without queries,
and with a thread asking the ops endpoint about the file's customers at ``--query-rate`` per second.
Prints p50 / p99 / max batch time of each run and how many queries were answered.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from streams.config import load_settings
from streams.kafka.embedded_broker import kafka_bootstrap
from streams.kafka.io import produce_events
from streams.kafka.topics import ensure_topics, topic_specs
from streams.runtime import background
from streams.runtime.metrics import health
from streams.runtime.worker import ProcessorRuntime
from streams.tools.simulate import parse_lines
from streams.web import OpsServer, customer_route


class TimedRuntime(ProcessorRuntime):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.batch_s: list[float] = []

    def _process_batch(self, ticks: list[int], turn_started: float) -> None:
        started = time.perf_counter()
        super()._process_batch(ticks, turn_started)
        self.batch_s.append(time.perf_counter() - started)


def one_run(bootstrap: str, events: list[tuple[str, dict[str, Any]]], customers: list[str], n: int,
            query_rate: float, batch_size: int) -> dict[str, Any]:
    settings = load_settings(env={})
    settings.topics.prefix = f"opsbench{n}."
    settings.worker.app_id = f"opsbench-{n}"
    settings.worker.store = "memory://"
    settings.worker.tick_interval_s = 0
    settings.worker.batch_size = batch_size
    assert ensure_topics(bootstrap, topic_specs(settings)).healthy
    produce_events(settings, bootstrap, events)
    runtime = TimedRuntime(settings, bootstrap, instance_id=f"opsbench-{n}", write_ticks=False)
    ops = OpsServer(0, lambda: health(runtime), extra=[customer_route(runtime.customer)]).start()
    stop_queries = threading.Event()
    answered = [0, 0]  # 200, other
    last: list[Any] = [None]  # the last answer of a customer with a step due

    def ask() -> None:
        rng = random.Random(n)
        while not stop_queries.is_set():
            cid = rng.choice(customers)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ops.port}/customers/{cid}", timeout=5) as resp:
                    body = json.load(resp)
                    answered[0] += 1
                    if body.get("next_due"):
                        last[0] = body
            except Exception:  # noqa: BLE001 - 404 before the customer's first record: counted
                answered[1] += 1
            stop_queries.wait(1 / query_rate)

    asker = threading.Thread(target=ask, daemon=True) if query_rate > 0 else None
    worker = background.start(runtime.run, "processor")
    started = time.monotonic()
    try:
        if asker is not None:
            asker.start()
        while runtime.stats.events < len(events):
            assert time.monotonic() - started < 600, "the worker did not process every event within 10 min"
            time.sleep(0.2)
    finally:
        stop_queries.set()
        worker.finish()
        ops.shutdown()
    b = sorted(runtime.batch_s)
    return {"queries": query_rate > 0, "events": runtime.stats.events, "batches": len(b),
            "p50_ms": 1000 * statistics.median(b), "p99_ms": 1000 * b[int(0.99 * (len(b) - 1))],
            "max_ms": 1000 * b[-1], "answered": answered[0], "not_found": answered[1],
            "wall_s": time.monotonic() - started, "sample": last[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("events", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--query-rate", type=float, default=200.0)
    ap.add_argument("--batch-size", type=int, default=100, help="worker.batch_size (smaller: more batches to time)")
    args = ap.parse_args()
    settings = load_settings(env={})
    events = [(lt, rec) for _, lt, rec, bad, _ in parse_lines(args.events.open("rb"), settings) if bad is None]
    customers = sorted({rec["customer_id"] for _, rec in events if "customer_id" in rec})
    with kafka_bootstrap() as bootstrap:
        n = 0
        for r in range(args.rounds):
            for rate in ((0.0, args.query_rate) if r % 2 == 0 else (args.query_rate, 0.0)):
                n += 1
                out = one_run(bootstrap, events, customers, n, rate, args.batch_size)
                print(f"round {r + 1} {'with' if out['queries'] else 'without'} queries: {out['events']} events, "
                      f"{out['batches']} batches, p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms, "
                      f"max {out['max_ms']:.1f} ms; {out['answered']} queries answered "
                      f"({out['not_found']} 404), {out['wall_s']:.1f} s", flush=True)
                if out["sample"] is not None:
                    print(json.dumps(out["sample"], indent=2, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
