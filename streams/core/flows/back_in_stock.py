"""Back in stock: one mail when a SKU that went out of stock while it sat in the customer's abandoned
cart is restocked.

Inputs: the customer's cart activity (settled, like every flow) and ``inventory``, a global topic
keyed by SKU that every partition engine receives in full (``Flow.on_global``). The partition's
``stock`` table (SKU → ``Stock``, the latest inventory record applied) is this flow's state not keyed
by customer; per customer it keeps ``Customer.back_in_stock``, a ``BackInStockState``: ``waiting``
(SKU → ``WaitingSku``, at most ``max_waiting_skus``).

A customer waits for a SKU when
- a cart activity settles with a line whose ``stock`` is 0, or with a SKU the ``stock`` table holds
  as out of stock; or
- an ``out_of_stock`` record arrives while the SKU is in the customer's open abandoned cart.
A ``restocked`` record (quantity absent or > 0) makes every customer waiting for the SKU since
before it due at its time (or the watermark, if later); the mail goes through the marketing guards
(consent, suppression, frequency cap, quiet hours, expiry) like any step, then the SKU is forgotten:
one mail per customer per restock. A sold-out line whose activity settles after a later restock
reached the partition (activity waits out the grace period; inventory is applied on arrival) is due
at once. An order with the SKU ends the wait; so does a suppression.
Priority 3: below the cart series, feedback and win-back when two steps are due at the same moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.config import BackInStockSettings, FlowSettings
from streams.core.context import FlowContext
from streams.core.flows.abandoned_cart import AbandonedCart
from streams.core.flows.base import Command, Customer, Exit, Flow, KeyedFlow, own
from streams.core.state import BackInStockState, Stock, WaitingSku


class BackInStock(KeyedFlow):
    name = "back_in_stock"
    timer_key = "back_in_stock"
    priority = 3
    steps = 1
    settle_topics = frozenset({"carts", "orders"})
    global_topics = frozenset({"inventory"})
    exits = (Exit("orders", frozenset({"placed"}), key="sku"),)  # bought it (after it was seen sold out)
    after = (AbandonedCart,)  # the customer's open cart is that flow's: it settles a cart activity first

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self.stock = ctx.table("stock", Stock)

    @staticmethod
    def settings_of(flows: FlowSettings) -> BackInStockSettings:
        return flows.back_in_stock

    def connect(self, flows: tuple[Flow, ...]) -> None:
        super().connect(flows)
        self.carts = self.peer(AbandonedCart)

    # ---- customer events --------------------------------------------------------------------
    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        if topic == "orders":
            self.apply_exits(c, topic, r)
            return
        cart = self.carts.open_cart(c)  # as of this activity (``after``: that flow settled it first)
        if cart is None or cart.a != r["occurred_at"]:
            return  # cleared, bought or stale: no open cart from this activity
        stock = self.stock.rows
        at = r["occurred_at"]
        for it in cart.items:
            row = stock.get(it["sku"])
            if it.get("stock") == 0:
                if self._wait(c, it, at) and row is not None and not row.out and row.back is not None \
                        and row.back > at:
                    # restocked after this activity, and the restock reached this partition before the
                    # activity settled (it waits out the grace period): the mail is due now
                    w = self.timers(c)[it["sku"]]
                    w.due, w.trig = max(row.back, self.ctx.watermark), f"{it['sku']}@{row.back}"
            elif row is not None and row.out and row.at <= at:
                self._wait(c, it, at)

    def _wait(self, c: Customer, item: dict[str, Any], at: int) -> bool:
        sku = item["sku"]
        waits = own(c, "back_in_stock", BackInStockState).waiting
        if sku in waits:
            return False  # already waiting, or its mail is due
        cart = self.carts.open_cart(c)
        waits[sku] = WaitingSku(since=at, item=item, cur=cart.cur if cart is not None else "USD")
        limit = self.options.max_waiting_skus
        if len(waits) > limit:  # forget the oldest waits (never a mail already due)
            waiting = sorted((w.since, s) for s, w in waits.items() if w.due is None)
            for _, s in waiting[:len(waits) - limit]:
                del waits[s]
                self.ctx.count("back_in_stock:forgotten")
        return True

    def _cart_line(self, c: Customer, sku: str) -> dict[str, Any] | None:
        """The line of ``sku`` in the customer's open cart, if it is there."""
        cart = self.carts.open_cart(c)
        return None if cart is None else next((it for it in cart.items if it["sku"] == sku), None)

    def suppressed(self, c: Customer) -> None:
        c.back_in_stock = None

    def emptied(self, c: Customer) -> None:
        c.back_in_stock = None  # nothing waited for: the customer's record carries no field of this flow

    # ---- the global inventory topic ----------------------------------------------------------
    def on_global(self, topic: str, r: dict[str, Any], customers: Mapping[str, Customer]) -> list[str]:
        sku = r["sku"]
        at = r["occurred_at"]
        row = self.stock.get(sku)
        if row is not None and (at < row.at or (at == row.at and r["event_id"] == row.eid)):
            self.ctx.count("stale:inventory" if at < row.at else "duplicate:inventory")
            return []
        was_out = row is not None and row.out
        kind = r["type"]
        price, cur = (r["price"], r.get("currency")) if r.get("price") else \
            ((row.price, row.cur) if row else (None, None))  # a price is kept with its currency (None: unknown)
        new = Stock(at=at, eid=r["event_id"], out=was_out, back=row.back if row else None, qty=r.get("quantity"),
                    price=price, cur=cur, name=r.get("name") or (row.name if row else None),
                    url=r.get("url") or (row.url if row else None),
                    image_url=r.get("image_url") or (row.image_url if row else None))
        if kind == "out_of_stock":
            new.out = True
        elif kind == "restocked" and (r.get("quantity") is None or r["quantity"] > 0):
            new.out = False
            new.back = at
        self.stock.put(sku, new)
        if kind == "out_of_stock":
            touched = []
            for cid, c in customers.items():
                line = self._cart_line(c, sku)
                if line is not None and self._wait(c, line, at):
                    touched.append(cid)
            return touched
        if kind == "restocked" and not new.out:
            due = max(at, self.ctx.watermark)
            touched = []
            for cid, c in customers.items():
                st = c.back_in_stock
                w = st.waiting.get(sku) if st is not None else None
                if w is not None and w.due is None and w.since <= at:
                    w.due, w.trig, w.next = due, f"{sku}@{at}", 1  # the trigger: this restock
                    touched.append(cid)
            return touched
        return []

    # ---- timers -----------------------------------------------------------------------------
    def timers(self, c: Customer) -> dict[str, WaitingSku]:
        st = c.back_in_stock
        return st.waiting if st is not None else {}

    def started(self, inst: WaitingSku) -> int:
        return inst.since

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        sku = self.due_key(c, due)
        w = self.timers(c)[sku]
        row = self.stock.get(sku)
        if row is not None and row.out:  # sold out again before the mail went: wait for the next restock
            w.due = w.d = None
            w.since = row.at
            self.ctx.count("back_in_stock:sold_out_again")
            return []
        return self.fire_instance(cid, c, w, due, sku)

    def context(self, cid: str, c: Customer, inst: WaitingSku, step: int, key: str) -> dict[str, Any]:
        row = self.stock.get(key)
        item = dict(inst.item)
        if row is not None:  # the inventory's link and image are fresher than the cart line; the name stays
            for field, value in (("url", row.url), ("image_url", row.image_url)):  # the customer's (their language)
                if value is not None:
                    item[field] = value
            if row.price is not None:  # the inventory's price, with its currency (None: unknown, not shown)
                item["price"], item["currency"] = row.price, row.cur
        item.pop("stock", None)
        cart = self.carts.open_cart(c)
        url = item.get("url") or (cart.url if cart is not None else None) or f"{self.ctx.shop_url}/cart"
        return {"sku": key, "items": [item], "product_name": item.get("name") or key, "product_url": url,
                "currency": inst.cur}
