"""What the sink adds to a command's context before rendering: the coupon's expiry and apply link
(:func:`sinks.coupons.render_extra`) and, for a review request, the signed review links
(:func:`sinks.links.review_links`), and for shipping and tracking mail the tracking page's signed link
(the core builds no link that needs a service's secret)."""

from __future__ import annotations

from typing import Any

from sinks import coupons
from sinks.links import review_links
from streams.config import Settings
from streams.tracking.tokens import tracking_page_url

TRACKING_FLOWS = frozenset({"shipping_confirmation", "tracking_update"})  # mail that links the tracking page


def render_extra(settings: Settings, command: dict[str, Any]) -> dict[str, Any]:
    extra = coupons.render_extra(settings, command)
    if command["flow"] == "delivery_feedback":
        ctx = coupons.context_of(command)
        page, products = review_links(settings.links, settings.flows.shop_url, settings.unsubscribe.secret, command,
                                      str(ctx.get("order_id") or ""), ctx.get("products") or [])
        if page is not None:
            extra.update(feedback_url=page, review_links=products)
    elif command["flow"] in TRACKING_FLOWS:
        page = tracking_page_url(settings, str(coupons.context_of(command).get("order_id") or ""),
                                 command["customer_id"], command.get("locale"))
        if page is not None:  # no tracking key configured: the mail keeps the carrier's link
            extra["tracking_page_url"] = page
    return extra
