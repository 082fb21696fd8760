"""The facts of one customer that every flow reads: profile, consent, suppression, order history.

The customer record is ``streams/core/state.py``'s ``Customer`` (its fields are documented there);
each flow keeps its own fields in it.

A late event settles against state that already holds newer facts, so every rule here compares
event times: a fact older than the newer one of its kind is superseded (``stale:<topic>``);
suppression counts from its earliest occurrence.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

from streams.config import DAY_MS
from streams.core.context import FlowContext
from streams.core.state import Customer, Orders, Suppression, new_customer

__all__ = ["Customer", "new_customer", "dec", "on_arrival", "settle", "cancel_order", "register_spend",
           "customer_segment", "settled_until"]

YEAR_MS = 365 * DAY_MS
SUPPRESSION = {"unsubscribed": "u", "complained": "c", "bounced": "b"}


def dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def on_arrival(c: Customer, topic: str, r: dict[str, Any]) -> None:
    """Contact details are taken at once (transactional mail needs them before settlement)."""
    p = c.p
    if topic == "customers":
        at = r["occurred_at"]
        if p.at is None or at >= p.at:
            p.email = r.get("email") or p.email
            p.fn = r.get("first_name")
            p.loc = r.get("locale") or "en"
            p.tz = r.get("timezone") or "UTC"
            p.at = at
    elif not p.email:
        email = r.get("email")
        if email:
            p.email = email


def settle(ctx: FlowContext, c: Customer, topic: str, r: dict[str, Any]) -> bool:
    """Apply one settled event to the shared facts; False when the flows have nothing to learn from it
    (a superseded consent decision, feedback that is not a suppression)."""
    at = r["occurred_at"]
    kind = r["type"]
    if topic == "customers":
        p = c.p
        if p.opt_at is not None and at < p.opt_at:
            ctx.count("stale:customers")  # a newer consent decision is already known
            return False
        p.opt = bool(r.get("marketing_opt_in"))
        p.opt_at = at
        return True
    if topic == "feedback":
        if kind == "resubscribed":  # "keep me subscribed" after the win-back goodbye
            if c.gb is not None and c.gb <= at:
                c.gb = None
            return False
        key = SUPPRESSION.get(kind)
        if key is None or (kind == "bounced" and r.get("bounce_type") != "permanent"):
            return False
        sup = c.sup
        if sup is None:
            sup = c.sup = Suppression()
        held = getattr(sup, key)
        if held is None or at < held:  # suppression holds from its earliest occurrence
            setattr(sup, key, at)
        return True
    if topic == "orders":
        if kind in ("cancelled", "refunded"):
            cancel_order(c, r["order_id"])
            return True
        return _order_placed(ctx, c, r)
    if topic == "shipments" and kind == "returned":
        cancel_order(c, r["order_id"])
    return True


def _order_placed(ctx: FlowContext, c: Customer, r: dict[str, Any]) -> bool:
    at = r["occurred_at"]
    o = c.ord
    if o is None:
        o = c.ord = Orders()
    if o.last is not None and at < o.last:  # older than the last order known: counts, but
        o.n += 1  # the last order (lapse date, win-back) stays
        o.sp = sorted(o.sp + [(at, r["total"])], key=itemgetter(0))[-20:]
        register_spend(ctx, c)
        return True
    if o.last is not None:
        o.gaps = (o.gaps + [at - o.last])[-5:]
    o.n += 1
    o.last = at if o.last is None else max(at, o.last)
    o.lid = r["event_id"]
    o.cur = r.get("currency") or o.cur
    o.sp = [s for s in o.sp if s[0] > at - YEAR_MS][-20:] + [(at, r["total"])]
    register_spend(ctx, c)
    return True


def cancel_order(c: Customer, order_id: str) -> None:
    x = c.x
    if order_id not in x:
        x.append(order_id)
        del x[:-20]


def register_spend(ctx: FlowContext, c: Customer) -> float:
    """The customer's 365-day spend, (re-)registered in the partition's histogram."""
    spend = float(sum((dec(a) for _, a in c.ord.sp), Decimal(0))) if c.ord is not None else 0.0
    ctx.move_spend(c.hs, spend)
    c.hs = spend
    return spend


def customer_segment(ctx: FlowContext, c: Customer) -> str:
    o = c.ord
    return ctx.segment(0 if o is None else o.n, c.hs or 0.0)


def settled_until(c: Customer) -> int:
    """The latest event time among a customer's shared settled facts (0 if none)."""
    times = [c.p.opt_at or 0]
    sup = c.sup
    if sup is not None:
        times.extend(t for t in (sup.u, sup.b, sup.c) if t is not None)
    if c.ord is not None:
        times.append(c.ord.last or 0)
    return max(times)
