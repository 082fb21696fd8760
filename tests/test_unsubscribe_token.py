"""The list-link token: fields cannot be shifted across the separator, and tokens already sent stay valid."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from sinks.unsubscribe_token import PURPOSES, sign, verify

KEY = "a-long-random-secret-from-a-k8s-secret"


def token_as_first_built(customer_id: str, command_id: str, locale: str, purpose: str = "unsubscribe") -> str:
    """The token exactly as the first links were built (HMAC-SHA256 over the U+001F-joined fields)."""
    version = "v1" if purpose == "unsubscribe" else f"v1:{purpose}"
    msg = "\x1f".join((version, customer_id, command_id, locale)).encode()
    return base64.urlsafe_b64encode(hmac.new(KEY.encode(), msg, hashlib.sha256).digest()).rstrip(b"=").decode()


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_token_already_sent_still_verifies_and_is_built_the_same_way(purpose):
    sent = token_as_first_built("c-42", "3f9a1c0e7b2d4e6f", "de", purpose)
    assert sign(KEY, "c-42", "3f9a1c0e7b2d4e6f", "de", purpose) == sent
    assert verify(KEY, "c-42", "3f9a1c0e7b2d4e6f", "de", sent, purpose)


def test_a_token_whose_fields_are_shifted_across_the_separator_never_verifies():
    # a customer id ending in "\x1fcmd" signed with command "x" is the same bytes as customer "c-42" with
    # command "cmd\x1fx": the token of one must not open the other
    shifted = token_as_first_built("c-42\x1fcmd", "x", "de")
    assert not verify(KEY, "c-42", "cmd\x1fx", "de", shifted)
    assert not verify(KEY, "c-42\x1fcmd", "x", "de", shifted)
    assert not verify(KEY, "c-42", "cmd", "x\x1fde", token_as_first_built("c-42", "cmd\x1fx", "de"))


@pytest.mark.parametrize("fields", [("c\x1f1", "cmd", "en"), ("c", "cmd\x1f", "en"), ("c", "cmd", "\x1fen")],
                         ids=["customer", "command", "locale"])
def test_a_field_containing_the_separator_is_refused_for_signing(fields):
    with pytest.raises(ValueError, match="separator"):
        sign(KEY, *fields)
