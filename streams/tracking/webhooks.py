"""Carrier / aggregator webhook payloads → the fields of a ShipmentEvent (pure; docs/tracking.md).

Shapes, chosen by the provider name in the URL (``POST /webhooks/<provider>``):

- ``aftership`` — AfterShip's tracking-update webhook::

    {"event": "tracking_update", "event_id": "…", "ts": 1700000000,
     "msg": {"tracking_number": "…", "slug": "dhl", "tag": "InTransit", "subtag_message": "…",
             "courier_tracking_link": "https://…", "updated_at": "2026-05-01T10:00:00+00:00",
             "checkpoints": [{"checkpoint_time": "…", "tag": "…"}, …]}}

  signed with ``aftership-hmac-sha256: base64(HMAC-SHA256(secret, raw body))``.
- any other provider — the generic shape::

    {"event_id": "…", "tracking_number": "…", "carrier": "dhl" (or "slug"),
     "status": "in_transit" (or "tag"), "occurred_at": "2026-05-01T10:00:00Z" | epoch ms,
     "tracking_url": "https://…" (optional)}

  signed with ``X-Shopmail-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.

Bounds: the body is parsed by orjson (no NaN or Infinity, at most 1024 levels of nesting, integers
within 64 bits), and an event time must lie between 2000-01-01 and one day after now
(:data:`EARLIEST_MS`, :data:`MAX_AHEAD_MS`); anything else is a :class:`WebhookError` (400 + dead letter).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: no carrier event is older
MAX_AHEAD_MS = 24 * 3600 * 1000  # clocks differ, but no carrier reports an event a day ahead
OUR_STATUSES = ("label_created", "in_transit", "out_for_delivery", "delivered", "exception", "returned")

AFTERSHIP_TAGS = {
    "Pending": "label_created", "InfoReceived": "label_created", "InTransit": "in_transit",
    "OutForDelivery": "out_for_delivery", "AvailableForPickup": "out_for_delivery",
    "AttemptFail": "exception", "Exception": "exception", "Expired": "exception", "Delivered": "delivered",
}
GENERIC_STATUSES = {s: s for s in OUR_STATUSES} | {
    "pre_transit": "label_created", "info_received": "label_created", "pending": "label_created",
    "transit": "in_transit", "available_for_pickup": "out_for_delivery", "attempt_fail": "exception",
    "failed_attempt": "exception", "failure": "exception", "expired": "exception",
    "return_to_sender": "returned", "returned_to_sender": "returned",
}
SIGNATURE_HEADERS = {"aftership": "aftership-hmac-sha256"}
GENERIC_SIGNATURE_HEADER = "x-shopmail-signature"


class WebhookError(ValueError):
    """A body that cannot be turned into a shipment event; ``reason`` is the dead-letter code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CarrierUpdate:
    provider_event_id: str
    tracking_number: str
    status: str  # one of OUR_STATUSES
    occurred_at: int  # epoch ms UTC
    carrier: str | None = None
    tracking_url: str | None = None


def signature_header(provider: str) -> str:
    return SIGNATURE_HEADERS.get(provider, GENERIC_SIGNATURE_HEADER)


def sign(provider: str, key: bytes, body: bytes) -> str:
    """The header value a provider sends for ``body`` (used by tests and by senders we control)."""
    mac = hmac.new(key, body, hashlib.sha256).digest()
    if provider == "aftership":
        return base64.b64encode(mac).decode()
    return "sha256=" + mac.hex()


def signature_ok(provider: str, key: bytes, body: bytes, header_value: str | None) -> bool:
    """Constant-time check of the provider's signature header over the raw body."""
    if not key or not header_value:
        return False
    expected = sign(provider, key, body)
    if provider != "aftership":  # hex: accept either case
        header_value = header_value.strip().lower()
    return hmac.compare_digest(expected.encode(), header_value.strip().encode())


def parse(provider: str, body: bytes, max_id_chars: int = 256, now_ms: int | None = None) -> CarrierUpdate:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WebhookError("malformed", f"body is not JSON (or nests deeper than 1024, or has NaN): {exc}") from exc
    if not isinstance(data, dict):
        raise WebhookError("malformed", "body is not a JSON object")
    update = _aftership(data) if provider == "aftership" else _generic(data)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if not EARLIEST_MS <= update.occurred_at <= now + MAX_AHEAD_MS:
        raise WebhookError("invalid_time", f"event time {update.occurred_at} ms is outside 2000-01-01 … now + 1 day")
    for name in ("provider_event_id", "tracking_number"):
        if len(getattr(update, name)) > max_id_chars:
            raise WebhookError("invalid", f"{name} longer than {max_id_chars} characters")
    if update.tracking_url and not update.tracking_url.lower().startswith(("https://", "http://")):
        update = CarrierUpdate(**{**update.__dict__, "tracking_url": None})
    return update


