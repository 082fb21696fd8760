"""Signed list links: HMAC-SHA256 over (purpose, customer, command, locale) with a secret key.

Purposes: ``unsubscribe`` (the one-click link), ``keep`` (the "keep me subscribed" link of a goodbye
mail) and ``preferences`` (the customer's preference page). A token for one purpose never verifies for
another; unsubscribe tokens are computed as they always were, so links already sent stay valid.

The token is the URL-safe base64 of the full 32-byte MAC (43 characters, 256 bits: not guessable).
It binds all three fields, so editing any of them in the URL (another customer, another command, another
page language) makes it invalid. Verification is constant-time.

The fields are joined with the unit separator U+001F; a field that contains it could move the boundary
between two fields (customer ``a<US>b`` with command ``c`` signs the same bytes as customer ``a`` with
command ``b<US>c``), so such a field is never signed (ValueError) and never verifies. No real identifier or
locale contains it, so every token already sent stays valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def _key(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


PURPOSES = ("unsubscribe", "keep", "preferences")
SEPARATOR = "\x1f"


def _shiftable(*fields: str) -> bool:
    return any(SEPARATOR in field for field in fields)


def sign(key: str | bytes, customer_id: str, command_id: str, locale: str, purpose: str = "unsubscribe") -> str:
    if not key:
        raise ValueError("the unsubscribe signing key is empty")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown link purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    if _shiftable(customer_id, command_id, locale):
        raise ValueError("a list-link field contains the token's field separator (\\x1f): not signed")
    version = "v1" if purpose == "unsubscribe" else f"v1:{purpose}"
    msg = SEPARATOR.join((version, customer_id, command_id, locale)).encode()
    mac = hmac.new(_key(key), msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(key: str | bytes, customer_id: str, command_id: str, locale: str, token: str,
           purpose: str = "unsubscribe") -> bool:
    if not key or not token or _shiftable(customer_id, command_id, locale):
        return False
    return hmac.compare_digest(sign(key, customer_id, command_id, locale, purpose), token)
