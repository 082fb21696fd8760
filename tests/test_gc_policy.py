"""The collector policy of the streaming commands (streams/runtime/gc_policy.py): the state is never
tracked, and the policy changes only a process the `shopmail` program owns."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

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


_PROBE = """
import gc, json, sys
from streams.runtime import gc_policy
from streams.config import ConfigError
if sys.argv[1] == "owned":
    gc_policy.own_process()
before = gc.get_threshold()
try:
    gc_policy.tune_for_streaming(int(sys.argv[2]))
    error = None
except ConfigError as exc:
    error = str(exc)
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(), "error": error}))
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


def test_a_negative_threshold_is_a_configuration_error() -> None:
    assert "worker.gc_young_threshold is -1" in _probe("owned", -1)["error"]


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
    import json

    from streams.config import load_settings
    from streams.tools.traffic import TrafficSpec, write_jsonl

    events = tmp_path / "events.jsonl"
    with open(events, "w") as f:
        write_jsonl(TrafficSpec(customers=60, days=10, seed=1), f, load_settings(env={}).topics.name)
    run = subprocess.run([sys.executable, "-c", _SIMULATE, str(events), str(tmp_path / "out.jsonl")],
                         capture_output=True, text=True, check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["after"][0] == 50_000 and out["frozen"] > 1_000
    assert (tmp_path / "out.jsonl").read_text().count("\n") > 0
