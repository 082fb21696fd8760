"""Delivery feedback: a review request with a thank-you coupon ``feedback_delay_ms`` after delivery.

State: ``fb`` order id → {due, trig (the delivery event), o, d (deferred due)}. One per order; a
cancelled, refunded or returned order has none (and loses a pending one).
"""

from __future__ import annotations

from typing import Any

from streams.config import FlowSettings, TransactionalSettings
from streams.core.flows.base import Command, Customer, MarketingFlow
from streams.core.ids import stable_code


class DeliveryFeedback(MarketingFlow):
    name = "delivery_feedback"
    timer_key = "fb"
    priority = 1
    steps = 1
    settle_topics = frozenset({"orders", "shipments"})

    @staticmethod
    def settings_of(flows: FlowSettings) -> TransactionalSettings:
        return flows.transactional

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        kind = r["type"]
        if kind == "delivered":
            if r["order_id"] not in c.get("x", []):
                fb = c.setdefault("fb", {})
                if r["order_id"] not in fb:
                    fb[r["order_id"]] = {"due": r["occurred_at"] + self.options.feedback_delay_ms,
                                         "trig": r["event_id"], "o": r["order_id"]}
        elif kind in ("returned", "cancelled", "refunded"):
            c.get("fb", {}).pop(r["order_id"], None)

    def next_due(self, c: Customer) -> int | None:
        fbs = c.get("fb")
        best: int | None = None
        if fbs:
            for fb in fbs.values():
                t = fb.get("d") or fb["due"]
                if best is None or t < best:
                    best = t
        return best

    def _due_now(self, c: Customer, due: int) -> str:
        """The order whose request is due at ``due`` (the smallest order id on a tie)."""
        return min(oid for oid, fb in c["fb"].items() if (fb.get("d") or fb["due"]) == due)

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        key = self._due_now(c, due)
        return self.fire_instance(cid, c, c["fb"][key], due, key)

    def skip(self, cid: str, c: Customer, due: int) -> None:
        key = self._due_now(c, due)
        self.skip_instance(cid, c, c["fb"][key], key)

    def original_due(self, inst: dict[str, Any]) -> int:
        return inst["due"]  # type: ignore[no-any-return]

    def advance(self, c: Customer, inst: dict[str, Any], key: str) -> None:
        c["fb"].pop(key, None)

    def context(self, cid: str, c: Customer, inst: dict[str, Any], step: int, key: str) -> dict[str, Any]:
        return {"order_id": key, "feedback_url": f"{self.ctx.shop_url}/feedback?order={key}",
                "coupon_code": stable_code("THANKS", cid, key),
                "coupon_percent": self.options.feedback_coupon_percent}
