"""Synthetic traffic generator and the benchmark harness (tiny sizes: keeps them working)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from streams.tools.traffic import TrafficSpec, generate
from schemas import serde
from streams.kafka.topics import VALUE_SCHEMA


def test_traffic_is_deterministic_by_seed_valid_and_sorted_by_event_time():
    spec = TrafficSpec(customers=300, days=120, seed=9)
    a = list(generate(spec))
    assert a == list(generate(spec)) and a != list(generate(TrafficSpec(customers=300, days=120, seed=10)))
    times = [r["occurred_at"] for _, r in a]
    assert times == sorted(times)
    assert len({r["event_id"] for _, r in a}) == len(a)
    for topic, rec in a:
        serde.from_json(VALUE_SCHEMA[topic], rec)


def test_about_seventy_percent_of_carts_are_abandoned_and_some_customers_lapse():
    events = list(generate(TrafficSpec(customers=2000, days=365, seed=4)))
    kinds = Counter((t, r["type"]) for t, r in events)
    sessions = len({r["cart_id"] for t, r in events if t == "carts"})
    assert 0.62 <= 1 - kinds[("orders", "placed")] / sessions <= 0.78
    last_order: dict[str, int] = {}
    lapsed = 0
    for t, r in events:
        if t == "orders" and r["type"] == "placed":
            if r["customer_id"] in last_order and r["occurred_at"] - last_order[r["customer_id"]] > 90 * 86_400_000:
                lapsed += 1
            last_order[r["customer_id"]] = r["occurred_at"]
    assert lapsed > 20
    assert kinds[("shipments", "delivered")] > 0 and kinds[("shipments", "returned")] > 0


def test_product_views_are_off_by_default_and_turning_them_on_only_adds_valid_views():
    spec = TrafficSpec(customers=200, days=90, seed=5)
    plain = list(generate(spec))
    with_views = list(generate(TrafficSpec(customers=200, days=90, seed=5, product_views=True)))
    assert all(t != "product_views" for t, _ in plain)
    views = [r for t, r in with_views if t == "product_views"]
    assert len(views) > 200 and [(t, r) for t, r in with_views if t != "product_views"] == plain
    times = [r["occurred_at"] for _, r in with_views]
    assert times == sorted(times) and len({r["event_id"] for _, r in with_views}) == len(with_views)
    for rec in views:
        serde.from_json(VALUE_SCHEMA["product_views"], rec)


def test_bounded_jitter_shuffles_but_keeps_every_event():
    plain = list(generate(TrafficSpec(customers=100, days=30)))
    jittered = list(generate(TrafficSpec(customers=100, days=30, jitter_ms=60_000)))
    assert sorted(r["event_id"] for _, r in plain) == sorted(r["event_id"] for _, r in jittered)
    assert [r["event_id"] for _, r in plain] != [r["event_id"] for _, r in jittered]


@pytest.mark.integration
def test_bench_runs_at_tiny_size_and_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "streams.cli", "bench", "--tiny", "--json", str(out)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    fig = json.loads(out.read_text())["figures"]
    for key in ("core.events_per_s", "core.decode_ceiling_per_s", "state.bytes_per_customer", "worker.events_per_s",
                "worker.plain_loop_per_s", "latency.p99_ms", "sink.unlimited.sends_per_s", "sink.limited.sends_per_s",
                "simulate.events", "simulate.seconds", "simulate.one_process_seconds",
                "scaleout.1_process.events_per_s", "scaleout.2_process.events_per_s", "scaleout.ratio_2_to_1",
                "restore.seconds", "restore.seconds_per_100k_customers"):
        assert fig[key] and fig[key] > 0, key
    assert {"worker.stage.process", "worker.stage.commit", "worker.stage.decode"} <= set(fig)
    assert sum(fig["restore.keys_restored_by_partition"].values()) == fig["restore.customers"] == 300
    measured, _, orders, _ = fig["latency.run1.measured"].split()
    assert measured == orders  # every order's latency and hops measured
    assert all(f"latency.run1.hop.{hop}" in fig for hop in ("produce → worker batch start", "render", "SES call"))
    assert fig["sink.limited.max_in_any_1s"] <= fig["sink.limited.configured_rate"] + 5


def test_latency_hops_split_each_order_from_the_traced_timestamps(tmp_path):
    from bench.runner import HOPS, _hops

    t = 1_000.0
    rows = [{"w": "cmd-1", "start": t + 0.010, "end": t + 0.030}, {"f": "cmd-1", "t": t + 0.050},
            {"p": "cmd-1", "t0": t + 0.060, "t1": t + 0.066}, {"r": "cmd-1", "s": 0.002},
            {"x": "cmd-1", "t0": t + 0.070, "t1": t + 0.090}, {"o": ["cmd-1"], "t": t + 0.100},
            {"w": "cmd-2", "start": t, "end": t}]  # cmd-2 never reached the sink: not measured
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hops = _hops(str(trace), {"cmd-1": t * 1000, "cmd-2": t * 1000})
    got = [round(hops[h][0], 3) for h in HOPS]
    assert got == [10.0, 20.0, 20.0, 10.0, 2.0, 4.0, 4.0, 20.0, 10.0]
    assert sum(got) == 100.0  # the hops add up to produce → outcome committed
    assert all(len(v) == 1 for v in hops.values())
