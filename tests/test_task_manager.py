"""The task manager: every partition task of a process behind the one interface every driver calls —
assign, revoke, offer/run, apply, apply_global, advance, changes — with no broker."""

from __future__ import annotations

import json
from typing import Any

from schemas import serde
from streams.config import DAY_MS, HOUR_MS, load_settings
from streams.core.engine import PartitionEngine
from streams.runtime.limits import Refusal, command_oversize, fits
from streams.runtime.task import TaskOutput
from streams.runtime.tasks import TaskManager
from tests.core_events import ITEMS, T0, cart, customer, order


def _settings():
    s = load_settings(env={})
    s.flows.guards.quiet_start_hour = s.flows.guards.quiet_end_hour = 0
    return s


def _restock(at: int, **kw: Any) -> dict:
    return serde.from_json("InventoryEvent", {"event_id": kw.pop("event_id", "inv-1"), "sku": "MUG",
                                              "occurred_at": at, "type": "restocked", "quantity": 5, **kw})


def test_a_global_record_reaches_every_assigned_partition_in_partition_order():
    manager: TaskManager[tuple[str, int]] = TaskManager(_settings())
    out: TaskOutput[tuple[str, int]] = TaskOutput()
    sold_out = [{**ITEMS[0], "stock": 0}]
    for p, cid in [(2, "b"), (0, "a")]:  # assigned out of order
        manager.assign(p)
        manager.apply(p, "customers", (cid, p), customer(cid)[1], out)
        manager.apply(p, "carts", (cid, p), cart(cid, T0, items=sold_out)[1], out)
    manager.assign(1)  # no customer waits here
    out.clear()
    restock = T0 + 4 * DAY_MS
    manager.apply_global("inventory", lambda p: ("inv", p), _restock(restock), out)
    assert out.touched == {0, 1, 2} and out.done == [("inv", 0)]  # one record, done once
    manager.advance(restock + HOUR_MS, out)
    mails = [(ref, c["customer_id"]) for ref, c in out.commands if c["flow"] == "back_in_stock"]
    assert [cid for _, cid in mails] == ["a", "b"]  # partition 0's customer first


def test_a_global_records_refusal_is_one_dead_letter_not_one_per_partition():
    manager: TaskManager[int] = TaskManager(_settings())
    for p in range(3):
        manager.assign(p)
    out: TaskOutput[int] = TaskOutput()
    manager.apply_global("inventory", lambda p: p, None, out, refusal=Refusal("invalid", "not avro"))
    assert [(d.ref, d.reason) for d in out.dead_letters] == [(0, "invalid")] and out.done == [0]


def test_records_offered_to_a_partition_not_assigned_here_are_not_taken_and_a_revoked_task_is_gone():
    manager: TaskManager[str] = TaskManager(_settings())
    manager.assign(0)
    assert manager.offer(1, "orders", "o", order("x", T0)[1]) is None  # the next owner processes it
    assert manager.offer(0, "orders", "o", order("x", T0)[1]) == 1
    assert manager.pending()
    assert manager.revoke(0) and not manager.revoke(0)
    assert not manager.pending() and manager.partitions == []


def test_run_processes_the_queued_records_of_every_task_up_to_the_limit_and_names_the_touched_partitions():
    manager: TaskManager[str] = TaskManager(_settings())
    for p in (0, 1):
        manager.assign(p)
    manager.offer(0, "orders", "o0", order("x", T0, order_id="o-0")[1])
    manager.offer(1, "orders", "o1", order("y", T0, order_id="o-1")[1])
    manager.offer(1, "orders", "o2", order("y", T0 + 1, order_id="o-2")[1])
    out: TaskOutput[str] = TaskOutput()
    assert manager.run(out, 2) == 2 and out.done == ["o0", "o1"] and out.touched == {0, 1}
    out.clear()
    assert manager.run(out, 10) == 1 and out.done == ["o2"] and out.touched == {1}
    changes = manager.changes(out.touched)
    assert list(changes) == [1] and changes[1]  # partition 1's state changed


def test_a_partition_assigned_with_a_restored_engine_continues_its_state():
    settings = _settings()
    first: TaskManager[str] = TaskManager(settings)
    out: TaskOutput[str] = TaskOutput()
    first.apply(0, "customers", "p", customer("c1")[1], out)
    first.apply(0, "carts", "c", cart("c1", T0)[1], out)
    state = first.changes([0])[0]
    engine = PartitionEngine(settings, 0)
    for key, value in state.items():
        engine.restore(key, value)
    engine.restored()
    second: TaskManager[str] = TaskManager(settings)
    second.assign(0, engine)
    out.clear()
    second.advance(T0 + 2 * HOUR_MS, out)
    assert [(c["flow"], c["step"]) for _, c in out.commands] == [("abandoned_cart", 1)]


def test_the_clamp_and_enforced_counters_outlive_a_revoked_task():
    s = _settings()
    manager: TaskManager[str] = TaskManager(s)
    manager.assign(0)
    long_name = order("c1", T0, items=[{"sku": "S", "name": "N" * 5000, "price": "1.00", "quantity": 1}])[1]
    manager.apply(0, "orders", "o", long_name, TaskOutput())
    assert manager.clamped == 1
    manager.revoke(0)
    manager.assign(0)
    assert manager.clamped == 1


def test_the_size_rule_never_lets_through_a_command_that_does_not_fit_once_encoded():
    s = _settings()
    s.limits.max_message_bytes = 6000
    s.limits.max_name_chars = s.limits.max_text_chars = 10_000
    out: TaskOutput[int] = TaskOutput()
    manager: TaskManager[int] = TaskManager(s)
    for n in range(1, 60, 4):  # orders growing across the limit
        items = [{"sku": f"S{i}", "name": "é" * 60, "price": "1.00", "quantity": 1} for i in range(n)]
        manager.apply(0, "orders", n, order(f"c{n}", T0, order_id=f"o{n}", items=items)[1], out)
    assert out.commands and out.dead_letters  # some fit, some did not
    for _, cmd in out.commands:
        assert command_oversize(s.limits, cmd) == 0
        assert fits(s.limits, cmd["customer_id"].encode(), serde.encode("EmailCommand", cmd))
    assert {d.reason for d in out.dead_letters} == {"output_too_large"}
    assert all(json.loads(c["context"]) for _, c in out.commands)
