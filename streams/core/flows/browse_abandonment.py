"""Browse abandonment: one mail ``delay_ms`` (default 2 h) after the customer's last product view, when
they viewed products (``product_views``, ProductViewed) but neither added anything to the cart nor
ordered since.

State: ``Customer.browse``, a ``BrowseState`` (``streams/core/state.py``): ``run`` (a ``BrowseRun``:
trigger = the first view's event id, first view ``f``, last view ``a``, the viewed products, currency,
deferral); ``last_due`` when the last browse mail was due (sent or held out), for the weekly cap.

- A view starts a run unless a browse mail was due less than ``weekly_cap_ms`` before it (counted
  ``dropped:browse_abandonment:weekly_cap``); later views re-time it and put their product first
  (distinct SKUs, at most ``max_items``).
- Cart activity with items or a placed order at or after the run's first view ends it (the customer
  did add or buy); a cleared cart does not. A late cart activity or order ends it the same way; a
  late view older than a known cart activity or order is stale (``stale:product_views``), and one
  older than the run's last view joins the run without re-timing it.
- The cart series has priority: a mail due while the customer's abandoned-cart series still has a
  step to send is dropped (``dropped:browse_abandonment:cart_series``).
- Consent, suppression, frequency cap, quiet hours and expiry apply like any marketing step
  (``fire_instance``); a suppression ends the run.
Priority 4: below every other timed flow when two steps are due at the same moment.
"""

from __future__ import annotations

from typing import Any

from streams.config import BrowseAbandonmentSettings, FlowSettings
from streams.core.context import FlowContext
from streams.core.flows.abandoned_cart import AbandonedCart
from streams.core.flows.base import Command, Customer, Exit, Flow, SingleInstanceFlow, own
from streams.core.state import BrowseRun, BrowseState


class BrowseAbandonment(SingleInstanceFlow):
    name = "browse_abandonment"
    timer_key = "browse.run"
    priority = 4
    steps = 1
    settle_topics = frozenset({"product_views", "carts", "orders"})
    after = (AbandonedCart,)  # asks it whether the customer has an open cart and its series a step to send
    exits = (Exit("carts", frozenset({"item_added", "item_removed", "checkout_started"}), with_items=True),  # added
             Exit("orders", frozenset({"placed"})))  # …or bought after viewing: the cart series takes it from here

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        opts: BrowseAbandonmentSettings = self.options
        self.delay_ms = opts.delay_ms

    def connect(self, flows: tuple[Flow, ...]) -> None:
        super().connect(flows)
        self.carts = self.peer(AbandonedCart)

    @staticmethod
    def settings_of(flows: FlowSettings) -> BrowseAbandonmentSettings:
        return flows.browse_abandonment

    # ---- settled events ---------------------------------------------------------------------
    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        if topic == "product_views":
            self._view(cid, c, self.instance(c), r, r["occurred_at"])
        else:
            self.exited(c, topic, r)

    def _view(self, cid: str, c: Customer, run: BrowseRun | None, r: dict[str, Any], at: int) -> None:
        opts: BrowseAbandonmentSettings = self.options
        if run is not None and at >= run.a:  # a newer view: re-times the run, its product goes first
            run.a = at
            run.d = None
            run.cur = r.get("currency") or "USD"
            run.items = _with_first(run.items, _product(r), opts.max_items)
            return
        if self._acted_since(c, at):
            self.ctx.count("stale:product_views")  # the customer added to the cart or ordered after it
            return
        if run is not None:  # a late view older than the run's last: joins it, the timing stays
            run.f = min(run.f, at)
            if len(run.items) < opts.max_items and all(it["sku"] != r["sku"] for it in run.items):
                run.items = run.items + [_product(r)]
            return
        st = own(c, "browse", BrowseState)
        if st.last_due is not None and at - st.last_due < opts.weekly_cap_ms:
            self.ctx.dropped(cid, self.name, 1, "weekly_cap")
            return
        st.run = BrowseRun(trig=r["event_id"], f=at, a=at, items=[_product(r)], cur=r.get("currency") or "USD")

    def settled_until(self, c: Customer) -> int:
        run = self.instance(c)
        return run.a if run is not None else 0

    # ---- timers -----------------------------------------------------------------------------
    def next_due(self, c: Customer) -> int | None:
        run = self.instance(c)
        return None if run is None else run.d or run.a + self.delay_ms

    def original_due(self, inst: BrowseRun) -> int:
        return inst.a + self.delay_ms

    def advance(self, c: Customer, inst: BrowseRun, key: str) -> None:
        self.end(c)  # one step: the run is over

    def instance(self, c: Customer) -> BrowseRun | None:
        st = c.browse
        return None if st is None else st.run

    def end(self, c: Customer) -> None:
        st = c.browse
        if st is not None:
            st.run = None

    def started(self, inst: BrowseRun) -> int:
        return inst.f

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        if self.carts.series_open(c):
            self.end(c)
            self.ctx.dropped(cid, self.name, 1, "cart_series")
            return []
        commands = super().fire(cid, c, due)
        if commands:  # sent or held out: either way the customer's browse mail of this week
            own(c, "browse", BrowseState).last_due = due
        return commands

    def _acted_since(self, c: Customer, at: int) -> bool:
        """Whether a cart activity with items (the open cart) or an order at or after ``at`` is known."""
        cart = self.carts.open_cart(c)
        if cart is not None and cart.a >= at:
            return True
        last = c.ord.last if c.ord is not None else None
        return last is not None and last >= at

    def context(self, cid: str, c: Customer, inst: BrowseRun, step: int, key: str) -> dict[str, Any]:
        first = inst.items[0]
        ctx: dict[str, Any] = {"items": inst.items, "currency": inst.cur, "product_name": first["name"],
                               "product_url": first.get("url") or self.ctx.shop_url}
        limit = self.options.cross_sell_max
        if limit > 0:
            suggestions = self.ctx.cross_sell([it["sku"] for it in inst.items], limit, c.p.loc or "en")
            if suggestions:
                ctx["cross_sell"] = suggestions
        return ctx


def _product(r: dict[str, Any]) -> dict[str, Any]:
    return {"sku": r["sku"], "name": r["name"], "price": r["price"], "image_url": r.get("image_url"),
            "url": r.get("url")}


def _with_first(items: list[dict[str, Any]], item: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """``item`` first, then the others without its SKU, at most ``limit``."""
    return ([item] + [it for it in items if it["sku"] != item["sku"]])[:limit]
