"""Win-back: when a customer lapses (no order for the segment's lapse time), offer (step 1), remind
(+7 d), say goodbye (+14 d, with an explicit opt-out link and a "keep me subscribed" link).

The goodbye is meant: once it has gone out (``gb``) no marketing mail of any flow is sent until the
customer clicks "keep me subscribed" (a ``resubscribed`` feedback) or orders again.

State: ``Customer.win_back``, a ``WinBackState`` (``streams/core/state.py``): ``lapses_at`` when the
customer lapses (set by each order, from the segment as of that order); ``done_for`` the last order a
win-back ran for (one per lapse); ``run`` (a ``WinBackRun``: trigger, lapse time ``a``, next step,
segment, deferral). Any newer order or a suppression ends the run. The goodbye's time ``gb`` is a fact
of the customer every marketing flow's guards read, so it sits on ``Customer``.
"""

from __future__ import annotations

import statistics
from typing import Any

from streams.config import DAY_MS, FlowSettings, WinBackSettings
from streams.core.customer import customer_segment, register_spend
from streams.core.flows.base import Command, Customer, SeriesFlow, own, with_opt_out
from streams.core.ids import stable_code
from streams.core.context import FlowContext
from streams.core.state import Stock, WinBackRun, WinBackState
from streams.core.tables import Table


def new_arrivals(stock: Table[Stock], limit: int, bought: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The products most recently back or new in stock (in stock now, with a name and a link), newest first,
    leaving out what the customer bought; each with its price's currency (a price in another currency than
    the mail's is not shown)."""
    rows = [(row.back, sku, row) for sku, row in stock.rows.items()
            if not row.out and row.back is not None and row.name and row.url and sku not in bought]
    rows.sort(key=lambda t: (-t[0], t[1]))
    return [{"sku": sku, "name": row.name, "price": row.price, "currency": row.cur, "url": row.url,
             "image_url": row.image_url} for _, sku, row in rows[:limit]]


class WinBack(SeriesFlow):
    name = "win_back"
    timer_key = "win_back"  # made by the first order (its lapse date); a win-back starts from it
    priority = 2
    steps = 3
    settle_topics = frozenset({"orders"})
    audiences = ("lapsed", "lapsed_vip")  # lapsed: a win-back is running (until the next order)
    audience_key = "win_back"  # empty: in none of them (not asked)

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self.stock = ctx.table("stock", Stock)  # the inventory table (back in stock keeps it): new arrivals

    @staticmethod
    def settings_of(flows: FlowSettings) -> WinBackSettings:
        return flows.win_back

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        o = c.ord
        if o is None or o.lid != r["event_id"] or o.last is None:
            return  # a cancellation, or an order older than the last one known: the lapse date stays
        st = c.win_back
        if st is None:
            st = c.win_back = WinBackState()
        st.run = None
        st.lapses_at = o.last + self.lapse_ms(c)  # when this customer lapses (segment as of this order)
        if c.gb is not None and c.gb <= o.last:  # a customer who orders after the goodbye is back
            c.gb = None

    def audience_of(self, c: Customer) -> tuple[str, ...]:
        st = c.win_back  # the struct directly, not through ``instance``: asked at every settlement (hot path)
        wb = None if st is None else st.run
        if wb is None:
            return ()
        return self.audiences if wb.seg == "vip" else ("lapsed",)

    def lapse_ms(self, c: Customer) -> int:
        wbs: WinBackSettings = self.options
        seg = customer_segment(self.ctx, c)
        gaps = c.ord.gaps if c.ord is not None else []
        if wbs.median_gap_multiple > 0 and seg in ("vip", "repeat") and gaps:
            return int(wbs.median_gap_multiple * statistics.median(gaps))
        return wbs.lapse_days.get(seg, 90) * DAY_MS

    def next_due(self, c: Customer) -> int | None:
        st = c.win_back
        if st is None:
            return None
        if st.run is not None:
            return self.series_due(st.run)
        lap = st.lapses_at
        if lap is not None and c.ord is not None and st.done_for != c.ord.last:
            return lap
        return None

    def instance(self, c: Customer) -> WinBackRun | None:
        st = c.win_back
        return None if st is None else st.run

    def end(self, c: Customer) -> None:
        st = c.win_back
        if st is not None:
            st.run = None

    def _start(self, cid: str, c: Customer, due: int) -> None:
        o = c.ord
        assert o is not None and o.lid is not None
        st = own(c, "win_back", WinBackState)
        st.done_for = o.last
        register_spend(self.ctx, c)  # 365-day window moves on: re-register before segmenting
        st.run = WinBackRun(trig=o.lid, a=due, seg=customer_segment(self.ctx, c))

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        if self.instance(c) is None:  # the lapse date: the series starts (its first step is due now or later)
            self._start(cid, c, due)
            return []
        return super().fire(cid, c, due)

    def skip(self, cid: str, c: Customer, due: int) -> None:
        if self.instance(c) is None:  # a lapse date in the past starts the series as it would have
            self._start(cid, c, due)
            return
        super().skip(cid, c, due)

    def sent(self, c: Customer, due: int) -> None:
        wb = self.instance(c)
        if wb is not None and wb.next > self.steps:  # the goodbye went out: no more marketing until "keep"
            c.gb = due

    def context(self, cid: str, c: Customer, inst: WinBackRun, step: int, key: str) -> dict[str, Any]:
        wbs: WinBackSettings = self.options
        seg = inst.seg
        ctx: dict[str, Any] = {"segment": seg, "offer_percent": wbs.offers.get(seg, 10)}
        if c.ord is not None and c.ord.cur:
            ctx["currency"] = c.ord.cur  # the customer's currency: prices in another one are not shown
        if step == 1:
            ctx["coupon_code"] = stable_code("BACK", cid, inst.trig)
        elif step == 2 and wbs.new_arrivals:
            bought = frozenset(sku for ref in c.oi.values() for sku in ref.skus)
            arrivals = new_arrivals(self.stock, wbs.new_arrivals, bought)
            if arrivals:
                ctx["new_arrivals"] = arrivals
            else:  # no inventory feed (or nothing new): what this partition's customers buy most
                best = self.ctx.best_sellers(wbs.new_arrivals, c.p.loc or "en", bought)
                if best:
                    ctx["best_sellers"] = best
        return ctx

    def step_command(self, cid: str, c: Customer, inst: Any, step: int, at: int, expires_at: int,
                     variant: str, key: str) -> Command:
        cmd = super().step_command(cid, c, inst, step, at, expires_at, variant, key)
        return with_opt_out(cmd) if step == 3 else cmd
