"""The facts of one customer that every flow reads: profile, consent, suppression, order history.

Customer state is a plain dict serialised to the changelog on every change, so its keys are short:
``p`` profile {email, fn, loc, tz, at, opt, opt_at}; ``sup`` suppression times {u, b, c};
``seen`` event id → time; ``buf`` events waiting to settle; ``ord`` {n, last, lid, sp [[at, amount]],
gaps}; ``hs`` spend registered in the partition histogram; ``x`` cancelled/returned order ids;
``mk`` last marketing send time; ``ptx`` transactional mail waiting for an address. Each flow keeps
its own keys (listed in its module).

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

YEAR_MS = 365 * DAY_MS
SUPPRESSION = {"unsubscribed": "u", "complained": "c", "bounced": "b"}


def new_customer() -> dict[str, Any]:
    return {"p": {}, "seen": {}, "buf": []}


def dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def on_arrival(c: dict[str, Any], topic: str, r: dict[str, Any]) -> None:
    """Contact details are taken at once (transactional mail needs them before settlement)."""
    p = c["p"]
    if topic == "customers":
        if r["occurred_at"] >= p.get("at", -1):
            p.update({"email": r.get("email") or p.get("email"), "fn": r.get("first_name"),
                      "loc": r.get("locale") or "en", "tz": r.get("timezone") or "UTC", "at": r["occurred_at"]})
    elif r.get("email") and not p.get("email"):
        p["email"] = r["email"]


def settle(ctx: FlowContext, c: dict[str, Any], topic: str, r: dict[str, Any]) -> bool:
    """Apply one settled event to the shared facts; False when the flows have nothing to learn from it
    (a superseded consent decision, feedback that is not a suppression)."""
    at = r["occurred_at"]
    kind = r["type"]
    if topic == "customers":
        p = c["p"]
        if at < p.get("opt_at", at):
            ctx.count("stale:customers")  # a newer consent decision is already known
            return False
        p["opt"] = bool(r.get("marketing_opt_in"))
        p["opt_at"] = at
        return True
    if topic == "feedback":
        key = SUPPRESSION.get(kind)
        if key is None or (kind == "bounced" and r.get("bounce_type") != "permanent"):
            return False
        sup = c.setdefault("sup", {})
        if at < sup.get(key, at + 1):  # suppression holds from its earliest occurrence
            sup[key] = at
        return True
    if topic == "orders":
        if kind in ("cancelled", "refunded"):
            cancel_order(c, r["order_id"])
            return True
        return _order_placed(ctx, c, r)
    if topic == "shipments" and kind == "returned":
        cancel_order(c, r["order_id"])
    return True


def _order_placed(ctx: FlowContext, c: dict[str, Any], r: dict[str, Any]) -> bool:
    at = r["occurred_at"]
    o = c.setdefault("ord", {"n": 0, "sp": [], "gaps": []})
    if o.get("last") is not None and at < o["last"]:  # older than the last order known: counts, but
        o["n"] += 1  # the last order (lapse date, win-back) stays
        o["sp"] = sorted(o["sp"] + [[at, r["total"]]], key=itemgetter(0))[-20:]
        register_spend(ctx, c)
        return True
    if o.get("last") is not None:
        o["gaps"] = (o["gaps"] + [at - o["last"]])[-5:]
    o["n"] += 1
    o["last"] = max(at, o.get("last") or at)
    o["lid"] = r["event_id"]
    o["sp"] = [s for s in o["sp"] if s[0] > at - YEAR_MS][-20:] + [[at, r["total"]]]
    register_spend(ctx, c)
    return True


def cancel_order(c: dict[str, Any], order_id: str) -> None:
    x = c.setdefault("x", [])
    if order_id not in x:
        x.append(order_id)
        del x[:-20]


def register_spend(ctx: FlowContext, c: dict[str, Any]) -> float:
    """The customer's 365-day spend, (re-)registered in the partition's histogram."""
    spend = float(sum((dec(a) for _, a in c["ord"]["sp"]), Decimal(0)))
    ctx.move_spend(c.get("hs"), spend)
    c["hs"] = spend
    return spend


def customer_segment(ctx: FlowContext, c: dict[str, Any]) -> str:
    o = c.get("ord") or {"n": 0}
    return ctx.segment(o["n"], c.get("hs") or 0.0)


def settled_until(c: dict[str, Any]) -> int:
    """The latest event time among a customer's shared settled facts (0 if none)."""
    times = [c["p"].get("opt_at", 0), *c.get("sup", {}).values()]
    if "ord" in c:
        times.append(c["ord"].get("last") or 0)
    return max(times)
