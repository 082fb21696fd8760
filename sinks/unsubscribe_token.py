"""Signed unsubscribe tokens: HMAC-SHA256 over (customer, command, locale) with a secret key.

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


def sign(key: str | bytes, customer_id: str, command_id: str, locale: str) -> str:
    if not key:
        raise ValueError("the unsubscribe signing key is empty")
    msg = "\x1f".join(("v1", customer_id, command_id, locale)).encode()
    mac = hmac.new(_key(key), msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(key: str | bytes, customer_id: str, command_id: str, locale: str, token: str) -> bool:
    if not key or not token:
        return False
    return hmac.compare_digest(sign(key, customer_id, command_id, locale), token)
