"""Transactional mail, sent the moment the event is processed (no guards, no timers):
order confirmation (with cross-sell learnt from the partition's orders), shipping confirmation (the
first status of a shipment) and one tracking update per later status change.

State (``streams/core/state.py``): ``sh`` shipment id → statuses seen (last 10 shipments); 
``waiting_for_address`` (stored ``ptx``) event id → [flow, trigger, extra] for mail that waits for an
address until the event settles.
"""

from __future__ import annotations

from typing import Any

from streams.config import FlowSettings, TransactionalSettings
from streams.core.flows.base import Command, Customer, Flow, items
from streams.core.state import OrderRef

ORDER_DETAILS = ("order_number", "subtotal", "shipping", "tax", "shipping_address", "order_url")


class TransactionalFlow(Flow):
    category = "transactional"

    @staticmethod
    def settings_of(flows: FlowSettings) -> TransactionalSettings:
        return flows.transactional

    def context(self, r: dict[str, Any]) -> dict[str, Any]:
        return {"order_id": r["order_id"], "shipment_id": r["shipment_id"], "carrier": r.get("carrier"),
                "tracking_number": r.get("tracking_number"), "tracking_url": r.get("tracking_url"),
                "status": r["type"]}

    def send(self, cid: str, c: Customer, r: dict[str, Any], trigger: str, extra: dict[str, Any]) -> list[Command]:
        """Emit now; without a known address wait (until the event settles) for a profile that has one."""
        to = r.get("email") or c.p.email
        if not to:
            c.waiting_for_address[r["event_id"]] = [self.name, trigger, extra]
            return []
        at = r["occurred_at"]
        known = max(at, self.ctx.watermark)  # a late event's mail expires counting from its arrival
        ctx = self.context(r)
        if "shipment_id" in ctx:  # shipping mail: the order's number (the shipment's, else the order's)
            number = r.get("order_number") or _order_number(c, r["order_id"])
            if number is not None:
                ctx["order_number"] = number
            # the link to the shop's own tracking page is signed by the sink at render time
        ctx.update(extra)
        return [self.command(cid, c, 1, trigger, at, known + self.options.expires_after_ms, ctx, to)]


class OrderConfirmation(TransactionalFlow):
    name = "order_confirmation"
    arrival_topics = frozenset({"orders"})

    def context(self, r: dict[str, Any]) -> dict[str, Any]:
        ctx = {"order_id": r["order_id"], "items": items(r["items"]), "total": r["total"], "currency": r["currency"]}
        for key in ORDER_DETAILS:  # what the event carries beyond the items (optional fields)
            if r.get(key) is not None:
                ctx[key] = r[key]
        return ctx

    def on_arrival(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> list[Command]:
        if r["type"] != "placed":
            return []
        skus = [it["sku"] for it in r["items"]]
        locale = c.p.loc or "en"
        suggestions = self.ctx.cross_sell(skus, self.options.cross_sell_max, locale)
        self.ctx.learn_basket(r["items"], r["currency"], locale)
        remember_order(c, r)
        return self.send(cid, c, r, r["event_id"], {"cross_sell": suggestions})


def remember_order(c: Customer, r: dict[str, Any]) -> None:
    """Keep the order's number and products (last 5 orders) for the mail that follows it."""
    oi = c.oi
    lines = r["items"][:5]
    oi[r["order_id"]] = OrderRef(n=r.get("order_number"), skus=[it["sku"] for it in lines],
                                 names=[it["name"] for it in lines])
    while len(oi) > 5:
        oi.pop(next(iter(oi)))


def _order_number(c: Customer, order_id: str) -> str | None:
    ref = c.oi.get(order_id)
    return ref.n if ref is not None else None


def _statuses(c: Customer, r: dict[str, Any]) -> list[str] | None:
    """The statuses already seen for the record's shipment (``None``: none yet)."""
    return c.sh.get(r["shipment_id"])


def _record_status(c: Customer, r: dict[str, Any]) -> None:
    sh = c.sh
    sh.setdefault(r["shipment_id"], []).append(r["type"])
    if len(sh) > 10:
        sh.pop(next(iter(sh)))


class ShippingConfirmation(TransactionalFlow):
    """The first status of a shipment."""

    name = "shipping_confirmation"
    arrival_topics = frozenset({"shipments"})

    def on_arrival(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> list[Command]:
        if _statuses(c, r):
            return []
        _record_status(c, r)
        return self.send(cid, c, r, r["shipment_id"], {})


class TrackingUpdate(TransactionalFlow):
    """Each later status change of a shipment (a repeat of a status sends nothing)."""

    name = "tracking_update"
    arrival_topics = frozenset({"shipments"})

    def on_arrival(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> list[Command]:
        statuses = _statuses(c, r)
        if not statuses or r["type"] in statuses:
            return []
        _record_status(c, r)
        return self.send(cid, c, r, f"{r['shipment_id']}:{r['type']}", {})
