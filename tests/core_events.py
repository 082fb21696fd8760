"""Builders of valid input records (JSON form → serde-validated) for domain tests."""

from __future__ import annotations

import itertools
from typing import Any

from schemas import serde
from streams.config import HOUR_MS, load_settings
from streams.core.engine import PartitionEngine

T0 = 1_793_955_600_000  # 2026-11-06 09:00:00 UTC (a Friday morning: no quiet hours in UTC)
_ids = itertools.count()
SHOP = "https://shop.example.com"
ITEMS = [{"sku": "MUG", "name": "Enamel mug", "price": "14.00", "quantity": 2,
          "image_url": "https://shop.example.com/i/MUG.jpg", "url": "https://shop.example.com/p/MUG"}]


def eid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def customer(cid: str, at: int = T0 - HOUR_MS, opt_in: bool = True, tz: str = "UTC", email: str | None = "auto",
             **kw: Any) -> tuple[str, dict]:
    return "customers", serde.from_json("CustomerEvent", {
        "event_id": kw.pop("event_id", eid("cust")), "customer_id": cid, "occurred_at": at, "type": "upserted",
        "email": f"{cid}@example.com" if email == "auto" else email, "first_name": cid.title(), "locale": "en",
        "timezone": tz, "marketing_opt_in": opt_in, **kw})


def cart(cid: str, at: int, kind: str = "item_added", items: list | None = None, cart_id: str | None = None,
         **kw: Any) -> tuple[str, dict]:
    return "carts", serde.from_json("CartEvent", {
        "event_id": kw.pop("event_id", eid("cart")), "customer_id": cid, "occurred_at": at, "type": kind,
        "cart_id": cart_id or f"cart-{cid}", "items": ITEMS if items is None else items, "currency": "EUR",
        "cart_url": f"https://shop.example.com/cart/{cid}", **kw})


def order(cid: str, at: int, kind: str = "placed", order_id: str | None = None, items: list | None = None,
          total: str = "28.00", **kw: Any) -> tuple[str, dict]:
    return "orders", serde.from_json("OrderEvent", {
        "event_id": kw.pop("event_id", eid("order")), "customer_id": cid, "occurred_at": at, "type": kind,
        "order_id": order_id or f"o-{cid}", "email": f"{cid}@example.com", "items": ITEMS if items is None else items,
        "total": total, "currency": "EUR", **kw})


def shipment(cid: str, at: int, kind: str, order_id: str | None = None, shipment_id: str | None = None,
             **kw: Any) -> tuple[str, dict]:
    return "shipments", serde.from_json("ShipmentEvent", {
        "event_id": kw.pop("event_id", eid("ship")), "customer_id": cid, "occurred_at": at, "type": kind,
        "shipment_id": shipment_id or f"s-{cid}", "order_id": order_id or f"o-{cid}", "carrier": "DHL",
        "tracking_number": "JD0001", "tracking_url": "https://track.example.com/JD0001", **kw})


def feedback(cid: str, at: int, kind: str, **kw: Any) -> tuple[str, dict]:
    return "feedback", serde.from_json("EmailFeedback", {
        "event_id": kw.pop("event_id", eid("fb")), "customer_id": cid, "occurred_at": at, "type": kind, **kw})


def view(cid: str, at: int, sku: str = "TEE", name: str | None = None, **kw: Any) -> tuple[str, dict]:
    return "product_views", serde.from_json("ProductViewed", {
        "event_id": kw.pop("event_id", eid("view")), "customer_id": cid, "occurred_at": at, "sku": sku,
        "name": name or f"Product {sku}", "price": kw.pop("price", "25.00"), "currency": kw.pop("currency", "EUR"),
        "image_url": f"{SHOP}/i/{sku}.jpg", "url": f"{SHOP}/p/{sku}", **kw})


def inventory(sku: str, at: int, kind: str, **kw: Any) -> tuple[str, dict]:
    return "inventory", serde.from_json("InventoryEvent", {
        "event_id": kw.pop("event_id", eid("inv")), "sku": sku, "occurred_at": at, "type": kind, **kw})


def tick(at: int, partition: int = 0) -> tuple[str, dict]:
    return "clock", {"partition": partition, "tick_at": at, "source": "test"}


def run_engine(events: list[tuple[str, dict]], until: int | None = None,
               eng: PartitionEngine | None = None) -> tuple[list[dict[str, Any]], PartitionEngine]:
    """Records through one partition engine (a new one with the defaults unless given), then the clock
    moved to ``until``: the commands in firing order, and the engine."""
    eng = eng or PartitionEngine(load_settings(env={}), 0)
    out: list[dict[str, Any]] = []
    for topic, rec in events:
        out += eng.process(topic, rec).commands
    if until is not None:
        out += eng.advance(until).commands
    return out, eng
