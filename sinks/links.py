"""Links to the shop in emails: UTM parameters, the coupon apply-link and signed product-review links.

- ``with_utm``: ``utm_source``/``utm_medium`` (``links``), ``utm_campaign`` = the flow and ``utm_content`` =
  ``step<n>-<variant>`` on every link to the shop's own host; parameters the URL already carries win.
- the coupon apply-link: :func:`sinks.coupons.coupon_apply_url`.
- ``review_links``: the review page per product with a star rating (``rating=1..5``) and a token, an
  HMAC-SHA256 over (order, customer, command) with the unsubscribe secret, so the shop can tell a real
  request from a guessed ``?order=<id>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sinks import coupons
from streams.config import LinkSettings, Settings

STARS = (5, 4, 3, 2, 1)


def with_utm(url: str, utm: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    have = {k for k, _ in query}
    query += [(k, v) for k, v in utm.items() if k not in have]
    return urlunsplit(parts._replace(query=urlencode(query)))


def review_token(key: str | bytes, order_id: str, customer_id: str, command_id: str) -> str:
    raw = key.encode() if isinstance(key, str) else key
    msg = "\x1f".join(("review:v1", order_id, customer_id, command_id)).encode()
    return base64.urlsafe_b64encode(hmac.new(raw, msg, hashlib.sha256).digest()).rstrip(b"=").decode()


def review_links(settings: LinkSettings, shop_url: str, key: str | bytes | None, command: dict[str, Any],
                 order_id: str, items: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(the order's review page, per product {sku, name, image_url, stars: [(rating, url)]}); (None, []) without
    a signing key: an unsigned review link is not sent."""
    if not key:
        return None, []
    base = settings.review_url.format(shop_url=shop_url.rstrip("/"))
    common = {"order": order_id, "c": command["command_id"], "u": command["customer_id"],
              "l": command.get("locale") or "en",
              "t": review_token(key, order_id, command["customer_id"], command["command_id"])}
    page = f"{base}?{urlencode(common)}"
    products = [{"sku": it["sku"], "name": it["name"], "image_url": it.get("image_url"),
                 "stars": [(n, f"{base}?{urlencode({**common, 'sku': it['sku'], 'rating': n})}") for n in STARS]}
                for it in items if it.get("sku") and it.get("name")]
    return page, products


def render_extra(settings: Settings, command: dict[str, Any]) -> dict[str, Any]:
    """What the sink adds to a command's context before rendering: the coupon's expiry and apply link
    (:func:`sinks.coupons.render_extra`) and, for a review request, the signed review links."""
    extra = coupons.render_extra(settings, command)
    if command["flow"] == "delivery_feedback":
        ctx = coupons.context_of(command)
        page, products = review_links(settings.links, settings.flows.shop_url, settings.unsubscribe.secret, command,
                                      str(ctx.get("order_id") or ""), ctx.get("products") or [])
        if page is not None:
            extra.update(feedback_url=page, review_links=products)
    return extra
