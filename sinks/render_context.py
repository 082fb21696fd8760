"""What the sink adds to a command's context before rendering: the coupon's expiry and apply link
(:func:`sinks.coupons.render_extra`) and, for a review request, the signed review links
(:func:`sinks.links.review_links`)."""

from __future__ import annotations

from typing import Any

from sinks import coupons
from sinks.links import review_links
from streams.config import Settings


def render_extra(settings: Settings, command: dict[str, Any]) -> dict[str, Any]:
    extra = coupons.render_extra(settings, command)
    if command["flow"] == "delivery_feedback":
        ctx = coupons.context_of(command)
        page, products = review_links(settings.links, settings.flows.shop_url, settings.unsubscribe.secret, command,
                                      str(ctx.get("order_id") or ""), ctx.get("products") or [])
        if page is not None:
            extra.update(feedback_url=page, review_links=products)
    return extra
