"""SES event publishing → EmailFeedback records (pure).

Accepts what SES delivers through SNS (a ``Notification`` envelope whose ``Message`` is the JSON event)
or through Firehose / a file (the JSON event itself), for both event publishing (``eventType``) and
identity notifications (``notificationType``). The sink tags every send with ``command_id`` and
``customer_id``; those tags join the event back to the command and key the feedback record.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from schemas import serde

TYPES = {"Delivery": "delivered", "Bounce": "bounced", "Complaint": "complained", "Open": "opened",
         "Click": "clicked", "Subscription": "unsubscribed"}
IGNORED = {"Send", "Reject", "DeliveryDelay", "RenderingFailure", "AmazonSnsSubscriptionSucceeded"}


class BridgeError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _ms(ts: str | None) -> int:
    if not ts:
        raise BridgeError("malformed", "event has no timestamp")
    try:
        return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError as exc:
        raise BridgeError("malformed", f"bad timestamp {ts!r}") from exc


def _text(value: Any) -> str | None:
    """A string SES reported (user agent, address), cut to 512 characters; anything else is left out."""
    return value[:512] if isinstance(value, str) and value else None


def _tag(mail: dict[str, Any], name: str) -> str | None:
    values = (mail.get("tags") or {}).get(name)
    return values[0] if isinstance(values, list) and values else None


def unwrap(payload: Any) -> dict[str, Any] | None:
    """The SES event inside an SNS envelope (or the event itself); None for SNS control messages."""
    if not isinstance(payload, dict):
        raise BridgeError("malformed", "not a JSON object")
    if payload.get("Type") in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return None
    if payload.get("Type") == "Notification":
        try:
            payload = json.loads(payload["Message"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BridgeError("malformed", f"SNS Message is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BridgeError("malformed", "SES event is not a JSON object")
    return payload


def to_feedback(payload: Any) -> dict[str, Any] | None:
    """One EmailFeedback record, or None for events that carry no feedback (Send, SNS control…)."""
    event = unwrap(payload)
    if event is None:
        return None
    kind = event.get("eventType") or event.get("notificationType")
    if kind in IGNORED:
        return None
    if kind not in TYPES:
        raise BridgeError("malformed", f"unknown SES event type {kind!r}")
    mail = event.get("mail")
    if not isinstance(mail, dict) or not mail.get("messageId"):
        raise BridgeError("malformed", "event has no mail.messageId")
    customer_id = _tag(mail, "customer_id")
    if not customer_id:
        raise BridgeError("untagged", f"message {mail['messageId']} has no customer_id tag (not sent by shopmail?)")
    detail = event.get(kind[0].lower() + kind[1:]) or {}
    at = _ms(detail.get("timestamp") or mail.get("timestamp"))
    record: dict[str, Any] = {
        "event_id": hashlib.sha256(f"{mail['messageId']}|{kind}|{at}|{detail.get('link', '')}".encode()).hexdigest()[:32],
        "customer_id": customer_id, "occurred_at": at, "type": TYPES[kind],
        "command_id": _tag(mail, "command_id"), "message_id": mail["messageId"], "link": detail.get("link"),
        "bounce_type": None, "user_agent": _text(detail.get("userAgent")), "ip_address": _text(detail.get("ipAddress"))}
    if kind == "Bounce":
        record["bounce_type"] = "permanent" if detail.get("bounceType") == "Permanent" else "transient"
    try:
        return serde.from_json("EmailFeedback", record)
    except serde.SerdeError as exc:
        raise BridgeError("malformed", exc.detail) from exc
