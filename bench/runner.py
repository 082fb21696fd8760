"""`shopmail bench`: throughput, latency and memory figures, each with its baseline measured in the
same run (these machines are noisy: ratios, not absolute numbers, are the figures to quote).

1. core     — the domain core alone (the `simulate` path) in events/s on one core, against the raw
              fastavro decode rate of the same events (the ceiling); state bytes per active customer.
2. worker   — `ProcessorRuntime` through the embedded broker, against a plain confluent-kafka
              consume→produce loop over the same topics.
3. latency  — OrderEvent produced → SES answered (the sink's `sent` outcome time), p50/p95/p99 at a
              steady event rate; worker, sink and moto each in their own process.
4. sink     — sends/s against moto with the rate limit off, and the measured rate with it on.
5. simulate — `shopmail simulate` (one process per CPU) over a year of synthetic traffic for
              ``simulate_customers`` customers (full size: 100k, the issue's target is < 60 s), against
              the same run with one process.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

from bench.traffic import TrafficSpec, generate
from streams.runtime import background
from schemas import serde
from streams.config import Settings, load_settings
from streams.kafka.io import consumer_config, producer_config
from streams.tools.simulate import Simulator, default_workers
from streams.kafka.topics import INPUT_TOPICS, VALUE_SCHEMA, ensure_topics, topic_specs


@dataclass
class BenchConfig:
    core_customers: int = 20_000
    core_days: int = 90
    state_customers: int = 20_000
    worker_customers: int = 3_000
    worker_days: int = 30
    latency_seconds: float = 10.0
    latency_rate: int = 1000
    sink_commands: int = 600
    sink_rate: float = 100.0
    simulate_customers: int = 100_000


QUICK = BenchConfig(core_customers=3_000, core_days=60, state_customers=3_000, worker_customers=800,
                    worker_days=30, latency_seconds=6.0, latency_rate=1000, sink_commands=300, sink_rate=100.0,
                    simulate_customers=10_000)
TINY = BenchConfig(core_customers=200, core_days=30, state_customers=200, worker_customers=100, worker_days=10,
                   latency_seconds=2.0, latency_rate=200, sink_commands=40, sink_rate=50.0,
                   simulate_customers=300)


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
    for topic, rec in events:
        commands += len(sim.apply(topic, rec).commands)
    core_s = time.perf_counter() - t0
    out.add("core.events", len(events))
    out.add("core.commands", commands)
    out.add("core.events_per_s", round(len(events) / core_s))
    out.add("core.decode_ceiling_per_s", round(len(encoded) / decode_s))
    out.add("core.ratio_to_decode", round((len(events) / core_s) / (len(encoded) / decode_s), 3))


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

    from bench.traffic import write_jsonl

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


# ---- 2. worker vs plain loop -------------------------------------------------------------------

def _produce_inputs(settings: Settings, bootstrap: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    p = Producer(producer_config(settings, bootstrap, **{"linger.ms": 20, "batch.num.messages": 10000}))
    for i, (topic, rec) in enumerate(events):
        p.produce(settings.topics.name(topic), key=rec["customer_id"].encode(),
                  value=serde.encode(VALUE_SCHEMA[topic], rec))
        if i % 20000 == 0:
            p.poll(0)
    p.flush(60)


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


def _worker(settings: Settings, bootstrap: str, n: int) -> float:
    from streams.runtime.worker import ProcessorRuntime

    runtime = ProcessorRuntime(settings, bootstrap, instance_id="bench", write_ticks=False)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not runtime.engines and time.monotonic() < deadline:  # assigned and state restored
        time.sleep(0.001)
    start = time.perf_counter()
    while runtime.stats.events < n and time.monotonic() < deadline:
        time.sleep(0.005)
    end = time.perf_counter()
    stop.set()
    thread.join(30)
    return runtime.stats.events / (end - start)


def bench_worker(cfg: BenchConfig, bootstrap: str, out: Figures) -> None:
    settings = load_settings(env={})
    settings.topics.prefix = f"bench-{int(time.time())}."
    settings.topics.partitions = 2
    settings.worker.app_id = f"bench-{int(time.time())}"
    settings.worker.store = "memory://"
    settings.worker.tick_interval_s = 0
    assert ensure_topics(bootstrap, topic_specs(settings), kafka=settings.kafka).healthy
    events = list(generate(TrafficSpec(customers=cfg.worker_customers, days=cfg.worker_days, seed=3)))
    _produce_inputs(settings, bootstrap, events)
    plain = _plain_loop(settings, bootstrap, len(events))
    worker = _worker(settings, bootstrap, len(events))
    out.add("worker.events", len(events))
    out.add("worker.events_per_s", round(worker))
    out.add("worker.plain_loop_per_s", round(plain))
    out.add("worker.ratio_to_plain", round(worker / plain, 3))


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
    recorded by a proxy in between (outcome timestamps are per transaction, too coarse for a rate)."""
    import json

    from bench.fault_proxy import FaultProxy

    for label, rate in (("unlimited", 0.0), ("limited", cfg.sink_rate)):
        s = _bench_settings(f"bench-sink-{label}")
        s.ses.max_send_rate = rate
        assert ensure_topics(bootstrap, topic_specs(s), kafka=s.kafka).healthy
        ses = _Ses(s)
        proxy = FaultProxy(ses.url)
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
        sink = _child(["sink", "--instance-id", f"bench-{label}"], s, bootstrap,
                      {"SHOPMAIL_SES__MAX_CONCURRENCY": "8"})
        try:
            _outcomes(s, bootstrap, cfg.sink_commands, timeout_s=300)
            times = sorted(r.at for r in proxy.sends())
            span = (times[-1] - times[0]) if len(times) > 1 else float("nan")
            out.add(f"sink.{label}.sends", len(times))
            out.add(f"sink.{label}.sends_per_s", round((len(times) - 1) / span, 1) if span == span and span > 0 else None)
            if label == "limited":
                worst = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
                out.add("sink.limited.configured_rate", rate)
                out.add("sink.limited.max_in_any_1s", worst)
        finally:
            sink.terminate()
            sink.wait(30)
            proxy.close()
            ses.close()


