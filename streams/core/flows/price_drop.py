"""Price drop: one mail when a product the customer viewed or carted gets cheaper.

Inputs: the customer's product views and cart activity (settled, like every flow) and ``inventory``'s
``price_changed`` records (a global topic: every partition engine receives all of them, ``Flow.on_global``).

State (``streams/core/state.py``): ``Customer.price_drop``, a ``PriceDropState`` whose ``watched`` maps a
SKU to a ``WatchedPrice``: the price and currency the customer last saw, when, and the product's name; once
the price fell, when the mail is due, the new price and the trigger (``<sku>@<time of the cut>``). The
product's page and image come from the partition's ``stock`` table (the inventory records). At most ``max_watched`` SKUs (the one seen
longest ago is forgotten first); a product not seen for ``watch_ms`` is no longer watched.

- A view, or a cart activity with items, watches each product at the price it showed (a newer sighting
  replaces an older one; a line without a price or currency is not watched: a cut is only a cut in the
  currency the customer saw).
- A ``price_changed`` record with a price in the watched currency at least ``min_drop_percent`` below the
  price seen, at or after the sighting, makes the mail due at the record's time (or the watermark, if
  later). A sighting that settles after a cut this partition already knows (sightings wait out the grace
  period; inventory is applied on arrival) compares with the ``stock`` table's latest price.
- Exits: an order with the product (the customer bought it) ends its watch; a suppression ends them all.
- When the mail is due, the marketing guards apply like any step; a price that went back up since
  (the ``stock`` table's latest record) sends nothing and keeps watching (``price_drop:price_back_up``).

Priority 5: below every other timed flow when two steps are due at the same moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from streams.config import FlowSettings, PriceDropSettings
from streams.core.context import FlowContext
from streams.core.customer import dec
from streams.core.flows.base import Command, Customer, Exit, KeyedFlow
from streams.core.state import PriceDropState, Stock, WatchedPrice

HUNDRED = Decimal(100)


class PriceDrop(KeyedFlow):
    name = "price_drop"
    timer_key = "price_drop"
    priority = 5
    steps = 1
    settle_topics = frozenset({"product_views", "carts", "orders"})
    global_topics = frozenset({"inventory"})
    exits = (Exit("orders", frozenset({"placed"}), key="sku"),)  # bought it after seeing it: nothing to tell

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self.stock = ctx.table("stock", Stock)  # the partition's inventory: the latest price of each SKU
        opts: PriceDropSettings = self.options
        self.keep = Decimal(100 - opts.min_drop_percent) / HUNDRED  # a new price at most this × the seen one

    @staticmethod
    def settings_of(flows: FlowSettings) -> PriceDropSettings:
        return flows.price_drop

    def timers(self, c: Customer) -> dict[str, WatchedPrice]:
        return c.price_drop.watched if c.price_drop is not None else {}

    def started(self, inst: WatchedPrice) -> int:
        return inst.seen_at

    # ---- customer events --------------------------------------------------------------------
    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        if topic == "orders":
            self.apply_exits(c, topic, r)
        elif topic == "product_views":
            self._watch(c, (r,), r.get("currency"), r["occurred_at"])
        elif r["type"] != "cart_cleared" and r["items"]:
            self._watch(c, r["items"], r.get("currency"), r["occurred_at"])

    def _watch(self, c: Customer, lines: Any, currency: str | None, at: int) -> None:
        """Watch each line's product (a view, or a cart line: ``sku``, ``price``, ``name``) at the price seen
        at ``at`` (hot path: every cart activity)."""
        if not currency:
            return  # a price without its currency: nothing to compare a cut with
        state = c.price_drop
        if state is None:
            state = c.price_drop = PriceDropState()
        watched = state.watched
        added = False
        stock = self.stock.rows
        for line in lines:
            sku, price = line["sku"], line.get("price")
            if not price:
                continue
            w = watched.get(sku)
            if w is not None:
                if w.due is not None or at < w.seen_at:
                    continue  # its mail is due already, or a newer sighting is known
                if w.price == price and w.currency == currency:
                    w.seen_at = at  # seen again at the same price
                    continue
            else:
                added = True
            watched[sku] = w = WatchedPrice(seen_at=at, price=price, currency=currency, name=line.get("name") or sku)
            row = stock.get(sku)
            if row is not None and row.at > at and self._cut(w, row.price, row.cur):
                # the price fell after this sighting, and the record reached this partition before the
                # sighting settled: the mail is due now
                self._due(w, sku, row.at, row.price)
        if added:
            self._forget_old(watched, at)
        elif not watched:
            c.price_drop = None

    def _forget_old(self, watched: dict[str, WatchedPrice], at: int) -> None:
        """Products not seen for ``watch_ms``, then beyond ``max_watched`` the ones seen longest ago (never
        one whose mail is due)."""
        opts: PriceDropSettings = self.options
        for old in [s for s, x in watched.items() if x.due is None and at - x.seen_at > opts.watch_ms]:
            del watched[old]
        if len(watched) > opts.max_watched:
            waiting = sorted((x.seen_at, s) for s, x in watched.items() if x.due is None)
            for _, s in waiting[:len(watched) - opts.max_watched]:
                del watched[s]
                self.ctx.count("price_drop:forgotten")

    def _cut(self, w: WatchedPrice, price: str | None, currency: str | None) -> bool:
        """Whether ``price`` is a cut of at least ``min_drop_percent`` of the price the customer saw."""
        return bool(price) and currency == w.currency and dec(price) <= dec(w.price) * self.keep

    def _due(self, w: WatchedPrice, sku: str, at: int, price: str | None) -> None:
        w.due, w.trig, w.next, w.new_price = max(at, self.ctx.watermark), f"{sku}@{at}", 1, price

    # ---- the global inventory topic ----------------------------------------------------------
    def on_global(self, topic: str, r: dict[str, Any], customers: Mapping[str, Customer]) -> list[str]:
        if r["type"] != "price_changed" or not r.get("price") or not r.get("currency"):
            return []
        sku, at = r["sku"], r["occurred_at"]
        watch_ms = self.options.watch_ms
        touched = []
        for cid, c in customers.items():
            state = c.price_drop
            w = state.watched.get(sku) if state is not None else None
            if w is not None and w.due is None and w.seen_at <= at <= w.seen_at + watch_ms \
                    and self._cut(w, r["price"], r["currency"]):
                self._due(w, sku, at, r["price"])
                touched.append(cid)
        return touched

    # ---- timers -----------------------------------------------------------------------------
    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        sku = self.due_key(c, due)
        w = self.timers(c)[sku]
        row = self.stock.get(sku)
        if row is not None and row.price and row.cur == w.currency and not self._cut(w, row.price, row.cur):
            w.due = w.d = w.new_price = None  # the price went back up before the mail went: keep watching
            self.ctx.count("price_drop:price_back_up")
            return []
        return self.fire_instance(cid, c, w, due, sku)

    def context(self, cid: str, c: Customer, inst: WatchedPrice, step: int, key: str) -> dict[str, Any]:
        row = self.stock.get(key)
        name = (row.name if row is not None else None) or inst.name
        url = (row.url if row is not None else None) or self.ctx.shop_url
        image = row.image_url if row is not None else None
        item = {"sku": key, "name": name, "price": inst.new_price, "image_url": image, "url": url}
        return {"sku": key, "items": [item], "product_name": name, "product_url": url, "currency": inst.currency,
                "price": inst.new_price, "previous_price": inst.price}

    def emptied(self, c: Customer) -> None:
        c.price_drop = None  # nothing watched: the customer's record carries no field of this flow

    def suppressed(self, c: Customer) -> None:
        c.price_drop = None

    def settled_until(self, c: Customer) -> int:
        state = c.price_drop
        return max((w.seen_at for w in state.watched.values()), default=0) if state is not None else 0
