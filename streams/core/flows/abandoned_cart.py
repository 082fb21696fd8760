"""Abandoned cart: help (1 h), urgency (24 h), incentive (72 h) after the last cart activity.

State (``streams/core/state.py``): ``cart`` (a ``Cart``: id, items, currency, url, anchor ``a`` = the
last activity, trigger, next step, deferral, cached total); ``cart_last_sent`` when the last step went out;
``cart_cleared_at`` when the cart was last cleared (stored as ``acl`` and ``cx``).
Starts on cart activity with items; new activity re-times the running series and restarts it from
step 1 only when no step went out in the last ``no_respam_ms``. Ends on an order after the activity,
a cleared cart, or a suppression.
"""

from __future__ import annotations

from typing import Any

from streams.config import AbandonedCartSettings, FlowSettings
from streams.core.flows.base import Customer, Exit, SeriesFlow, items, total
from streams.core.ids import stable_code
from streams.core.state import Cart


class AbandonedCart(SeriesFlow):
    name = "abandoned_cart"
    timer_key = "cart"
    priority = 0
    steps = 3
    settle_topics = frozenset({"carts", "orders"})
    exits = (Exit("orders", frozenset({"placed"})),)  # the customer ordered after the cart activity
    audiences = ("abandoned_cart_open",)  # a cart with items, neither bought nor cleared

    @staticmethod
    def settings_of(flows: FlowSettings) -> AbandonedCartSettings:
        return flows.abandoned_cart

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        if topic == "orders":
            self.exited(c, topic, r)
            return
        at = r["occurred_at"]
        cart = c.cart
        if cart is not None and at < cart.a:
            self.ctx.count("stale:carts")  # newer cart activity is already known
            return
        cleared = -1 if c.cart_cleared_at is None else c.cart_cleared_at
        if r["type"] == "cart_cleared" or not r["items"]:
            c.cart = None
            if at > cleared:
                c.cart_cleared_at = at
            return
        ac: AbandonedCartSettings = self.options
        if cart is None and (at < cleared or (c.ord is not None and c.ord.last is not None and at < c.ord.last)):
            self.ctx.count("stale:carts")  # the cart was cleared or bought after this activity
            return
        if cart is None:  # a new flow instance
            cart = c.cart = Cart(trig=r["event_id"])
        elif c.cart_last_sent is None or at - c.cart_last_sent >= ac.no_respam_ms:  # restart only without a recent step
            cart.trig, cart.next = r["event_id"], 1
        # else: the running chain continues with its remaining steps, timed from this activity
        cart.id = r["cart_id"]
        cart.items = items(r["items"])
        cart.cur = r.get("currency") or "USD"
        cart.url = r.get("cart_url") or f"{self.ctx.shop_url}/cart"
        cart.a = at
        cart.d = None
        cart.tot = None

    def open_cart(self, c: Customer) -> Cart | None:
        """The customer's open abandoned cart (its lines, currency, url and last activity ``a``), if any:
        what other flows may know of this flow's state."""
        return c.cart

    def series_open(self, c: Customer) -> bool:
        """Whether the customer's cart series still has a step to send."""
        return c.cart is not None and c.cart.next <= len(self.delays)

    def audience_of(self, c: Customer) -> tuple[str, ...]:
        return self.audiences if c.cart is not None else ()

    def next_due(self, c: Customer) -> int | None:
        cart = c.cart
        return None if cart is None else self.series_due(cart)

    def instance(self, c: Customer) -> Cart | None:
        return c.cart

    def end(self, c: Customer) -> None:
        c.cart = None

    def started(self, inst: Cart) -> int:
        return inst.a

    def sent(self, c: Customer, due: int) -> None:
        c.cart_last_sent = due

    def settled_until(self, c: Customer) -> int:
        return max(c.cart_cleared_at or 0, c.cart.a if c.cart is not None else 0)

    def context(self, cid: str, c: Customer, inst: Cart, step: int, key: str) -> dict[str, Any]:
        cart_total = inst.tot
        if cart_total is None:  # computed once per cart version (activity replaces the items and drops it)
            cart_total = inst.tot = total(inst.items)
        ctx: dict[str, Any] = {"cart_id": inst.id, "cart_url": inst.url, "items": inst.items,
                               "cart_total": cart_total, "currency": inst.cur}
        if step == 3:
            ac: AbandonedCartSettings = self.options
            ctx["incentive"] = ac.incentive
            if ac.incentive == "coupon":
                ctx["coupon_code"] = stable_code("CART", cid, inst.id)
                ctx["coupon_percent"] = ac.coupon_percent
            elif ac.incentive == "free_shipping":  # a code the shop's checkout learns from email.coupons
                ctx["coupon_code"] = stable_code("SHIP", cid, inst.id)
        return ctx