def _child(args: list[str], settings: Settings, bootstrap: str, extra: dict[str, str]) -> Any:
    """A `shopmail` subprocess with the bench's settings (like a pod: its own interpreter and GIL)."""
    import os
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
    return subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def bench_latency(cfg: BenchConfig, bootstrap: str, out: Figures) -> None:
    """Steady event rate (10 % orders) with the worker, the sink and moto in their own processes;
    latency = the sink's `sent` outcome time (right after SES answered) − order produce time."""
    import random

    from streams.core.ids import command_id

    s = _bench_settings("bench-latency")
    s.worker.tick_interval_s = 1.0
    s.ses.max_send_rate = 0.0
    assert ensure_topics(bootstrap, topic_specs(s), kafka=s.kafka).healthy
    ses = _Ses(s)
    worker = _child(["worker", "--instance-id", "bench-latency"], s, bootstrap, {})
    sink = _child(["sink", "--instance-id", "bench-latency"], s, bootstrap, {})
    try:
        producer = Producer(producer_config(s, bootstrap, **{"linger.ms": 0}))
        # warm-up: wait until an order goes all the way through (group joins, state restore)
        warm = {"event_id": "warm-o", "customer_id": "warm", "occurred_at": int(time.time() * 1000), "type": "placed",
                "order_id": "warm", "email": "warm@example.com", "total": "1.00", "currency": "EUR",
                "items": [{"sku": "S", "name": "Mug", "price": "1.00", "quantity": 1}]}
        producer.produce(s.topics.name("orders"), key=b"warm", value=serde.encode("OrderEvent", serde.from_json("OrderEvent", warm)))
        producer.flush(10)
        _outcomes(s, bootstrap, 1, timeout_s=90)
        produced: dict[str, float] = {}
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
                producer.produce(s.topics.name("orders"), key=cid.encode(),
                                 value=serde.encode("OrderEvent", serde.from_json("OrderEvent", rec)))
                produced[command_id("order_confirmation", 1, cid, rec["event_id"])] = time.time() * 1000
            else:
                rec = {"event_id": f"lat-c{i}", "customer_id": cid, "occurred_at": at, "type": "item_added",
                       "cart_id": f"k-{cid}", "items": [{"sku": "S", "name": "Mug", "price": "9.00", "quantity": 1}]}
                producer.produce(s.topics.name("carts"), key=cid.encode(),
                                 value=serde.encode("CartEvent", serde.from_json("CartEvent", rec)))
            producer.poll(0)
        producer.flush(30)
        achieved = n / (time.perf_counter() - start)
        outs = _outcomes(s, bootstrap, len(produced) + 1, timeout_s=120)
        latencies = [o["occurred_at"] - produced[o["command_id"]] for o in outs
                     if o["command_id"] in produced and o["outcome"] == "sent"]
        out.add("latency.events_per_s", round(achieved))
        out.add("latency.orders", len(produced))
        out.add("latency.measured", len(latencies))
        out.add("latency.p50_ms", round(percentile(latencies, 50), 1))
        out.add("latency.p95_ms", round(percentile(latencies, 95), 1))
        out.add("latency.p99_ms", round(percentile(latencies, 99), 1))
        out.add("latency.mean_ms", round(statistics.fmean(latencies), 1) if latencies else None)
    finally:
        for proc in (sink, worker):
            proc.terminate()
        for proc in (sink, worker):
            try:
                proc.wait(30)
            except Exception:  # noqa: BLE001
                proc.kill()
        ses.close()


def run_bench(cfg: BenchConfig, parts: list[str], bootstrap: str | None = None) -> Figures:
    from streams.kafka.embedded_broker import kafka_bootstrap

    figures = Figures()
    if "core" in parts:
        bench_core(cfg, figures)
        bench_state(cfg, figures)
    if "simulate" in parts:
        bench_simulate(cfg, figures)
    broker_parts = [p for p in parts if p in ("worker", "latency", "sink")]
    if broker_parts:
        with kafka_bootstrap(bootstrap) as bs:
            if "worker" in parts:
                bench_worker(cfg, bs, figures)
            if "latency" in parts:
                bench_latency(cfg, bs, figures)
            if "sink" in parts:
                bench_sink(cfg, bs, figures)
    return figures
