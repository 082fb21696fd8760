"""Coupons the shop can honour: every emailed code is published as a ``CouponIssued`` record.

A command's context carries the code the engine made for it (``coupon_code``, unique per recipient
and step) and its value: ``coupon_percent`` (or ``offer_percent`` for win-back) for a percentage off, or
``incentive = "free_shipping"`` for a free-shipping code (``kind`` tells the shop which). A code is valid
until the end of the recipient's day (their ``timezone``) ``coupons.valid_days`` after the command's
``created_at`` — event time, so a replay gives the same expiry — and the email shows that date and time
in the recipient's time zone and calendar. The sink publishes the record in the same transaction as the
``sent`` outcome, and a command gets one final outcome (the ledger), so each emailed code is published
once; the topic is compacted by code, so a repeat would only overwrite it with the same record.
Suppressed, failed or holdout commands issue nothing: a code nobody received is never valid.

The email's button applies the code (``coupons.apply_url``, :func:`sinks.links.coupon_apply_url`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sinks.links import coupon_apply_url, utm_params
from streams.config import DAY_MS, CouponSettings, Settings

_VALUE_FIELDS = ("coupon_percent", "offer_percent")


def context_of(command: dict[str, Any]) -> dict[str, Any]:
    try:
        ctx = json.loads(command.get("context") or "{}")
    except ValueError:
        return {}
    return ctx if isinstance(ctx, dict) else {}


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name)) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def expires_at(settings: CouponSettings, command: dict[str, Any], ctx: dict[str, Any] | None = None) -> int:
    """The last millisecond of the recipient's day ``valid_days`` after ``created_at`` (epoch ms)."""
    ctx = context_of(command) if ctx is None else ctx
    zone = _zone(ctx.get("timezone"))
    last_day = datetime.fromtimestamp((int(command["created_at"]) + settings.valid_days * DAY_MS) / 1000, UTC)
    end = datetime.combine(last_day.astimezone(zone).date() + timedelta(days=1), time(0), tzinfo=zone)
    return int(end.timestamp() * 1000) - 1


def kind_and_value(ctx: dict[str, Any]) -> tuple[str, int]:
    if ctx.get("incentive") == "free_shipping":
        return "free_shipping", 0
    return "percent_off", next((ctx[f] for f in _VALUE_FIELDS if isinstance(ctx.get(f), int)), 0)


def render_extra(settings: Settings, command: dict[str, Any]) -> dict[str, Any]:
    """Variables the email needs beyond the engine's context: the coupon's expiry and its apply link."""
    ctx = context_of(command)
    code = ctx.get("coupon_code")
    if not code:
        return {}
    extra: dict[str, Any] = {"coupon_expires_at": expires_at(settings.coupons, command, ctx)}
    apply = coupon_apply_url(settings.coupons, settings.flows.shop_url, str(code), ctx.get("cart_url"),
                             utm_params(settings.links, command))
    if apply:
        extra["coupon_apply_url"] = apply
    return extra


def issued(settings: CouponSettings, command: dict[str, Any], sent_at: int) -> dict[str, Any] | None:
    """The CouponIssued record for a sent command, or None when it carried no coupon."""
    ctx = context_of(command)
    code = ctx.get("coupon_code")
    if not code:
        return None
    kind, value = kind_and_value(ctx)
    return {"code": str(code), "customer_id": command["customer_id"], "command_id": command["command_id"],
            "flow": command["flow"], "step": int(command["step"]), "kind": kind, "value": int(value),
            "issued_at": int(command["created_at"]), "expires_at": expires_at(settings, command, ctx),
            "sent_at": sent_at}


def published_kinds() -> tuple[str, ...]:
    """The coupon kinds ``CouponIssued.kind`` can carry (the schema's enum symbols)."""
    from schemas.serde import registry

    field = next(f for f in registry().get("CouponIssued").raw["fields"] if f["name"] == "kind")
    return tuple(field["type"]["symbols"])
