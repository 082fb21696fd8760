"""Delivery feedback: a review request with a thank-you coupon ``flows.delivery_feedback.delay_ms`` after
delivery (settings: ``DeliveryFeedbackSettings``).

State: ``Customer.delivery_feedback``, a ``DeliveryFeedbackState`` (``streams/core/state.py``):
``requests`` order id → ``FeedbackRequest`` (due, trigger = the delivery event, order, deferral). One per order; a
cancelled, refunded or returned order has none (and loses a pending one).
"""

from __future__ import annotations

from typing import Any

from streams.config import DeliveryFeedbackSettings, FlowSettings
from streams.core.flows.base import Customer, Exit, KeyedFlow, own
from streams.core.ids import stable_code
from streams.core.state import DeliveryFeedbackState, FeedbackRequest


class DeliveryFeedback(KeyedFlow):
    name = "delivery_feedback"
    timer_key = "delivery_feedback"
    priority = 1
    steps = 1
    settle_topics = frozenset({"orders", "shipments"})
    exits = (Exit("orders", frozenset({"cancelled", "refunded"}), key="order_id"),  # no request about an order
             Exit("shipments", frozenset({"returned"}), key="order_id"))  # …the customer no longer has

    @staticmethod
    def settings_of(flows: FlowSettings) -> DeliveryFeedbackSettings:
        return flows.delivery_feedback

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        if self.apply_exits(c, topic, r):
            return
        if r["type"] == "delivered":
            order_id = r["order_id"]
            if order_id not in c.x:
                fb = own(c, "delivery_feedback", DeliveryFeedbackState).requests
                if order_id not in fb:
                    ref = c.oi.get(order_id)
                    fb[order_id] = FeedbackRequest(due=r["occurred_at"] + self.options.delay_ms,
                                                   trig=r["event_id"], o=order_id,
                                                   on=r.get("order_number") or (ref.n if ref else None),
                                                   skus=list(ref.skus) if ref else [],
                                                   names=list(ref.names) if ref else [])

    def timers(self, c: Customer) -> dict[str, FeedbackRequest]:
        st = c.delivery_feedback
        return st.requests if st is not None else {}

    def emptied(self, c: Customer) -> None:
        c.delivery_feedback = None  # no request pending: the customer's record carries no field of this flow

    def context(self, cid: str, c: Customer, inst: FeedbackRequest, step: int, key: str) -> dict[str, Any]:
        ctx: dict[str, Any] = {"order_id": key, "coupon_code": stable_code("THANKS", cid, key),
                               "coupon_percent": self.options.coupon_percent}
        if inst.on is not None:
            ctx["order_number"] = inst.on
        # the products to rate (the sink signs a rating link per product), named as the customer's own order
        # named them; the partition's catalog (the last buyer's name, in any language) only for older state
        catalog = self.ctx.catalog
        if len(inst.names) == len(inst.skus) and inst.names:
            products = [{"sku": s, "name": n, "image_url": catalog[s].get("image_url") if s in catalog else None}
                        for s, n in zip(inst.skus, inst.names)]
        else:
            products = [{"sku": s, "name": catalog[s]["name"], "image_url": catalog[s].get("image_url")}
                        for s in inst.skus if s in catalog]
        if products:
            ctx["products"] = products
        return ctx
