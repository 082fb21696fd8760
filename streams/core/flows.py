"""The flows of DESIGN.md as pure functions over one customer's state (a plain dict, see below).

Customer state keys (short: it is serialized to the changelog for every change):
``p`` profile {email, fn, loc, tz, at, opt, opt_at}; ``sup`` suppression times {u, b, c};
``seen`` event id → time; ``buf`` events waiting to settle; ``cart`` abandoned-cart instance
{id, items, cur, url, a (anchor), trig, next, d (deferred due), tot (total, cached)}; ``acl`` last abandoned-cart send;
``ord`` {n, last, lid, sp [[at, amount]], gaps}; ``hs`` spend registered in the partition histogram;
``fb`` order id → {due, trig, d}; ``x`` cancelled/returned order ids; ``sh`` shipment id → statuses;
``wb`` win-back instance {trig, a, next, seg, d}; ``wbd`` last order time a win-back ran for;
``mk`` last marketing send time; ``cx`` when the cart was last cleared.

Arrival (``on_arrival``) emits transactional mail at once. Settlement (``settle_event``) and timers
(``on_timer``) run in event-time order behind the watermark (see engine.py). A late event settles on
arrival against state that already holds newer facts, so every settlement rule compares event times:
a fact older than the newer one of its kind (consent, cart contents, the last order) is superseded
(counted ``stale:<topic>``); an end (order, clear, suppression) ends only what started before it;
suppression counts from its earliest occurrence. For in-order input these comparisons never bite.
"""

from __future__ import annotations

import statistics
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from schemas.serde import canonical_json
from streams.config import DAY_MS
from streams.core.guards import decide
from streams.core.ids import command_id, stable_code
from streams.core.segments import segment
from streams.core.variants import HOLDOUT, assign, experiment_for

if TYPE_CHECKING:
    from streams.core.engine import PartitionEngine

PRIORITY = {"abandoned_cart": 0, "delivery_feedback": 1, "win_back": 2}
YEAR_MS = 365 * DAY_MS


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _ctx(data: dict[str, Any]) -> str:
    return canonical_json(data)


_ITEM_FIELDS = ("sku", "name", "price", "quantity", "image_url", "url")


