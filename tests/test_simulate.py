"""`shopmail simulate`: the same domain core over a JSONL file; identical to the broker path."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from confluent_kafka import Producer

from schemas import serde
from streams.config import DAY_MS, HOUR_MS, MINUTE_MS
from streams.kafka.io import producer_config, read_topic
from streams.kafka.partitioning import partition_for
from streams.runtime.worker import ProcessorRuntime
from streams.kafka.topics import VALUE_SCHEMA, ensure_topics, topic_specs
from tests.core_events import T0, cart, customer, feedback, order, shipment, tick


def shop_log(partitions: int) -> list[tuple[str, dict]]:
    """Twelve customers over four days, then clock ticks in every partition."""
    evs: list[tuple[str, dict]] = []
    for i in range(12):
        c = f"cust-{i}"
        t = T0 + i * MINUTE_MS
        evs.append(customer(c, at=t, opt_in=i % 5 != 0, event_id=f"p-{i}"))
        evs.append(cart(c, t + 1000, event_id=f"c-{i}"))
        if i % 3 == 0:
            evs.append(order(c, t + 2 * HOUR_MS, event_id=f"o-{i}"))
            evs.append(shipment(c, t + DAY_MS, "in_transit", event_id=f"s1-{i}"))
            evs.append(shipment(c, t + 2 * DAY_MS, "delivered", event_id=f"s2-{i}"))
        if i == 4:
            evs.append(feedback(c, t + 30 * HOUR_MS, "unsubscribed", event_id="u-4"))
    evs.sort(key=lambda e: e[1]["occurred_at"])
    for h in range(1, 4 * 24 + 1):
        for p in range(partitions):
            evs.append(tick(T0 + 6 * DAY_MS + h * MINUTE_MS if h == 4 * 24 else T0 + h * HOUR_MS, p))
    evs.sort(key=lambda e: e[1].get("occurred_at", e[1].get("tick_at")))
    # late facts, each right behind a later record of its own topic and partition (so the worker's
    # event-time merge of the topics processes them at the same point as the file order): an order
    # long after its cart's first step, and an opt-out that arrives a day late
    part = {f"cust-{i}": partition_for(f"cust-{i}", partitions) for i in range(12)}
    marketable = [f"cust-{i}" for i in range(12) if i % 3 and i % 5]
    buyer, anchor = next((c, o) for c in marketable for o in ("cust-0", "cust-3", "cust-6", "cust-9")
                         if part[c] == part[o])
    after = next(i for i, (t, r) in enumerate(evs) if t == "orders" and r["customer_id"] == anchor)
    t_cart = next(r["occurred_at"] for t, r in evs if t == "carts" and r["customer_id"] == buyer)
    evs.insert(after + 1, order(buyer, t_cart + 30_000, event_id="o-late", order_id="o-late"))
    quitter, other = next((c, o) for c in marketable if c != buyer for o in part if o != c and part[o] == part[c])
    again = customer(other, at=T0 + 26 * HOUR_MS, opt_in=int(other.split("-")[1]) % 5 != 0, event_id="p-again")
    after = next(i for i, (t, r) in enumerate(evs) if r.get("occurred_at", r.get("tick_at")) > T0 + 26 * HOUR_MS)
    t_profile = next(r["occurred_at"] for t, r in evs if t == "customers" and r["customer_id"] == quitter)
    evs[after:after] = [again, customer(quitter, at=t_profile + 2000, opt_in=False, event_id="p-out")]
    return evs


def write_jsonl(path, events, settings) -> None:
    with open(path, "w") as f:
        for logical, rec in events:
            name = settings.topics.name(logical)
            f.write(json.dumps({"topic": name, "value": serde.to_json(VALUE_SCHEMA[logical], rec)}) + "\n")


def run_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "streams.cli", "simulate", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_simulate_reports_bad_lines_by_number_keeps_going_and_exits_3(tmp_path, settings):
    good = json.dumps({"topic": "shop.orders", "value": serde.to_json("OrderEvent", order("ann", T0)[1])})
    lines = [good, "{not json", json.dumps({"topic": "shop.orders", "value": {"event_id": "x"}}),
             json.dumps({"topic": "shop.nowhere", "value": {}}), good.replace("ann", "bob")]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "commands.jsonl"
    run = run_cli(["--input", str(src), "--output", str(out)])
    assert run.returncode == 3
    errors = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert [e["line"] for e in errors] == [2, 3, 4]
    assert errors[1]["error"] == "invalid" and "customer_id" in errors[1]["detail"]
    assert errors[2]["error"] == "unknown_topic"
    commands = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["customer_id"] for c in commands] == ["ann", "bob"]
    assert all(serde.from_json("EmailCommand", c) for c in commands)


def test_simulate_advances_the_clock_until_the_given_time(tmp_path):
    src = tmp_path / "events.jsonl"
    write_jsonl(src, [customer("ann"), cart("ann", T0)], load_default())
    until = "2026-11-09T12:00:00Z"  # past all three abandoned-cart steps (T0 = 2026-11-06 09:00)
    run = run_cli(["--input", str(src), "--until", until])
    assert run.returncode == 0, run.stderr
    steps = [json.loads(line)["step"] for line in run.stdout.splitlines()]
    assert steps == [1, 2, 3]
    assert run_cli(["--input", str(src)]).stdout == ""  # without --until nothing is due yet


def load_default():
    from streams.config import load_settings

    return load_settings(env={})


@pytest.mark.integration
def test_simulate_and_the_broker_path_emit_identical_commands_for_the_same_log(kafka, settings, tmp_path):
    settings.worker.tick_interval_s = 0
    events = shop_log(settings.topics.partitions)
    src = tmp_path / "events.jsonl"
    write_jsonl(src, events, settings)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[topics]\nprefix = "{settings.topics.prefix}"\npartitions = {settings.topics.partitions}\n')
    sim = run_cli(["--input", str(src), "--config", str(cfg)])
    assert sim.returncode == 0, sim.stderr
    simulated = sorted(sim.stdout.splitlines())
    assert len(simulated) > 20
    # the broker path: the same records, ticks into the partition they name
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    producer = Producer(producer_config(settings, kafka))
    for logical, rec in events:
        value = serde.encode(VALUE_SCHEMA[logical], rec)
        if logical == "clock":
            producer.produce(settings.topics.name("clock"), partition=rec["partition"], key=b"tick", value=value)
        else:
            producer.produce(settings.topics.name(logical), key=rec["customer_id"].encode(), value=value)
    producer.flush(30)
    runtime = ProcessorRuntime(settings, kafka, instance_id="sim-vs-broker", write_ticks=False)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    try:
        got = read_topic(kafka, settings.topics.name("commands"), expect=len(simulated), timeout_s=60)
        got += read_topic(kafka, settings.topics.name("commands"), idle_s=2.0)[len(got):]
    finally:
        stop.set()
        thread.join(30)
    broker = sorted(serde.dumps_json("EmailCommand", r.decoded().record) for r in got)
    assert broker == simulated


@pytest.mark.slow  # three simulate runs in subprocesses
def test_parallel_simulate_is_byte_identical_to_the_sequential_run(tmp_path):
    from streams.tools.traffic import TrafficSpec, generate

    settings = load_default()
    src = tmp_path / "events.jsonl"
    write_jsonl(src, [(t, serde.from_json(VALUE_SCHEMA[t], r)) for t, r in
                      generate(TrafficSpec(customers=300, days=120, seed=2))], settings)
    # lines as other producers write them: spaced JSON and a customer id that needs escapes
    lines = [json.loads(line) for line in src.read_text().splitlines()]
    odd_id = lines[0]["value"]["customer_id"]
    with open(src, "w") as f:
        for i, obj in enumerate(lines):
            if obj["value"].get("customer_id") == odd_id:
                obj["value"]["customer_id"] = 'we"ird\\é'
            f.write((json.dumps(obj) if i % 3 == 0 else json.dumps(obj, separators=(",", ":"))) + "\n")
        f.write("{broken\n")
    args = ["--input", str(src), "--until", "2026-06-01T00:00:00Z"]
    one = run_cli(args + ["--workers", "1"])
    two = run_cli(args + ["--workers", "2"])
    three = run_cli(args + ["--workers", "3"])
    assert one.returncode == two.returncode == three.returncode == 3
    assert one.stdout and one.stdout == two.stdout == three.stdout
    assert '"customer_id":"we\\"ird\\\\\\u00e9"' in one.stdout  # the odd customer got mail
    for line in one.stdout.splitlines():  # the written form is the validated canonical JSON form
        assert line == serde.dumps_json("EmailCommand", serde.from_json("EmailCommand", json.loads(line)))
    assert [ln for ln in one.stderr.splitlines() if ln.startswith("{")] == \
           [ln for ln in two.stderr.splitlines() if ln.startswith("{")]


def test_parallel_simulate_fails_clearly_when_a_worker_process_dies(tmp_path, monkeypatch):
    import io
    import os

    from streams.tools import simulate as sim_module
    from streams.config import load_settings

    settings = load_settings(env={})
    src = tmp_path / "events.jsonl"
    write_jsonl(src, shop_log(settings.topics.partitions), settings)
    real_worker = sim_module._worker

    def dies_if_second(*args):
        if args[2] == 1:  # worker index
            os._exit(9)  # as an OOM kill would: no report, no traceback
        real_worker(*args)

    monkeypatch.setattr(sim_module, "_worker", dies_if_second)
    with pytest.raises(RuntimeError, match="worker 1 died"):
        sim_module.simulate_parallel(str(src), settings, None, 2, io.BytesIO())


def test_simulate_stats_count_commands_holdouts_and_dropped_steps_alike_for_any_worker_count(tmp_path):
    settings = load_default()
    src = tmp_path / "events.jsonl"
    write_jsonl(src, shop_log(settings.topics.partitions), settings)
    stats = {}
    for workers in (1, 2):
        out = tmp_path / f"stats{workers}.json"
        run = run_cli(["--input", str(src), "--stats", str(out), "--workers", str(workers)])
        assert run.returncode == 0, run.stderr
        stats[workers] = json.loads(out.read_text())
        flows = [json.loads(line)["flow"] for line in run.stdout.splitlines()]
    assert stats[1] == stats[2]
    counters = stats[1]["counters"]
    assert stats[1]["commands"] == len(flows)
    assert counters["command:order_confirmation"] == flows.count("order_confirmation") == 5
    assert stats[1]["late_applied"] == {"customers": 1, "orders": 1}
    # every fifth customer never opted in: their abandoned-cart steps are dropped, counted by reason
    assert counters["dropped:abandoned_cart:no_consent"] >= 3


def test_simulate_applies_late_events_and_shows_them_in_the_summary_and_the_stats(tmp_path):
    """The issue's probe: 40 carts at T, clocks at T+40 min, a late order and a late opt-out arrive."""
    settings = load_default()
    evs = [customer(f"k{i}", at=T0 - HOUR_MS) for i in range(40)] + [cart(f"k{i}", T0) for i in range(40)]
    evs += [tick(T0 + 40 * MINUTE_MS, p) for p in range(settings.topics.partitions)]
    evs += [order("k1", T0 + 15 * MINUTE_MS), customer("k2", at=T0 + 15 * MINUTE_MS, opt_in=False)]
    src = tmp_path / "events.jsonl"
    write_jsonl(src, evs, settings)
    runs = {}
    for workers in (1, 2):
        stats = tmp_path / f"stats{workers}.json"
        runs[workers] = run_cli(["--input", str(src), "--until", "2026-11-10T00:00:00Z", "--stats", str(stats),
                                 "--workers", str(workers)])
        assert runs[workers].returncode == 0, runs[workers].stderr
    assert runs[1].stdout == runs[2].stdout
    mail = [(c["customer_id"], c["flow"]) for c in map(json.loads, runs[1].stdout.splitlines())]
    assert [f for cid, f in mail if cid == "k1"] == ["order_confirmation"]
    assert [f for cid, f in mail if cid == "k2"] == []
    assert [f for cid, f in mail if cid == "k3"] == ["abandoned_cart"] * 3
    assert "2 late events applied (customers 1, orders 1), 0 ahead of the clock" in runs[1].stderr
    stats = json.loads((tmp_path / "stats1.json").read_text())
    assert stats == json.loads((tmp_path / "stats2.json").read_text())
    assert stats["late_applied"] == {"customers": 1, "orders": 1}
    assert stats["counters"]["lateness:orders:le_1h"] == 1
