"""Coupons the shop can honour: every emailed code is published as a ``CouponIssued`` record.

A command's context carries the code the engine made for it (``coupon_code``, unique per recipient
and step) and its value (``coupon_percent``, or ``offer_percent`` for win-back). The coupon is valid
for ``coupons.valid_days`` from the command's ``created_at`` — event time, so a replay gives the same
expiry — and the email shows that date. The sink publishes the record in the same transaction as the
``sent`` outcome, and a command gets one final outcome (the ledger), so each emailed code is published
once; the topic is compacted by code, so a repeat would only overwrite it with the same record.
Suppressed, failed or holdout commands issue nothing: a code nobody received is never valid.
"""

from __future__ import annotations

import json
from typing import Any

from streams.config import DAY_MS, CouponSettings

_VALUE_FIELDS = ("coupon_percent", "offer_percent")


def _context(command: dict[str, Any]) -> dict[str, Any]:
    try:
        ctx = json.loads(command.get("context") or "{}")
    except ValueError:
        return {}
    return ctx if isinstance(ctx, dict) else {}


def expires_at(settings: CouponSettings, command: dict[str, Any]) -> int:
    return int(command["created_at"]) + settings.valid_days * DAY_MS


def render_extra(settings: CouponSettings, command: dict[str, Any]) -> dict[str, Any]:
    """Variables the email needs beyond the engine's context: the coupon's expiry, when it has one."""
    if not _context(command).get("coupon_code"):
        return {}
    return {"coupon_expires_at": expires_at(settings, command)}


def issued(settings: CouponSettings, command: dict[str, Any], sent_at: int) -> dict[str, Any] | None:
    """The CouponIssued record for a sent command, or None when it carried no coupon."""
    ctx = _context(command)
    code = ctx.get("coupon_code")
    if not code:
        return None
    value = next((ctx[f] for f in _VALUE_FIELDS if isinstance(ctx.get(f), int)), 0)
    return {"code": str(code), "customer_id": command["customer_id"], "command_id": command["command_id"],
            "flow": command["flow"], "step": int(command["step"]), "kind": "percent_off", "value": int(value),
            "issued_at": int(command["created_at"]), "expires_at": expires_at(settings, command), "sent_at": sent_at}
