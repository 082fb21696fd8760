"""Links to the shop in emails: UTM parameters, the coupon apply-link and signed product-review links.

- ``with_utm``: ``utm_source``/``utm_medium`` (``links``), ``utm_campaign`` = the flow and ``utm_content`` =
  ``step<n>-<variant>`` on every link to the shop's own host; parameters the URL already carries win.
- ``coupon_apply_url``: the shop's discount link (``coupons.apply_url``, e.g.
  ``{shop_url}/discount/{code}?redirect={redirect}``): following it applies the code, then goes on to the
  redirect target, which carries the UTM parameters as well (the landing page is what analytics see).
- ``review_links``: the review page per product with a star rating (``rating=1..5``) and a token, an
  HMAC-SHA256 over (order, customer, command) with the unsubscribe secret, so the shop can tell a real
  request from a guessed ``?order=<id>``.
- ``tracking_page_url``: shipping and tracking mail link the shop's own tracking page, signed here from the
  command's order and customer ids with the tracking key (``streams/tracking/tokens.py``); the processors
  that build the command hold no key. Without a key the mail keeps the carrier's link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from streams.config import CouponSettings, LinkSettings

STARS = (5, 4, 3, 2, 1)


def with_utm(url: str, utm: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    have = {k for k, _ in query}
    query += [(k, v) for k, v in utm.items() if k not in have]
    return urlunsplit(parts._replace(query=urlencode(query)))


def utm_params(settings: LinkSettings, command: dict[str, Any]) -> dict[str, str] | None:
    """The UTM parameters of a command's shop links (None when ``links.utm`` is off)."""
    if not settings.utm:
        return None
    variant = command.get("variant") or "control"
    return {"utm_source": settings.utm_source, "utm_medium": settings.utm_medium, "utm_campaign": command["flow"],
            "utm_content": f"step{command['step']}-{variant}"}


def coupon_apply_url(settings: CouponSettings, shop_url: str, code: str, redirect: str | None,
                     utm: dict[str, str] | None = None) -> str | None:
    """The shop's link that applies ``code`` and then shows ``redirect`` (default: the shop's front page).
    ``utm`` goes on the redirect target too: the page the customer lands on after the redirect is where the
    shop's analytics attribute the visit."""
    if not settings.apply_url:
        return None
    target = redirect or shop_url
    if utm and urlsplit(target).netloc == urlsplit(shop_url).netloc:
        target = with_utm(target, utm)
    path = urlsplit(target)
    relative = urlunsplit(("", "", path.path or "/", path.query, "")) if path.netloc == urlsplit(shop_url).netloc \
        else target
    return settings.apply_url.format(shop_url=shop_url.rstrip("/"), code=quote(code, safe=""),
                                     redirect=quote(relative, safe=""))


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