def _aftership(data: Mapping[str, Any]) -> CarrierUpdate:
    msg = data.get("msg")
    if not isinstance(msg, dict):
        raise WebhookError("malformed", "aftership: 'msg' object missing")
    tag = _text(msg, "tag", "aftership: msg.tag")
    status = AFTERSHIP_TAGS.get(tag)
    if status is None:
        raise WebhookError("unknown_status", f"aftership: tag {tag!r} is not one of {sorted(AFTERSHIP_TAGS)}")
    if tag == "Exception" and "return" in str(msg.get("subtag_message") or "").lower():
        status = "returned"
    checkpoints = [c for c in msg.get("checkpoints") or [] if isinstance(c, dict) and c.get("checkpoint_time")]
    when: Any = checkpoints[-1]["checkpoint_time"] if checkpoints else msg.get("updated_at") or data.get("ts")
    if when is None:
        raise WebhookError("malformed", "aftership: no time (checkpoints, msg.updated_at or ts)")
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        when = _number(when, "aftership ts") * 1000  # AfterShip's ts is epoch seconds
    return CarrierUpdate(provider_event_id=_text(data, "event_id", "aftership: event_id"),
                         tracking_number=_text(msg, "tracking_number", "aftership: msg.tracking_number"),
                         status=status, occurred_at=_time(when, "aftership time"),
                         carrier=_opt_text(msg.get("slug")), tracking_url=_opt_text(msg.get("courier_tracking_link")))


def _generic(data: Mapping[str, Any]) -> CarrierUpdate:
    raw = data.get("status", data.get("tag"))
    if not isinstance(raw, str) or not raw.strip():
        raise WebhookError("malformed", "'status' (or 'tag') missing or not a string")
    status = GENERIC_STATUSES.get(raw.strip().lower().replace("-", "_").replace(" ", "_"))
    if status is None:
        raise WebhookError("unknown_status", f"status {raw!r} is not one of {sorted(GENERIC_STATUSES)}")
    if "occurred_at" not in data:
        raise WebhookError("malformed", "'occurred_at' missing")
    return CarrierUpdate(provider_event_id=_text(data, "event_id", "event_id"),
                         tracking_number=_text(data, "tracking_number", "tracking_number"),
                         status=status, occurred_at=_time(data["occurred_at"], "occurred_at"),
                         carrier=_opt_text(data.get("carrier", data.get("slug"))),
                         tracking_url=_opt_text(data.get("tracking_url")))


def _text(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise WebhookError("malformed", f"{what} missing or empty")
    return value.strip()


def _opt_text(value: Any) -> str | None:
    return value.strip()[:2048] if isinstance(value, str) and value.strip() else None


def _time(value: Any, what: str) -> int:
    """Epoch milliseconds (int) or ISO 8601; a time without offset is taken as UTC."""
    if isinstance(value, bool):
        raise WebhookError("malformed", f"{what}: {value!r} is not a time")
    if isinstance(value, (int, float)):
        ms = _number(value, what)
        if ms < 100_000_000_000:  # before 1973 in ms: seconds were sent
            raise WebhookError("malformed", f"{what}: {value!r} is not epoch milliseconds")
        return ms
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip()[:64].replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return int(dt.timestamp() * 1000)
        except (ValueError, OverflowError) as exc:
            raise WebhookError("malformed", f"{what}: {value[:64]!r} is not ISO 8601") from exc
    raise WebhookError("malformed", f"{what}: {str(value)[:64]!r} is not a time")


def _number(value: float, what: str) -> int:
    """A finite JSON number as an int, within ±2^62 (far beyond any time; no overflow later)."""
    if value != value or value in (float("inf"), float("-inf")) or abs(value) > 2 ** 62:
        raise WebhookError("invalid_time", f"{what}: {str(value)[:64]} is not a usable time")
    return int(value)


__all__ = ["CarrierUpdate", "WebhookError", "parse", "sign", "signature_header", "signature_ok",
           "OUR_STATUSES"]
