"""`shopmail bench --parts worker --worker-baseline TREE`: the worker's CPU per event against another
release's, `shopmail worker` child processes interleaved on the same input, their commands compared."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fastavro
import pytest

from bench.worker_ab import HERE, compare_commands, encode_with, encoded_inputs
from schemas import serde
from streams.kafka.topics import VALUE_SCHEMA
from streams.tools.traffic import TrafficSpec, generate

SCHEMAS = Path(serde.__file__).parent


def _contract(path: Path) -> dict:
    return fastavro.parse_schema(json.loads(path.read_text()))


def test_a_record_written_with_a_trees_contract_is_the_bytes_this_tree_writes_when_the_contract_is_the_same():
    for topic, rec in list(generate(TrafficSpec(customers=40, days=20, seed=3)))[:200]:
        name = VALUE_SCHEMA[topic]
        assert encode_with(_contract(SCHEMAS / f"{name}.avsc"), rec) == serde.encode(name, rec)


def test_a_record_written_with_an_older_contract_is_read_by_this_tree_as_that_writer_version():
    shipment = next(rec for topic, rec in generate(TrafficSpec(customers=200, days=30, seed=3)) if topic == "shipments")
    old = encode_with(_contract(SCHEMAS / "history" / "ShipmentEvent.v0.avsc"), {**shipment, "order_number": "X-1"})
    assert old != serde.encode("ShipmentEvent", shipment)  # another writer fingerprint
    decoded = serde.decode(old, "ShipmentEvent")
    current = serde.decode(serde.encode("ShipmentEvent", shipment)).record
    assert decoded.record == {**current, "order_number": None}  # v0 has no order_number: not written


def test_the_bench_input_of_this_tree_as_baseline_is_what_the_worker_bench_produces():
    events = list(generate(TrafficSpec(customers=30, days=10, seed=3)))
    rows = encoded_inputs(events, HERE)
    assert [(topic, value) for topic, _, value in rows] == [(t, serde.encode(VALUE_SCHEMA[t], r)) for t, r in events]
    assert [key for _, key, _ in rows] == [r["customer_id"].encode() for _, r in events]


def _command(cid: str, **overrides: object) -> bytes:
    rec = {"command_id": cid, "customer_id": "c1", "to": "c1@example.com", "flow": "order_confirmation", "step": 1,
           "template": "order_confirmation/step1", "locale": "en", "variant": "control", "category": "transactional",
           "send_at": 1, "expires_at": 2, "trigger_event_id": "e1", "created_at": 1,
           "context": json.dumps({"order_id": "o1", "cross_sell": []})}
    rec.update(overrides)
    return serde.encode("EmailCommand", rec)


def test_commands_compared_name_the_ids_on_one_side_only_and_the_fields_and_context_keys_that_differ():
    before = {"a": _command("a"), "b": _command("b"), "gone": _command("gone")}
    now = {"a": _command("a"), "b": _command("b", context=json.dumps({"order_id": "o1", "cross_sell": [1]})),
           "new": _command("new")}
    diff = compare_commands(before, now, bytes_comparable=True)
    assert not diff.same
    assert diff.only_before == ["gone"] and diff.only_now == ["new"]
    assert diff.differing == {"b": ["context"]}
    assert diff.context_keys == {"order_confirmation/1: cross_sell": 1}
    summary = diff.summary()
    assert summary["bytes_differ"] == 1 and summary["fields_differing"] == {"context": 1}
    assert compare_commands(before, dict(before), bytes_comparable=True).same
    ids_only = compare_commands(before, {**before, "b": now["b"]}, bytes_comparable=False)
    assert ids_only.same and not ids_only.bytes_compared  # another EmailCommand contract: ids only


@pytest.mark.slow
@pytest.mark.integration
def test_the_worker_ab_harness_runs_a_pair_and_reports_each_figure(kafka):
    from bench.runner import TINY, Figures
    from bench.worker_ab import bench_worker_ab

    off = {"SHOPMAIL_DELIVERABILITY__ENABLED": "false", "SHOPMAIL_FLOWS__SUNSET__ENABLED": "false"}
    cfg = dataclasses.replace(TINY, worker_customers=300, worker_days=10, worker_baseline=HERE, worker_pairs=1,
                              worker_env=off)
    out = Figures()
    runs = bench_worker_ab(cfg, kafka, out)
    fig = out.rows
    events = len(list(generate(TrafficSpec(customers=300, days=10, seed=3))))
    assert fig["worker_ab.events"] == events and fig["worker_ab.pairs"] == 1
    assert fig["worker_ab.now.env"] == off  # this side only
    assert [r.side for r in runs] == ["before", "now"]  # the baseline first in the pair
    for side in ("before", "now"):
        assert len(fig[f"worker_ab.{side}.cpu_ms_per_event"]) == 1
        assert fig[f"worker_ab.{side}.cpu_s"][0] > 0 and fig[f"worker_ab.{side}.idle_start_cpu_s"][0] > 0
        assert fig[f"worker_ab.{side}.commands"][0] > 0
        assert isinstance(fig[f"worker_ab.{side}.cpu_ms_per_event_median"], float)
    assert len(fig["worker_ab.ratio"]) == 1 and isinstance(fig["worker_ab.ratio_median"], float)
    assert len(fig["worker_ab.load1"]) == 2
    # the same tree on both sides (the guard and sunset change nothing in 10 days without feedback): the
    # same commands, byte for byte (each run wrote its own commands topic)
    assert fig["worker_ab.same_commands"] is True
    assert fig["worker_ab.commands_compared"][0]["bytes_compared"] is True
