"""The collector policy of the streaming commands (streams/runtime/gc_policy.py): the state's records are
not tracked and hold no cycle, and the policy changes only a process the `shopmail` program owns."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from streams.config import ConfigError
from streams.core.state import (AbandonedCartState, BackInStockState, Cart, Customer, OrderRef, Profile,
                                WaitingSku)


def test_the_state_records_are_not_tracked_by_the_cyclic_collector() -> None:
    customer = Customer(p=Profile(email="a@example.com"), buf=[[1, 0, "e1", "carts", {"items": [{"sku": "A"}]}]],
                        oi={"o1": OrderRef()}, abandoned_cart=AbandonedCartState(run=Cart()),
                        back_in_stock=BackInStockState(waiting={"A": WaitingSku()}))
    records = [customer, customer.p, customer.abandoned_cart, customer.abandoned_cart.run, customer.oi["o1"],
               customer.back_in_stock, customer.back_in_stock.waiting["A"]]
    assert [gc.is_tracked(r) for r in records] == [False] * len(records)
    assert gc.is_tracked(customer.buf)  # the lists and dicts they hold still are: a cycle through them is found


def _cycles_through(root: object) -> int:
    """Back edges found walking the data graph under ``root`` (records, dicts, lists, tuples, sets)."""
    from streams.core.state import Record

    found = 0
    on_path: set[int] = set()

    def walk(o: object) -> None:
        nonlocal found
        if isinstance(o, (str, int, float, bool, bytes, type(None))):
            return
        if id(o) in on_path:
            found += 1
            return
        on_path.add(id(o))
        if isinstance(o, Record):
            children = [getattr(o, f) for f in o.__struct_fields__]
        elif isinstance(o, dict):
            children = [*o.keys(), *o.values()]
        elif isinstance(o, (list, tuple, set, frozenset)):
            children = list(o)
        else:
            raise AssertionError(f"state holds a {type(o).__name__}: records hold data only")
        for child in children:
            walk(child)
        on_path.discard(id(o))

    walk(root)
    return found


def test_a_simulated_partitions_state_holds_no_cycle_and_nothing_but_data() -> None:
    import io

    from streams.config import load_settings
    from streams.tools.simulate import simulate
    from streams.tools.traffic import TrafficSpec, write_jsonl

    settings = load_settings(env={})
    lines = io.StringIO()
    write_jsonl(TrafficSpec(customers=300, days=120, seed=7), lines, settings.topics.name)
    result = simulate(lines.getvalue().splitlines(), settings, keep=False, on_command=lambda c: None)
    customers = [c for engine in result.engines.values() for c in engine.customers.values()]
    assert len(customers) > 250
    assert sum(_cycles_through(c) for c in customers) == 0
    assert _cycles_through(customers) == 0  # no record shared into another customer's either


_PROBE = """
import gc, json, sys
from streams.runtime import gc_policy
from streams.config import ConfigError
if sys.argv[1].startswith("owned"):
    gc_policy.own_process()
if sys.argv[1].startswith("embedded-frozen"):
    gc.freeze()  # the embedding program's own
before = gc.get_threshold()
error = inside = None
try:
    if sys.argv[1].endswith("for-a-while"):
        with gc_policy.tuned_for_streaming(int(sys.argv[2])):
            inside = [gc.get_threshold(), gc.get_freeze_count()]
    else:
        gc_policy.tune_for_streaming(int(sys.argv[2]))
except ConfigError as exc:
    error = str(exc)
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(), "error": error,
                  "inside": inside}))
