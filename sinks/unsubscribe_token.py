"""Signed list links: HMAC-SHA256 over (purpose, customer, command, locale) with a secret key.

Purposes: ``unsubscribe`` (the one-click link), ``keep`` (the "keep me subscribed" link of a goodbye
mail) and ``preferences`` (the customer's preference page). A token for one purpose never verifies for
another; unsubscribe tokens are computed as they always were, so links already sent stay valid.

The token is the URL-safe base64 of the full 32-byte MAC (43 characters, 256 bits: not guessable).
It binds all three fields, so editing any of them in the URL (another customer, another command, another
page language) makes it invalid. Verification is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def _key(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


PURPOSES = ("unsubscribe", "keep", "preferences")


def sign(key: str | bytes, customer_id: str, command_id: str, locale: str, purpose: str = "unsubscribe") -> str:
    if not key:
        raise ValueError("the unsubscribe signing key is empty")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    version = "v1" if purpose == "unsubscribe" else f"v1:{purpose}"
    msg = "\x1f".join((version, customer_id, command_id, locale)).encode()
    mac = hmac.new(_key(key), msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(key: str | bytes, customer_id: str, command_id: str, locale: str, token: str,
           purpose: str = "unsubscribe") -> bool:
    if not key or not token:
        return False
    return hmac.compare_digest(sign(key, customer_id, command_id, locale, purpose), token)
