"""Seeded synthetic shop traffic: realistic sessions for any number of customers and days.

Per customer (all draws from ``random.Random(seed, customer index)``, so any slice is reproducible):
- a profile (``shop.customers``): email, first name, locale (en/de/fr), IANA time zone, ~80 % opt-in;
- shopping sessions whose gaps follow a per-customer lognormal (median 20–120 days; some customers
  lapse for > 90 days, so win-back triggers); each session adds 1–3 catalogue items to a cart;
- ~70 % of carts are abandoned (a few cleared), ~30 % end in an order; ~3 % of orders are cancelled;
- each order ships: label_created → in_transit → out_for_delivery → delivered (4 % exception, 3 %
  returned after delivery);
- optional email feedback (opens/clicks) after sessions;
- optional product views (``shop.product_views``, off by default): a few views before each cart, and
  browse-only visits between sessions. They are drawn from their own ``random.Random``, so turning
  them on only adds events: every other event is the same as without them.

Events are valid per ``schemas/`` (JSON form), ``event_id`` deterministic, ``occurred_at`` epoch ms,
and the whole stream is sorted by ``occurred_at`` (``heapq.merge`` over lazy per-customer streams, so
memory stays flat). ``jitter_ms`` shuffles events within a bounded window (out-of-order tests).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from streams.config import DAY_MS, HOUR_MS, MINUTE_MS

CATALOG = [(f"SKU-{i:03d}", name, price) for i, (name, price) in enumerate([
    ("Enamel camp mug", "14.00"), ("Organic cotton tee", "29.00"), ("Merino hiking socks", "18.50"),
    ("Waxed canvas tote", "59.00"), ("Five-panel cap", "24.00"), ("Insulated bottle 750 ml", "32.00"),
    ("Wool beanie", "27.00"), ("Trail running shorts", "45.00"), ("Down vest", "129.00"),
    ("Rain shell", "189.00"), ("Camp stool", "39.00"), ("Headlamp", "35.00"), ("Dry bag 20 l", "22.00"),
    ("Titanium spork", "12.00"), ("Fleece pullover", "79.00"), ("Hiking boots", "169.00")])]
LOCALES = ["en", "en", "en", "de", "fr"]
ZONES = ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Tokyo"]


@dataclass(frozen=True)
class TrafficSpec:
    customers: int = 1000
    days: int = 30
    seed: int = 1
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    abandonment: float = 0.70
    opt_in: float = 0.80
    feedback: bool = False
    product_views: bool = False  # views before carts and browse-only visits (a separate random stream)
    jitter_ms: int = 0
    shop_url: str = "https://shop.example.com"


Event = tuple[int, str, dict[str, Any]]  # (occurred_at, logical topic, record in JSON form)


def _items(rnd: random.Random, shop: str) -> list[dict[str, Any]]:
    out = []
    for sku, name, price in rnd.sample(CATALOG, rnd.randint(1, 3)):
        out.append({"sku": sku, "name": name, "price": price, "quantity": rnd.randint(1, 2),
                    "image_url": f"{shop}/img/{sku}.jpg", "url": f"{shop}/p/{sku}"})
    return out


def _view(cid: str, email: str, at: int, event_id: str, product: tuple[str, str, str], shop: str) -> dict[str, Any]:
    sku, name, price = product
    return {"event_id": event_id, "customer_id": cid, "occurred_at": at, "type": "viewed", "sku": sku, "name": name,
            "price": price, "currency": "EUR", "image_url": f"{shop}/img/{sku}.jpg", "url": f"{shop}/p/{sku}",
            "email": email}


class _Views:
    """One customer's product views, from a random stream of their own (the other events never change)."""

    def __init__(self, spec: TrafficSpec, index: int, cid: str, email: str) -> None:
        self.rnd = random.Random(f"{spec.seed}:{index}:views")
        self.cid, self.email, self.shop = cid, email, spec.shop_url
        self.n = 0

    def burst(self, start: int, count: int, first: list[str] | None = None) -> list[tuple[int, dict[str, Any]]]:
        """``count`` views from ``start`` on, minutes apart (``first``: SKUs viewed first)."""
        rnd = self.rnd
        products = [p for p in CATALOG if p[0] in (first or [])] + rnd.sample(CATALOG, count)
        out = []
        at = start
        for product in products[:count]:
            self.n += 1
            out.append((at, _view(self.cid, self.email, at, f"{self.cid}-v-{self.n}", product, self.shop)))
            at += rnd.randrange(MINUTE_MS, 5 * MINUTE_MS)
        return out


