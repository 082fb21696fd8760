"""The compiled batch engine prototype (prototypes/compiled_engine): one small batch of raw records in, the
EmailCommand bytes the worker's own functions describe out. Builds nothing: skipped unless the module was
built in place (``python setup.py build_ext --inplace``)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import serde
from streams.config import load_settings
from streams.core.flows.base import items as worker_items
from streams.core.flows.base import total
from streams.core.ids import command_id, stable_code

try:
    from prototypes.compiled_engine import _engine  # noqa: F401
    from prototypes.compiled_engine.layout import build_engine
except ImportError as exc:  # not built: the prototype is optional
    pytest.skip(f"the compiled engine prototype is not built ({exc}); build it with "
                "`python setup.py build_ext --inplace`", allow_module_level=True)

HOUR = 3_600_000
T0 = 1_767_225_600_000
SETTINGS = load_settings(env={})
LINES = [{"sku": "SKU-1", "name": "Tent", "price": "120.00", "quantity": 1, "image_url": None, "url": None,
          "stock": 3},
         {"sku": "SKU-2", "name": "Mug", "price": "7.50", "quantity": 2, "image_url": "https://i/2.jpg",
          "url": "https://p/2", "stock": None}]


def customer(cid: str, at: int, opt_in: bool) -> tuple[str, bytes]:
    return SETTINGS.topics.name("customers"), serde.encode("CustomerEvent", {
        "event_id": f"{cid}-u", "customer_id": cid, "occurred_at": at, "type": "upserted", "email": f"{cid}@x.test",
        "first_name": "Ada", "locale": "de", "timezone": "Europe/Berlin", "marketing_opt_in": opt_in})


def cart(cid: str, at: int, kind: str = "item_added") -> tuple[str, bytes]:
    return SETTINGS.topics.name("carts"), serde.encode("CartEvent", {
        "event_id": f"{cid}-c{at}", "customer_id": cid, "occurred_at": at, "type": kind, "cart_id": f"{cid}-k",
        "email": None, "items": LINES if kind != "cart_cleared" else [], "currency": "EUR", "cart_url": None})


def shipment(cid: str, at: int) -> tuple[str, bytes]:
    return SETTINGS.topics.name("shipments"), serde.encode("ShipmentEvent", {
        "event_id": f"{cid}-s{at}", "customer_id": cid, "occurred_at": at, "type": "in_transit", "shipment_id": "s",
        "order_id": "o", "carrier": None, "tracking_number": None, "tracking_url": None, "email": None,
        "order_number": None})


def expected_command(cid: str, step: int, cart_at: int) -> dict[str, Any]:
    """What the worker's abandoned-cart flow writes for this step (its own id, line and total functions)."""
    shop = SETTINGS.flows.shop_url
    trigger = f"{cid}-c{cart_at}"
    cmd_id = command_id("abandoned_cart", step, cid, trigger)
    due = cart_at + SETTINGS.flows.abandoned_cart.delays_ms[step - 1]
    lines = worker_items(LINES)
    context: dict[str, Any] = {"first_name": "Ada", "shop_url": shop, "locale": "de",
                               "unsubscribe_url": f"{shop}/unsubscribe?c={cmd_id}", "cart_id": f"{cid}-k",
                               "cart_url": f"{shop}/cart", "items": lines, "cart_total": total(lines),
                               "currency": "EUR"}
    if step == 3:
        context.update(incentive="coupon", coupon_code=stable_code("CART", cid, f"{cid}-k"), coupon_percent=10,
                       timezone="Europe/Berlin")
    return {"command_id": cmd_id, "customer_id": cid, "to": f"{cid}@x.test", "flow": "abandoned_cart", "step": step,
            "template": f"abandoned_cart/step{step}", "locale": "de", "variant": "control", "category": "marketing",
            "send_at": due, "expires_at": due + SETTINGS.flows.abandoned_cart.expires_after_ms,
            "context": serde.canonical_json(context), "trigger_event_id": trigger, "created_at": due}


def test_a_small_batch_gives_the_worker_s_abandoned_cart_command_bytes_and_a_changelog_record_per_changed_key():
    engine = build_engine(SETTINGS)
    commands, changelog, dead = engine.process_records([
        customer("c1", T0, opt_in=True), cart("c1", T0 + 1),
        customer("c2", T0, opt_in=False), cart("c2", T0 + 1),
        shipment("c1", T0 + 2 * HOUR),  # step 1 (1 h) is due
        shipment("c2", T0 + 2 * HOUR),  # due too, but c2 did not opt in: no command
        (SETTINGS.topics.name("orders"), b"\xc3\x01truncated"),
    ])
    assert commands == [(b"c1", serde.encode("EmailCommand", expected_command("c1", 1, T0 + 1)))]
    assert sorted(key for key, _ in changelog) == [b"c1", b"c2"]
    assert [reason for _, reason in dead] == [b"writer schema unknown to the prototype"]

    commands, changelog, dead = engine.process_records([shipment("c1", T0 + 80 * HOUR)])  # steps 2 and 3
    assert [value for _, value in commands] == [serde.encode("EmailCommand", expected_command("c1", s, T0 + 1))
                                                for s in (2, 3)]
    assert [key for key, _ in changelog] == [b"c1"] and dead == []
    assert engine.commands_by_step == [1, 1, 1]


def test_a_cleared_cart_sends_nothing_and_a_corrupt_body_is_a_dead_letter_not_a_crash():
    engine = build_engine(SETTINGS)
    topic, good = cart("c3", T0 + 1)
    commands, _, dead = engine.process_records([
        customer("c3", T0, opt_in=True), (topic, good), cart("c3", T0 + 5, "cart_cleared"),
        shipment("c3", T0 + 80 * HOUR), (topic, good[:-3])])
    assert commands == []
    assert [reason for _, reason in dead] == [b"ends early"]


class Record:
    """What the engine reads of a confluent-kafka message."""

    def __init__(self, topic_and_value: tuple[str, bytes], partition: int, offset: int) -> None:
        self._topic, self._value = topic_and_value
        self._partition, self._offset = partition, offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def test_with_timers_a_step_fires_on_the_partition_clock_after_merging_the_topics_by_event_time():
    engine = build_engine(SETTINGS, timers=True)
    carts, customers = SETTINGS.topics.name("carts"), SETTINGS.topics.name("customers")
    # the cart and a later shipment are fetched before the customer's consent, which is older than both
    first = [Record(cart("c1", T0 + 1), 0, 0), Record(shipment("c1", T0 + 2 * HOUR), 0, 0)]
    commands, _, _, held = engine.process_merged(first, {(customers, 0): True})
    assert commands == [] and held == {(carts, 0): 0, (SETTINGS.topics.name("shipments"), 0): 0}
    commands, _, _, held = engine.process_merged([Record(customer("c1", T0, opt_in=True), 0, 0)], {})
    assert commands == [(b"c1", serde.encode("EmailCommand", expected_command("c1", 1, T0 + 1)))]
    assert held == {} and engine.held_records == 0
    # no further event of the customer: another customer's event moves the partition's clock past 72 h
    commands, _, _, _ = engine.process_merged([Record(shipment("c9", T0 + 80 * HOUR), 0, 1)], {})
    assert [value for _, value in commands] == [serde.encode("EmailCommand", expected_command("c1", s, T0 + 1))
                                                for s in (2, 3)]
