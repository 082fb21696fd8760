"""Abandoned cart: help (1 h), urgency (24 h), incentive (72 h) after the last cart activity.

State: ``Customer.abandoned_cart``, an ``AbandonedCartState`` (``streams/core/state.py``): ``run`` (a
``Cart``: id, items, currency, url, anchor ``a`` = the last activity, trigger, next step, deferral,
cached total), ``last_sent`` when the last step went out, ``cleared_at`` when the cart was last cleared.
Starts on cart activity with items; new activity re-times the running series and restarts it from
step 1 only when no step went out in the last ``no_respam_ms``. Ends on an order after the activity,
a cleared cart, or a suppression.
"""

from __future__ import annotations

from typing import Any

from streams.config import AbandonedCartSettings, FlowSettings
from streams.core.flows.base import Customer, Exit, SeriesFlow, items, total
from streams.core.ids import stable_code
from streams.core.state import AbandonedCartState, Cart


class AbandonedCart(SeriesFlow):
    name = "abandoned_cart"
    timer_key = "abandoned_cart.run"
    priority = 0
    steps = 3
    settle_topics = frozenset({"carts", "orders"})
    exits = (Exit("orders", frozenset({"placed"})),)  # the customer ordered after the cart activity
    audiences = ("abandoned_cart_open",)  # a cart with items, neither bought nor cleared
    audience_key = "abandoned_cart"  # empty: in none of them (not asked)

    @staticmethod
    def settings_of(flows: FlowSettings) -> AbandonedCartSettings:
        return flows.abandoned_cart

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        if topic == "orders":
            self.exited(c, topic, r)
            return
        at = r["occurred_at"]
        st = c.abandoned_cart
        if st is None:
            st = c.abandoned_cart = AbandonedCartState()
        cart = st.run
        if cart is not None and at < cart.a:
            self.ctx.count("stale:carts")  # newer cart activity is already known
            return
        cleared = -1 if st.cleared_at is None else st.cleared_at
        if r["type"] == "cart_cleared" or not r["items"]:
            st.run = None
            if at > cleared:
                st.cleared_at = at
            return
        ac: AbandonedCartSettings = self.options
        if cart is None and (at < cleared or (c.ord is not None and c.ord.last is not None and at < c.ord.last)):
            self.ctx.count("stale:carts")  # the cart was cleared or bought after this activity
            return
        if cart is None:  # a new flow instance
            cart = st.run = Cart(trig=r["event_id"])
        elif st.last_sent is None or at - st.last_sent >= ac.no_respam_ms:  # restart only without a recent step
            cart.trig, cart.next = r["event_id"], 1
        elif cart.next > len(self.delays):  # every step went out within no_respam_ms: no new series
            self.ctx.dropped(cid, self.name, 1, "no_respam")
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
        st = c.abandoned_cart
        return None if st is None else st.run

    def series_open(self, c: Customer) -> bool:
        """Whether the customer's cart series still has a step to send."""
        cart = self.open_cart(c)
        return cart is not None and cart.next <= len(self.delays)

    # the three below read the struct directly rather than through ``open_cart``: the engine asks them for
    # every customer it settles (hot path)
    def audience_of(self, c: Customer) -> tuple[str, ...]:
        st = c.abandoned_cart
        return self.audiences if st is not None and st.run is not None else ()

    def next_due(self, c: Customer) -> int | None:
        st = c.abandoned_cart
        cart = None if st is None else st.run
        return None if cart is None else self.series_due(cart)

    def instance(self, c: Customer) -> Cart | None:
        st = c.abandoned_cart
        return None if st is None else st.run

    def end(self, c: Customer) -> None:
        st = c.abandoned_cart
        if st is not None:
            st.run = None

    def started(self, inst: Cart) -> int:
        return inst.a

    def sent(self, c: Customer, due: int) -> None:
        st = c.abandoned_cart  # set: a step of its run went out (``own``, inlined: every step sent)
        if st is None:
            st = c.abandoned_cart = AbandonedCartState()
        st.last_sent = due

    def settled_until(self, c: Customer) -> int:
        st = c.abandoned_cart
        if st is None:
            return 0
        return max(st.cleared_at or 0, st.run.a if st.run is not None else 0)

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
