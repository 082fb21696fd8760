"""`shopmail generate` (synthetic shop traffic) and `shopmail bench` (figures as a table and JSON)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command()
    def generate(customers: int = typer.Option(1000, min=1, help="number of customers"),
                 days: int = typer.Option(30, min=1, help="days of history"),
                 seed: int = typer.Option(1, help="random seed (same seed, same events)"),
                 jitter_ms: int = typer.Option(0, help="bounded out-of-order shuffle window"),
                 product_views: bool = typer.Option(False, "--product-views",
                                                    help="add product views (browse abandonment); other events unchanged"),
                 output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSONL in the simulate format"),
                 to_kafka: bool = typer.Option(False, "--to-kafka", help="produce to the input topics instead"),
                 config: Optional[Path] = typer.Option(None, "--config", "-c")) -> None:
        """Generate seeded synthetic shop traffic (JSONL for `simulate`, or straight into the topics)."""
        from streams.tools.traffic import TrafficSpec, generate as gen, write_jsonl
        from streams.cli_settings import settings_from

        settings = settings_from(config)
        spec = TrafficSpec(customers=customers, days=days, seed=seed, jitter_ms=jitter_ms, product_views=product_views)
        t0 = time.perf_counter()
        if to_kafka:
            from bench.runner import _produce_inputs
            from streams.kafka.embedded_broker import kafka_bootstrap
            from streams.kafka.topics import ensure_topics, topic_specs

            if not settings.kafka.bootstrap_servers:
                raise typer.BadParameter("set KAFKA_BOOTSTRAP_SERVERS")
            with kafka_bootstrap(settings.kafka.bootstrap_servers, kafka=settings.kafka) as bs:
                ensure_topics(bs, topic_specs(settings), kafka=settings.kafka)
                events = list(gen(spec))
                _produce_inputs(settings, bs, events)
                n = len(events)
        else:
            out = open(output, "w") if output else sys.stdout  # noqa: SIM115
            try:
                n = write_jsonl(spec, out, settings.topics.name)
            finally:
                if output:
                    out.close()
        print(f"generated {n} events in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    @app.command()
    def bench(quick: bool = typer.Option(False, "--quick", help="smaller sizes (worker at ≥ 50k events): a few minutes"),
              tiny: bool = typer.Option(False, "--tiny", hidden=True, help="seconds: for the test suite"),
              parts: str = typer.Option("core,simulate,worker,scaleout,restore,latency,sink", help="which benchmarks"),
              instructions: bool = typer.Option(False, "--instructions",
                                                help="only instructions per event of decode, engine and partition "
                                                     "task under valgrind's callgrind (repeatable on a busy machine)"),
              sink_baseline: Optional[Path] = typer.Option(
                  None, "--sink-baseline", help="a source tree of another release: its sink and this one's run "
                                                "interleaved (--sink-pairs pairs) and compared"),
              sink_pairs: int = typer.Option(3, "--sink-pairs", help="interleaved sink pairs with --sink-baseline"),
              sink_emulators: Optional[int] = typer.Option(
                  None, "--sink-emulators", min=1, help="SES emulator processes in the sink runs, called in turn "
                                                        "(default 2; 1 in --tiny)"),
              worker_baseline: Optional[Path] = typer.Option(
                  None, "--worker-baseline", help="a source tree of another release: its `shopmail worker` and this "
                                                  "one's run interleaved (--worker-pairs pairs) on the worker bench's "
                                                  "input, CPU per event compared (bench/worker_ab.py)"),
              worker_pairs: int = typer.Option(3, "--worker-pairs", min=1,
                                               help="interleaved worker pairs with --worker-baseline"),
              worker_env: list[str] = typer.Option(
                  [], "--worker-env", help="KEY=VALUE in the environment of this tree's worker only, with "
                                           "--worker-baseline (e.g. SHOPMAIL_DELIVERABILITY__ENABLED=false: "
                                           "settings the baseline does not know); repeatable"),
              latency_linger_ms: int = typer.Option(5, "--latency-linger-ms", min=0,
                                                    help="linger.ms of the shop's producer in the latency runs "
                                                         "(5: librdkafka's default; 0: every record its own request)"),
              as_json: Optional[Path] = typer.Option(None, "--json", help="write the figures as JSON")) -> None:
        """Benchmarks: domain core vs decode ceiling, simulate over a year, worker vs plain loop and Quix Streams,
        scale-out, restore, latency, sink rate."""
        from bench.runner import QUICK, TINY, BenchConfig, run_bench

        cfg = dataclasses.replace(TINY if tiny else QUICK if quick else BenchConfig(), latency_linger_ms=latency_linger_ms)
        if sink_emulators is not None:
            cfg = dataclasses.replace(cfg, sink_emulators=sink_emulators)
        if sink_baseline is not None:
            cfg = dataclasses.replace(cfg, sink_baseline=str(sink_baseline.resolve()), sink_pairs=sink_pairs)
        if worker_baseline is not None:
            bad = [kv for kv in worker_env if "=" not in kv]
            if bad:
                raise typer.BadParameter(f"not KEY=VALUE: {', '.join(bad)}", param_hint="--worker-env")
            cfg = dataclasses.replace(cfg, worker_baseline=str(worker_baseline.resolve()), worker_pairs=worker_pairs,
                                      worker_env=dict(kv.split("=", 1) for kv in worker_env))
        t0 = time.perf_counter()
        chosen = ["instructions"] if instructions else [p.strip() for p in parts.split(",") if p.strip()]
        known = ("core", "simulate", "worker", "scaleout", "restore", "latency", "sink", "instructions", "guard",
                 "guard-instructions", "guard-worker")
        known += ("compiled-prototype",)  # bench/compiled_prototype.py
        unknown = [p for p in chosen if p not in known]
        if unknown or not chosen:
            raise typer.BadParameter(f"no benchmark called {', '.join(unknown) or '(none)'}: choose from "
                                     f"{', '.join(known)}", param_hint="--parts")
        figures = run_bench(cfg, chosen,
                            os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
        if "guard-worker" in chosen:  # bench.guard_worker builds on the runner's worker harness
            from bench.guard_worker import bench_guard_worker
            from streams.kafka.embedded_broker import kafka_bootstrap

            with kafka_bootstrap(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
                bench_guard_worker(cfg.guard_customers, cfg.guard_days, cfg.guard_rounds, bootstrap, figures)
        if "worker" in chosen and cfg.worker_baseline:  # bench/worker_ab.py builds on the runner's worker harness
            from bench.worker_ab import bench_worker_ab
            from streams.kafka.embedded_broker import kafka_bootstrap

            with kafka_bootstrap(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as bootstrap:
                bench_worker_ab(cfg, bootstrap, figures)
        if "compiled-prototype" in chosen:  # bench/compiled_prototype.py, on the worker bench's input
            from bench.compiled_prototype import bench_part
            bench_part(cfg, figures)
        machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                   "seconds": round(time.perf_counter() - t0, 1), "size": "tiny" if tiny else "quick" if quick else "full"}
        table = Table("figure", "value", title=f"shopmail bench ({machine['size']}, {machine['cpus']} cpus)")
        for key, value in figures.rows.items():
            table.add_row(key, str(value))
        Console().print(table)
        doc = {"machine": machine, "figures": figures.rows}
        if as_json:
            as_json.write_text(json.dumps(doc, indent=2))
        print(json.dumps(doc))