def customer_events(spec: TrafficSpec, index: int) -> Iterator[Event]:
    """One customer's events in time order."""
    rnd = random.Random(spec.seed * 1_000_003 + index)
    cid = f"c{index:07d}"
    email = f"{cid}@example.com"
    shop = spec.shop_url
    end = spec.start_ms + spec.days * DAY_MS
    t = spec.start_ms + rnd.randrange(0, DAY_MS)
    n = 0

    def eid(kind: str) -> str:
        nonlocal n
        n += 1
        return f"{cid}-{kind}-{n}"

    yield t, "customers", {"event_id": eid("p"), "customer_id": cid, "occurred_at": t, "type": "upserted",
                           "email": email, "first_name": f"Customer{index}", "locale": rnd.choice(LOCALES),
                           "timezone": rnd.choice(ZONES), "marketing_opt_in": rnd.random() < spec.opt_in}
    median_gap_days = rnd.choice([20, 35, 60, 120])
    sigma = 0.6
    pending: list[tuple[int, int, str, dict[str, Any]]] = []  # future events (shipments…), in time order
    order_no = 0
    views = _Views(spec, index, cid, email) if spec.product_views else None
    while True:
        before = t
        t += int(DAY_MS * median_gap_days * math.exp(rnd.gauss(0, sigma))) + rnd.randrange(0, HOUR_MS)
        items = _items(rnd, shop) if t < end else []
        if views is not None:  # a browse-only visit half-way, then the session's views before its cart
            vr = views.rnd
            seen = views.burst(before + (t - before) // 2, vr.randint(1, 3)) if vr.random() < 0.5 else []
            seen += views.burst(t - 15 * MINUTE_MS, vr.randint(1, 3), [it["sku"] for it in items])
            for at_v, rec_v in seen:
                if at_v >= end:
                    break
                while pending and pending[0][0] <= at_v:
                    at_, _, topic_, rec_ = heapq.heappop(pending)
                    yield at_, topic_, rec_
                yield at_v, "product_views", rec_v
        while pending and pending[0][0] <= t:
            at_, _, topic_, rec_ = heapq.heappop(pending)
            yield at_, topic_, rec_
        if t >= end:
            break
        cart_id = f"{cid}-k{n}"
        cart = {"event_id": eid("c"), "customer_id": cid, "occurred_at": t, "type": "item_added", "cart_id": cart_id,
                "email": email, "items": items, "currency": "EUR", "cart_url": f"{shop}/cart/{cart_id}"}
        yield t, "carts", cart
        t2 = t + rnd.randrange(MINUTE_MS, 20 * MINUTE_MS)
        if rnd.random() < 0.3 and t2 < end:
            more = items + _items(rnd, shop)[:1]
            yield t2, "carts", dict(cart, event_id=eid("c"), occurred_at=t2, items=more)
            items = more
        if rnd.random() >= spec.abandonment:
            t3 = t2 + rnd.randrange(MINUTE_MS, 30 * MINUTE_MS)
            if t3 >= end:
                continue
            order_no += 1
            oid = f"{cid}-o{order_no}"
            total = sum(float(it["price"]) * it["quantity"] for it in items)
            yield t3, "orders", {"event_id": eid("o"), "customer_id": cid, "occurred_at": t3, "type": "placed",
                                 "order_id": oid, "cart_id": cart_id, "email": email, "items": items,
                                 "total": f"{total:.2f}", "currency": "EUR"}
            if rnd.random() < 0.03:
                heapq.heappush(pending, (t3 + HOUR_MS, n, "orders", {
                    "event_id": eid("x"), "customer_id": cid, "occurred_at": t3 + HOUR_MS, "type": "cancelled",
                    "order_id": oid, "email": email, "items": [], "total": "0", "currency": "EUR"}))
                continue
            at = t3 + rnd.randrange(6 * HOUR_MS, DAY_MS)
            sid = f"{oid}-s"
            track = f"JD{index:07d}{order_no:03d}"
            statuses = ["label_created", "in_transit", "out_for_delivery",
                        "exception" if rnd.random() < 0.04 else "delivered"]
            if statuses[-1] == "delivered" and rnd.random() < 0.03:
                statuses.append("returned")
            for status in statuses:
                heapq.heappush(pending, (at, n, "shipments", {
                    "event_id": eid("s"), "customer_id": cid, "occurred_at": at, "type": status, "shipment_id": sid,
                    "order_id": oid, "carrier": rnd.choice(["DHL", "UPS", "DPD"]), "tracking_number": track,
                    "tracking_url": f"https://track.example.com/{track}"}))
                at += rnd.randrange(8 * HOUR_MS, 2 * DAY_MS)
        elif rnd.random() < 0.1:
            t3 = t2 + rnd.randrange(MINUTE_MS, HOUR_MS)
            if t3 < end:
                yield t3, "carts", dict(cart, event_id=eid("c"), occurred_at=t3, type="cart_cleared", items=[])
        if spec.feedback and rnd.random() < 0.3:
            tf = t + 2 * HOUR_MS + rnd.randrange(0, DAY_MS)
            if tf < end:
                heapq.heappush(pending, (tf, n, "feedback", {
                    "event_id": eid("f"), "customer_id": cid, "occurred_at": tf,
                    "type": "clicked" if rnd.random() < 0.3 else "opened"}))
    while pending:
        at_, _, topic_, rec_ = heapq.heappop(pending)
        if at_ < end:
            yield at_, topic_, rec_


def generate(spec: TrafficSpec) -> Iterator[tuple[str, dict[str, Any]]]:
    """All customers' events, globally sorted by ``occurred_at`` (ties broken by customer index)."""
    def keyed(i: int) -> Iterator[tuple[int, int, int, str, dict[str, Any]]]:
        for k, (at, topic, rec) in enumerate(customer_events(spec, i)):
            yield at, i, k, topic, rec

    merged = heapq.merge(*(keyed(i) for i in range(spec.customers)))
    if spec.jitter_ms <= 0:
        for _, _, _, topic, rec in merged:
            yield topic, rec
        return
    rnd = random.Random(spec.seed)
    window: list[tuple[int, int, str, dict[str, Any]]] = []
    seq = 0
    for at, _, _, topic, rec in merged:
        heapq.heappush(window, (at + rnd.randrange(0, spec.jitter_ms), seq, topic, rec))
        seq += 1
        while window and window[0][0] <= at:
            _, _, tp, r = heapq.heappop(window)
            yield tp, r
    while window:
        _, _, tp, r = heapq.heappop(window)
        yield tp, r


def write_jsonl(spec: TrafficSpec, out: TextIO, topic_name: Any) -> int:
    n = 0
    for topic, rec in generate(spec):
        out.write(orjson.dumps({"topic": topic_name(topic), "value": rec}).decode() + "\n")
        n += 1
    return n


# ---- live: a little shop traffic stamped with the wall clock (the demo) --------------------------

@dataclass
class LiveTraffic:
    """What ``live_traffic`` produced (the demo waits for the mail it implies)."""

    customers: int
    orders: int
    abandoned: int
    shipments: int
    expected_transactional: int
    browsing: int = 0  # buyers who then viewed products without adding them (a browse-abandonment mail each, if opted in)


def live_traffic(customers: int, seed: int = 7, shop_url: str = "https://shop.example.com",
                 now_ms: int | None = None) -> tuple[list[tuple[str, dict[str, Any]]], LiveTraffic]:
    """A little shop traffic stamped with the wall clock: profiles, carts, orders, shipments, and product
    views by some buyers after their order (from a random stream of their own: the rest is unchanged)."""
    rnd = random.Random(seed)
    view_rnd = random.Random(f"{seed}:views")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[tuple[str, dict[str, Any]]] = []
    orders = abandoned = shipments = transactional = browsing = 0
    for i in range(customers):
        cid = f"demo-{i:03d}"
        email = f"{cid}@example.com"
        t = now + i
        out.append(("customers", {"event_id": f"{cid}-profile", "customer_id": cid, "occurred_at": t,
                                  "type": "upserted", "email": email, "first_name": f"Customer {i}",
                                  "locale": rnd.choice(["en", "en", "de"]), "timezone": "UTC",
                                  "marketing_opt_in": rnd.random() < 0.9}))
        items = _items(rnd, shop_url)
        cart = {"event_id": f"{cid}-cart", "customer_id": cid, "occurred_at": t + 10, "type": "item_added",
                "cart_id": f"{cid}-cart", "email": email, "items": items, "currency": "EUR",
                "cart_url": f"{shop_url}/cart/{cid}"}
        out.append(("carts", cart))
        if rnd.random() < 0.3:  # buys: order confirmation + shipping
            orders += 1
            total = sum(float(it["price"]) * it["quantity"] for it in items)
            oid = f"{cid}-o1"
            out.append(("orders", {"event_id": f"{oid}-placed", "customer_id": cid, "occurred_at": t + 20,
                                   "type": "placed", "order_id": oid, "cart_id": cart["cart_id"], "email": email,
                                   "items": items, "total": f"{total:.2f}", "currency": "EUR"}))
            transactional += 1
            shipments += 1
            for k, status in enumerate(["label_created", "in_transit", "out_for_delivery"]):
                out.append(("shipments", {"event_id": f"{oid}-s-{status}", "customer_id": cid,
                                          "occurred_at": t + 30 + k, "type": status, "shipment_id": f"{oid}-s",
                                          "order_id": oid, "carrier": "DHL", "tracking_number": f"JD{i:08d}",
                                          "tracking_url": f"https://track.example.com/JD{i:08d}"}))
            transactional += 3  # shipping confirmation + 2 status changes after the first
            if view_rnd.random() < 0.5:  # looks around after buying, adds nothing: browse abandonment
                browsing += 1
                for k, product in enumerate(view_rnd.sample(CATALOG, view_rnd.randint(1, 3))):
                    out.append(("product_views", _view(cid, email, t + 40 + k, f"{cid}-view-{k}", product, shop_url)))
        else:
            abandoned += 1
    return out, LiveTraffic(customers, orders, abandoned, shipments, transactional, browsing)