"""


def _probe(owned: str, threshold: int) -> dict:
    import json

    run = subprocess.run([sys.executable, "-c", _PROBE, owned, str(threshold)], capture_output=True, text=True,
                         check=True)
    return json.loads(run.stdout)


def test_a_process_the_shopmail_program_owns_freezes_its_start_up_and_collects_the_young_less_often() -> None:
    out = _probe("owned", 50_000)
    assert out["after"] == [50_000, out["before"][1], out["before"][2]]
    assert out["frozen"] > 1_000  # modules, classes, settings: never traversed again


@pytest.mark.parametrize(("owned", "threshold"), [("embedded", 50_000), ("owned", 0)])
def test_a_process_shopmail_does_not_own_or_a_threshold_of_zero_keeps_pythons_collector(owned: str,
                                                                                       threshold: int) -> None:
    out = _probe(owned, threshold)
    assert out["after"] == out["before"]
    assert out["frozen"] == 0


@pytest.mark.parametrize("threshold", [-1, 2**31])
def test_a_threshold_python_cannot_take_is_a_configuration_error(threshold: int) -> None:
    assert f"worker.gc_young_threshold is {threshold}" in _probe("owned", threshold)["error"]


def test_the_worker_and_replay_commands_apply_the_policy_before_any_topic_is_made(monkeypatch) -> None:
    from typer.testing import CliRunner

    import streams.services
    from streams.cli.main import app
    from streams.cli.worker import run_worker
    from streams.runtime import gc_policy

    applied: list[int] = []
    monkeypatch.setattr(gc_policy, "tune_for_streaming", applied.append)

    class NoServices(Exception):
        pass

    def no_services(settings):
        raise NoServices  # the worker would connect, make its topics and run from here

    monkeypatch.setattr(streams.services, "service_context", no_services)
    monkeypatch.setenv("SHOPMAIL_WORKER__GC_YOUNG_THRESHOLD", "12345")
    with pytest.raises(NoServices):
        run_worker(None, None, None)
    assert applied == [12345]
    result = CliRunner().invoke(app, ["replay", "--prefix", "replay-gc.", "--from", "2026-01-01", "--to", "2026-01-02"],
                                env={"SHOPMAIL_WORKER__GC_YOUNG_THRESHOLD": "23456", "KAFKA_BOOTSTRAP_SERVERS": ""})
    assert applied == [12345, 23456], result.output


_EMBEDDED = """
import gc, json, sys
from typer.testing import CliRunner
from streams.cli.main import app
before = gc.get_threshold()
result = CliRunner().invoke(app, ["simulate", "--input", sys.argv[1], "--output", sys.argv[2], "--workers", "1", "-q"])
assert result.exit_code == 0, result.output
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def _simulate_in_child(code: str, tmp_path, customers: int, days: int) -> dict:
    """``code`` run in a fresh interpreter on an event file; the JSON it prints last."""
    import json

    from streams.config import load_settings
    from streams.tools.traffic import TrafficSpec, write_jsonl

    events = tmp_path / "events.jsonl"
    with open(events, "w") as f:
        write_jsonl(TrafficSpec(customers=customers, days=days, seed=1), f, load_settings(env={}).topics.name)
    run = subprocess.run([sys.executable, "-c", code, str(events), str(tmp_path / "out.jsonl")],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_command_invoked_inside_another_program_leaves_its_collector_alone(tmp_path) -> None:
    out = _simulate_in_child(_EMBEDDED, tmp_path, customers=10, days=3)
    assert out["after"] == out["before"] and out["frozen"] == 0


def test_the_policy_for_a_while_restores_the_collector_after() -> None:
    out = _probe("owned-for-a-while", 40_000)
    assert out["inside"][0] == [40_000, out["before"][1], out["before"][2]] and out["inside"][1] > 1_000
    assert out["after"] == out["before"] and out["frozen"] == 0

    from streams.runtime import gc_policy

    before = gc.get_threshold()
    with gc_policy.tuned_for_streaming(50_000):  # not owned here (a test): nothing changes, nothing is undone
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before
    assert _probe("embedded-frozen-for-a-while", 40_000)["frozen"] > 1_000  # the program's own freeze stands
    with pytest.raises(ConfigError):
        gc_policy.check(-5)


_SIMULATE = """
import gc, json, sys
from streams.cli.main import main
sys.argv = ["shopmail", "simulate", "--input", sys.argv[1], "--output", sys.argv[2], "--workers", "1", "--quiet"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps({"after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_shopmail_simulate_runs_with_the_streaming_collector_policy(tmp_path) -> None:
    out = _simulate_in_child(_SIMULATE, tmp_path, customers=60, days=10)
    assert out["after"][0] == 50_000 and out["frozen"] > 1_000
    assert (tmp_path / "out.jsonl").read_text().count("\n") > 0