def _items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Line items as kept in state and contexts: exactly the LineItem fields. Decoded records
    already are (and are never mutated), so they are shared rather than copied."""
    if all(len(it) == 6 and tuple(it) == _ITEM_FIELDS for it in items):
        return items
    return [{"sku": it["sku"], "name": it["name"], "price": it["price"], "quantity": it["quantity"],
             "image_url": it.get("image_url"), "url": it.get("url")} for it in items]


def _total(items: list[dict[str, Any]]) -> str:
    return str(sum((_dec(it["price"]) * it["quantity"] for it in items), Decimal(0)).quantize(Decimal("0.01")))


def make_command(eng: PartitionEngine, cid: str, c: dict[str, Any], flow: str, step: int, trigger: str,
                 category: str, at: int, expires_at: int, context: dict[str, Any], to: str,
                 variant: str = "control") -> dict[str, Any]:
    p = c["p"]
    cmd_id = command_id(flow, step, cid, trigger)
    base = {"first_name": p.get("fn"), "shop_url": eng.settings.flows.shop_url, "locale": p.get("loc") or "en"}
    if category == "marketing":
        base["unsubscribe_url"] = f"{eng.settings.flows.shop_url}/unsubscribe?c={cmd_id}"
    base.update(context)
    eng._count(f"command:{flow}")
    return {"command_id": cmd_id, "customer_id": cid, "to": to, "flow": flow, "step": step,
            "template": f"{flow}/step{step}", "locale": p.get("loc") or "en", "variant": variant,
            "category": category, "send_at": at, "expires_at": expires_at, "context": _ctx(base),
            "trigger_event_id": trigger, "created_at": at}


# ---- arrival: transactional mail, contact details -------------------------------------------

def on_arrival(eng: PartitionEngine, cid: str, c: dict[str, Any], topic: str, r: dict[str, Any]) -> list[dict[str, Any]]:
    at = r["occurred_at"]
    p = c["p"]
    if topic == "customers":
        if at >= p.get("at", -1):
            p.update({"email": r.get("email") or p.get("email"), "fn": r.get("first_name"),
                      "loc": r.get("locale") or "en", "tz": r.get("timezone") or "UTC", "at": at})
        return []
    if r.get("email") and not p.get("email"):
        p["email"] = r["email"]
    if topic == "orders" and r["type"] == "placed":
        skus = [it["sku"] for it in r["items"]]
        suggestions = eng.cross_sell(skus, eng.settings.flows.transactional.cross_sell_max)
        eng.learn_basket(r["items"])
        return _transactional(eng, cid, c, r, "order_confirmation", r["event_id"], {"cross_sell": suggestions})
    if topic == "shipments":
        sh = c.setdefault("sh", {})
        statuses = sh.setdefault(r["shipment_id"], [])
        if r["type"] in statuses:
            return []  # a repeat of the same status sends nothing
        first = not statuses
        statuses.append(r["type"])
        if len(sh) > 10:
            sh.pop(next(iter(sh)))
        flow = "shipping_confirmation" if first else "tracking_update"
        trigger = r["shipment_id"] if first else f"{r['shipment_id']}:{r['type']}"
        return _transactional(eng, cid, c, r, flow, trigger, {})
    return []


def _transactional(eng: PartitionEngine, cid: str, c: dict[str, Any], r: dict[str, Any], flow: str, trigger: str,
                   extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Emit now; without a known address wait (until the event settles) for a profile that has one."""
    to = r.get("email") or c["p"].get("email")
    if not to:
        c.setdefault("ptx", {})[r["event_id"]] = [flow, trigger, extra]
        return []
    at = r["occurred_at"]
    known = max(at, eng.clock_ms - eng.grace_ms)  # a late event's mail expires counting from its arrival
    if flow == "order_confirmation":
        ctx = {"order_id": r["order_id"], "items": _items(r["items"]), "total": r["total"], "currency": r["currency"]}
    else:
        ctx = {"order_id": r["order_id"], "shipment_id": r["shipment_id"], "carrier": r.get("carrier"),
               "tracking_number": r.get("tracking_number"), "tracking_url": r.get("tracking_url"), "status": r["type"]}
    ctx.update(extra)
    return [make_command(eng, cid, c, flow, 1, trigger, "transactional", at,
                         known + eng.settings.flows.transactional.expires_after_ms, ctx, to)]


# ---- settlement: state changes in event-time order ------------------------------------------

