"""The per-order tracking view: pure update functions and the thread-safe store the pages read.

A view is a JSON object (key = order id on the compacted view topic)::

    {"v": 1, "rev": n, "order_id", "customer_id", "placed_at", "order_status": placed|cancelled|refunded,
     "items": [LineItem…], "total", "currency", "locale", "cross_sell": [...], "coupon": {code, percent},
     "shipments": {shipment_id: {"carrier", "tracking_number", "tracking_url",
                                 "events": [{"status", "at", "event_id"}…]}},
     "oe": [order event ids]}

``rev`` counts applied changes: the store keeps the highest revision it has seen of each order, so a
replayed older write never replaces a newer one. Every update is idempotent (event ids are kept), so
re-reading input after a crash changes nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

VERSION = 1
STATUS_ORDER = ("label_created", "in_transit", "out_for_delivery", "exception", "delivered", "returned")
_MAX_ORDER_EVENTS = 20
_MAX_SHIPMENT_EVENTS = 100


def new_view(order_id: str, customer_id: str) -> dict[str, Any]:
    return {"v": VERSION, "rev": 0, "order_id": order_id, "customer_id": customer_id, "items": [],
            "shipments": {}, "oe": []}


def apply_order(view: dict[str, Any], r: dict[str, Any]) -> bool:
    """An OrderEvent; True when the view changed."""
    if r["event_id"] in view["oe"]:
        return False
    view["oe"] = (view["oe"] + [r["event_id"]])[-_MAX_ORDER_EVENTS:]
    if r["type"] == "placed":
        view.update({"placed_at": r["occurred_at"], "items": r.get("items") or [], "total": r.get("total"),
                     "currency": r.get("currency")})
        view.setdefault("order_status", "placed")
    else:  # cancelled / refunded end the order whatever their arrival order
        view["order_status"] = r["type"]
    return _bump(view)


def apply_shipment(view: dict[str, Any], r: dict[str, Any]) -> bool:
    """A ShipmentEvent; True when the view changed. The timeline is kept in event-time order."""
    sh = view["shipments"].setdefault(r["shipment_id"], {"events": []})
    if any(e["event_id"] == r["event_id"] for e in sh["events"]):
        return False
    for f in ("carrier", "tracking_number", "tracking_url"):
        if r.get(f):
            sh[f] = r[f]
    sh["events"].append({"status": r["type"], "at": r["occurred_at"], "event_id": r["event_id"]})
    sh["events"].sort(key=lambda e: (e["at"], STATUS_ORDER.index(e["status"]) if e["status"] in STATUS_ORDER else 0))
    del sh["events"][:-_MAX_SHIPMENT_EVENTS]
    return _bump(view)


def apply_command(view: dict[str, Any], cmd: dict[str, Any], context: dict[str, Any]) -> bool:
    """What the engine decided for this order: the order confirmation's cross-sell and locale, the
    delivery-feedback mail's next-purchase coupon. Holdout commands (never sent) are ignored, so the
    page gives a control-group customer nothing the experiment withholds."""
    if cmd.get("variant") == "holdout":
        return False
    changed = False
    if cmd["flow"] == "order_confirmation":
        if context.get("cross_sell") and view.get("cross_sell") != context["cross_sell"]:
            view["cross_sell"] = context["cross_sell"]
            changed = True
        if cmd.get("locale") and view.get("locale") != cmd["locale"]:
            view["locale"] = cmd["locale"]
            changed = True
    elif cmd["flow"] == "delivery_feedback" and context.get("coupon_code"):
        coupon = {"code": context["coupon_code"], "percent": context.get("coupon_percent")}
        if view.get("coupon") != coupon:
            view["coupon"] = coupon
            changed = True
    return _bump(view) if changed else False


def _bump(view: dict[str, Any]) -> bool:
    view["rev"] = view.get("rev", 0) + 1
    return True


def latest_status(view: dict[str, Any]) -> str | None:
    """The newest shipment status of the order (by event time), or None before the first one."""
    events = [e for sh in view["shipments"].values() for e in sh["events"]]
    return max(events, key=lambda e: e["at"])["status"] if events else None


def encode(view: dict[str, Any]) -> bytes:
    return orjson.dumps(view)


def decode(data: bytes) -> dict[str, Any]:
    view = orjson.loads(data)
    if not isinstance(view, dict) or view.get("v") != VERSION or "order_id" not in view:
        raise ValueError(f"not a version-{VERSION} tracking view")
    return view


class ViewStore:
    """Order id → view, plus tracking number → (order id, shipment id), shared by the HTTP threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: dict[str, dict[str, Any]] = {}
        self._by_tracking: dict[str, tuple[str, str]] = {}
        self.ready = threading.Event()

    def put(self, view: dict[str, Any]) -> bool:
        """Keep ``view`` unless a newer revision of the same order is already here."""
        with self._lock:
            have = self._views.get(view["order_id"])
            if have is not None and have.get("rev", 0) > view.get("rev", 0):
                return False
            self._views[view["order_id"]] = view
            for sid, sh in view["shipments"].items():
                if sh.get("tracking_number"):
                    self._by_tracking[sh["tracking_number"]] = (view["order_id"], sid)
            return True

    def delete(self, order_id: str) -> None:
        with self._lock:
            view = self._views.pop(order_id, None)
            for sid, sh in (view or {}).get("shipments", {}).items():
                tn = sh.get("tracking_number")
                if tn and self._by_tracking.get(tn) == (order_id, sid):
                    del self._by_tracking[tn]

    def get(self, order_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._views.get(order_id)

    def by_tracking_number(self, tracking_number: str) -> tuple[dict[str, Any], str] | None:
        """(view, shipment id) of the shipment with this tracking number, or None."""
        with self._lock:
            hit = self._by_tracking.get(tracking_number)
            if hit is None:
                return None
            view = self._views.get(hit[0])
            return (view, hit[1]) if view is not None else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._views)
