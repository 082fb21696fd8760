"""Signed, non-guessable page tokens and the tracking page URL.

token = ``<order id, base64url>.<HMAC-SHA256(key, "shopmail-track-v1" ‖ len(order) ‖ order ‖ customer)
truncated to 128 bits, base64url>``. The order id is readable (it is printed in the order mail anyway);
the MAC binds it to the customer, so neither can be swapped and no token can be made without the key.
Verification recomputes the MAC from the view's customer id and compares in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import quote

from streams.config import Settings

_DOMAIN = b"shopmail-track-v1"
MAC_BYTES = 16  # 128 bits: not guessable, and the URL stays short


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, order_id: str, customer_id: str) -> bytes:
    order = order_id.encode()
    msg = _DOMAIN + len(order).to_bytes(4, "big") + order + customer_id.encode()
    return hmac.new(key, msg, hashlib.sha256).digest()[:MAC_BYTES]


def make_token(key: bytes, order_id: str, customer_id: str) -> str:
    if not key:
        raise ValueError("tracking token key is empty (set tracking.secret or tracking.secret_file)")
    return f"{_b64(order_id.encode())}.{_b64(_mac(key, order_id, customer_id))}"


def token_order_id(token: str) -> str | None:
    """The order id a token names (unverified), or None when it is not a well-formed token."""
    head, sep, tail = token.partition(".")
    if not sep or not head or not tail or len(token) > 2048:
        return None
    try:
        return _unb64(head).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def verify_token(key: bytes, token: str, order_id: str, customer_id: str) -> bool:
    """True when ``token`` is the one for (order_id, customer_id); constant-time MAC comparison."""
    if not key:
        return False
    expected = make_token(key, order_id, customer_id)
    return hmac.compare_digest(expected.encode(), token.encode())


def tracking_page_url(settings: Settings, order_id: str, customer_id: str, locale: str | None = None) -> str | None:
    """The customer's tracking page for ``order_id``, or None when no token key is configured (then
    mails keep the carrier link only). ``locale`` (the profile's) is passed as ``?lang=``."""
    key = settings.tracking.signing_key()
    if not key or not order_id or not customer_id:
        return None
    url = f"{settings.tracking.base_url.rstrip('/')}/{make_token(key, order_id, customer_id)}"
    if locale:
        url += f"?lang={quote(locale, safe='')}"
    return url