def settle_event(eng: PartitionEngine, cid: str, c: dict[str, Any], topic: str, r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    waiting = c.get("ptx", {}).pop(r["event_id"], None)
    if waiting is not None:  # transactional mail that waited for an address
        if not c["ptx"]:
            del c["ptx"]
        if c["p"].get("email"):
            out = _transactional(eng, cid, c, r, *waiting)
        else:
            eng.dropped(cid, waiting[0], 1, "no_email")
    _settle_state(eng, c, topic, r)
    return out


def _settle_state(eng: PartitionEngine, c: dict[str, Any], topic: str, r: dict[str, Any]) -> None:
    at = r["occurred_at"]
    kind = r["type"]
    if topic == "customers":
        p = c["p"]
        if at < p.get("opt_at", at):
            eng._count("stale:customers")  # a newer consent decision is already known
            return
        p["opt"] = bool(r.get("marketing_opt_in"))
        p["opt_at"] = at
    elif topic == "feedback":
        key = _SUPPRESSION.get(kind)
        if key is None or (kind == "bounced" and r.get("bounce_type") != "permanent"):
            return
        sup = c.setdefault("sup", {})
        if at < sup.get(key, at + 1):  # suppression holds from its earliest occurrence
            sup[key] = at
        c.pop("cart", None)  # exits: abandoned cart and win-back stop here
        c.pop("wb", None)
    elif topic == "carts":
        _settle_cart(eng, c, r)
    elif topic == "orders":
        _settle_order(eng, c, r)
    elif topic == "shipments":
        if kind == "delivered" and r["order_id"] not in c.get("x", []):
            fb = c.setdefault("fb", {})
            if r["order_id"] not in fb:
                fb[r["order_id"]] = {"due": at + eng.settings.flows.transactional.feedback_delay_ms,
                                     "trig": r["event_id"], "o": r["order_id"]}
        elif kind == "returned":
            _cancel_order(c, r["order_id"])


_SUPPRESSION = {"unsubscribed": "u", "complained": "c", "bounced": "b"}


def _settle_cart(eng: PartitionEngine, c: dict[str, Any], r: dict[str, Any]) -> None:
    at = r["occurred_at"]
    cart = c.get("cart")
    if cart is not None and at < cart["a"]:
        eng._count("stale:carts")  # newer cart activity is already known
        return
    if r["type"] == "cart_cleared" or not r["items"]:
        c.pop("cart", None)
        if at > c.get("cx", -1):
            c["cx"] = at
        return
    ac = eng.settings.flows.abandoned_cart
    if cart is None and (at < c.get("cx", -1) or at < c.get("ord", {}).get("last", -1)):
        eng._count("stale:carts")  # the cart was cleared or bought after this activity
        return
    if cart is None:  # a new flow instance
        cart = {"trig": r["event_id"], "next": 1}
    elif c.get("acl") is None or at - c["acl"] >= ac.no_respam_ms:  # restart only without a recent step
        cart["trig"], cart["next"] = r["event_id"], 1
    # else: the running chain continues with its remaining steps, timed from this activity
    cart.update({"id": r["cart_id"], "items": _items(r["items"]), "cur": r.get("currency") or "USD",
                 "url": r.get("cart_url") or f"{eng.settings.flows.shop_url}/cart", "a": at})
    cart.pop("d", None)
    cart.pop("tot", None)
    c["cart"] = cart


def _settle_order(eng: PartitionEngine, c: dict[str, Any], r: dict[str, Any]) -> None:
    at = r["occurred_at"]
    if r["type"] in ("cancelled", "refunded"):
        _cancel_order(c, r["order_id"])
        return
    cart = c.get("cart")
    if cart is not None and cart["a"] <= at:
        del c["cart"]  # exit: the customer ordered after the cart activity
    o = c.setdefault("ord", {"n": 0, "sp": [], "gaps": []})
    if o.get("last") is not None and at < o["last"]:  # older than the last order known: counts, but
        o["n"] += 1  # the last order (lapse date, win-back) stays
        o["sp"] = sorted(o["sp"] + [[at, r["total"]]], key=itemgetter(0))[-20:]
        _register_spend(eng, c)
        return
    c.pop("wb", None)
    if o.get("last") is not None:
        o["gaps"] = (o["gaps"] + [at - o["last"]])[-5:]
    o["n"] += 1
    o["last"] = max(at, o.get("last") or at)
    o["lid"] = r["event_id"]
    o["sp"] = [s for s in o["sp"] if s[0] > at - YEAR_MS][-20:] + [[at, r["total"]]]
    _register_spend(eng, c)
    c["lap"] = o["last"] + lapse_ms(eng, c)  # when this customer lapses (segment as of this order)


def _register_spend(eng: PartitionEngine, c: dict[str, Any]) -> float:
    spend = float(sum((_dec(a) for _, a in c["ord"]["sp"]), Decimal(0)))
    eng.spend.move(c.get("hs"), spend)
    c["hs"] = spend
    eng._partition_dirty = True
    return spend


def _cancel_order(c: dict[str, Any], order_id: str) -> None:
    x = c.setdefault("x", [])
    if order_id not in x:
        x.append(order_id)
        del x[:-20]
    c.get("fb", {}).pop(order_id, None)


# ---- timers -----------------------------------------------------------------------------------

def _timers(eng: PartitionEngine, c: dict[str, Any]) -> list[tuple[int, int, str, str]]:
    """(due, priority, flow, key) of every pending timer."""
    out: list[tuple[int, int, str, str]] = []
    cart = c.get("cart")
    delays = eng.cart_delays
    if cart and cart["next"] <= len(delays):
        out.append((cart.get("d") or cart["a"] + delays[cart["next"] - 1], 0, "abandoned_cart", ""))
    for oid, fb in c.get("fb", {}).items():
        out.append((fb.get("d") or fb["due"], 1, "delivery_feedback", oid))
    wb = c.get("wb")
    if wb:
        delays = eng.winback_delays
        if wb["next"] <= len(delays):
            out.append((wb.get("d") or wb["a"] + delays[wb["next"] - 1], 2, "win_back", ""))
    elif "lap" in c and c.get("wbd") != c["ord"]["last"]:
        out.append((c["lap"], 2, "win_back", "start"))
    return out


def next_timer(eng: PartitionEngine, c: dict[str, Any]) -> int | None:
    """The earliest pending timer (same as min of ``_timers`` but without building them: hot path)."""
    best: int | None = None
    cart = c.get("cart")
    if cart is not None:
        n = cart["next"]
        delays = eng.cart_delays
        if n <= len(delays):
            best = cart.get("d") or cart["a"] + delays[n - 1]
    fbs = c.get("fb")
    if fbs:
        for fb in fbs.values():
            t = fb.get("d") or fb["due"]
            if best is None or t < best:
                best = t
    wb = c.get("wb")
    if wb is not None:
        n = wb["next"]
        delays = eng.winback_delays
        if n <= len(delays):
            t = wb.get("d") or wb["a"] + delays[n - 1]
            if best is None or t < best:
                best = t
    elif "lap" in c and c.get("wbd") != c["ord"]["last"]:
        t = c["lap"]
        if best is None or t < best:
            best = t
    return best


def next_due(eng: PartitionEngine, c: dict[str, Any]) -> int | None:
    return earliest(next_timer(eng, c), c["buf"])


def earliest(timer: int | None, buf: list[list[Any]]) -> int | None:
    """When a customer is due next: its earliest pending timer or buffered event."""
    if buf:
        first = min(e[0] for e in buf)
        return first if timer is None or first < timer else timer
    return timer


def skip_past(eng: PartitionEngine, cid: str, c: dict[str, Any], wm: int) -> None:
    """After a late fact: every step it put at or behind the watermark is marketing in the past and
    is skipped (counted ``dropped:<flow>:late_start``); a win-back whose lapse date has passed starts
    (as it would have) and continues with its steps still ahead. Steps already emitted are untouched."""
    while True:
        t = next_timer(eng, c)
        if t is None or t > wm:
            return
        due, _, flow, key = min(_timers(eng, c))
        if flow == "win_back" and key == "start":
            on_timer(eng, cid, c, due)
            continue
        inst = c["fb"][key] if flow == "delivery_feedback" else c["cart" if flow == "abandoned_cart" else "wb"]
        step = inst.get("next", 1)
        inst.pop("d", None)
        _advance(c, flow, inst, key)
        eng.dropped(cid, flow, step, "late_start")


def settled_until(c: dict[str, Any]) -> int:
    """The latest event time among a customer's settled facts (0 if none)."""
    times = [c["p"].get("opt_at", 0), c.get("cx", 0), *c.get("sup", {}).values()]
    if "ord" in c:
        times.append(c["ord"].get("last") or 0)
    if "cart" in c:
        times.append(c["cart"]["a"])
    return max(times)


def lapse_ms(eng: PartitionEngine, c: dict[str, Any]) -> int:
    wbs = eng.settings.flows.win_back
    seg = customer_segment(eng, c)
    gaps = c.get("ord", {}).get("gaps", [])
    if wbs.median_gap_multiple > 0 and seg in ("vip", "repeat") and gaps:
        return int(wbs.median_gap_multiple * statistics.median(gaps))
    return wbs.lapse_days.get(seg, 90) * DAY_MS


def customer_segment(eng: PartitionEngine, c: dict[str, Any]) -> str:
    o = c.get("ord") or {"n": 0}
    return segment(o["n"], c.get("hs") or 0.0, eng.spend.threshold(eng.settings.flows.win_back.vip_percentile))


def on_timer(eng: PartitionEngine, cid: str, c: dict[str, Any], now: int) -> list[dict[str, Any]]:
    due, _, flow, key = min(t for t in _timers(eng, c) if t[0] <= now)
    if flow == "win_back" and key == "start":
        o = c["ord"]
        c["wbd"] = o["last"]
        _register_spend(eng, c)  # 365-day window moves on: re-register before segmenting
        c["wb"] = {"trig": o["lid"], "a": due, "next": 1, "seg": customer_segment(eng, c)}
        return []
    if flow == "abandoned_cart":
        return _fire_marketing(eng, cid, c, "abandoned_cart", c["cart"], due,
                               eng.settings.flows.abandoned_cart.expires_after_ms)
    if flow == "delivery_feedback":
        return _fire_marketing(eng, cid, c, "delivery_feedback", c["fb"][key], due,
                               eng.settings.flows.transactional.expires_after_ms, key)
    return _fire_marketing(eng, cid, c, "win_back", c["wb"], due, eng.settings.flows.win_back.expires_after_ms)


def _original_due(eng: PartitionEngine, flow: str, inst: dict[str, Any]) -> int:
    if flow == "abandoned_cart":
        return inst["a"] + eng.cart_delays[inst["next"] - 1]  # type: ignore[no-any-return]
    if flow == "win_back":
        return inst["a"] + eng.winback_delays[inst["next"] - 1]  # type: ignore[no-any-return]
    return inst["due"]


def _fire_marketing(eng: PartitionEngine, cid: str, c: dict[str, Any], flow: str, inst: dict[str, Any],
                    due: int, expires_after: int, key: str = "") -> list[dict[str, Any]]:
    step = inst.get("next", 1)
    expires_at = _original_due(eng, flow, inst) + expires_after
    decision = decide(c["p"], c.get("sup", {}), c.get("mk"), due, expires_at, eng.settings.flows.guards)
    if decision.action == "defer":
        inst["d"] = decision.at
        return []
    inst.pop("d", None)
    _advance(c, flow, inst, key)
    if decision.action == "drop":
        eng.dropped(cid, flow, step, decision.reason)
        return []
    exp = experiment_for(eng.settings.flows.experiments, flow, step)
    variant = assign(cid, exp) if exp else "control"
    if variant == HOLDOUT:  # the control group: recorded as a command the sink never sends
        eng._count(f"holdout:{flow}")
        return [_marketing_command(eng, cid, c, flow, step, inst, due, expires_at, variant, key)]
    c["mk"] = due
    if flow == "abandoned_cart":
        c["acl"] = due
    return [_marketing_command(eng, cid, c, flow, step, inst, due, expires_at, variant, key)]


def _advance(c: dict[str, Any], flow: str, inst: dict[str, Any], key: str) -> None:
    if flow == "delivery_feedback":
        c["fb"].pop(key, None)
    else:
        inst["next"] = inst.get("next", 1) + 1


def _marketing_command(eng: PartitionEngine, cid: str, c: dict[str, Any], flow: str, step: int,
                       inst: dict[str, Any], at: int, expires_at: int, variant: str, key: str) -> dict[str, Any]:
    shop = eng.settings.flows.shop_url
    to = c["p"]["email"]
    if flow == "abandoned_cart":
        total = inst.get("tot")
        if total is None:  # computed once per cart version (activity replaces the items and drops it)
            total = inst["tot"] = _total(inst["items"])
        ctx: dict[str, Any] = {"cart_id": inst["id"], "cart_url": inst["url"], "items": inst["items"],
                               "cart_total": total, "currency": inst["cur"]}
        if step == 3:
            ac = eng.settings.flows.abandoned_cart
            ctx["incentive"] = ac.incentive
            if ac.incentive == "coupon":
                ctx["coupon_code"] = stable_code("CART", cid, inst["id"])
                ctx["coupon_percent"] = ac.coupon_percent
        return make_command(eng, cid, c, flow, step, inst["trig"], "marketing", at, expires_at, ctx, to, variant)
    if flow == "delivery_feedback":
        tx = eng.settings.flows.transactional
        ctx = {"order_id": key, "feedback_url": f"{shop}/feedback?order={key}",
               "coupon_code": stable_code("THANKS", cid, key), "coupon_percent": tx.feedback_coupon_percent}
        return make_command(eng, cid, c, flow, 1, inst["trig"], "marketing", at, expires_at, ctx, to, variant)
    wbs = eng.settings.flows.win_back
    seg = inst.get("seg", "one_time")
    ctx = {"segment": seg, "offer_percent": wbs.offers.get(seg, 10)}
    if step == 1:
        ctx["coupon_code"] = stable_code("BACK", cid, inst["trig"])
    cmd = make_command(eng, cid, c, flow, step, inst["trig"], "marketing", at, expires_at, ctx, to, variant)
    if step == 3:
        full = orjson.loads(cmd["context"])
        full["opt_out_url"] = full["unsubscribe_url"]
        cmd["context"] = _ctx(full)
    return cmd
