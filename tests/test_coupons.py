"""Coupons the shop can honour: each emailed code is published once as CouponIssued on email.coupons,
the email shows its expiry, and a code nobody received (holdout, no consent) is never issued.
Through the real broker and moto."""

from __future__ import annotations

import email
from email import policy

import pytest

from schemas import serde
from sinks.coupons import expires_at, issued
from streams.config import DAY_MS, CouponSettings
from streams.kafka.io import produce_records, read_topic
from tests.support.sink import (CART_CTX, command, consent, now, outcomes, proxy, running_sink,  # noqa: F401
                                sink_settings)

pytestmark = pytest.mark.integration


def _coupon_command(n: int, customer: str, **extra: object) -> dict:
    ctx = dict(CART_CTX, incentive="coupon", coupon_code=f"CART-{customer.upper()}-{n}", coupon_percent=10)
    return command(n, customer, category="marketing", flow="abandoned_cart", step=3, context=ctx, **extra)


def test_an_emailed_code_is_published_once_with_the_expiry_the_email_shows(kafka, moto_ses, sink_settings):
    t = sink_settings.topics
    consent(sink_settings, kafka, "cp1")
    consent(sink_settings, kafka, "cp2", opt_in=False)
    sent, no_consent = _coupon_command(1, "cp1"), _coupon_command(2, "cp2")
    holdout = _coupon_command(3, "cp1", variant="holdout")
    produce_records(sink_settings, kafka, t.name("commands"), "EmailCommand", [sent, no_consent, holdout, sent])
    with running_sink(sink_settings, kafka):
        got = {o["command_id"]: o for o in outcomes(kafka, sink_settings, 3)}
    assert got[sent["command_id"]]["outcome"] == "sent"
    assert got[no_consent["command_id"]]["outcome"] == got[holdout["command_id"]]["outcome"] == "suppressed"
    coupons = [r.decoded().record for r in read_topic(kafka, t.name("coupons"), idle_s=0.5, timeout_s=10)]
    assert [(c["code"], c["customer_id"], c["command_id"], c["value"]) for c in coupons] == [
        ("CART-CP1-1", "cp1", sent["command_id"], 10)]
    (coupon,) = coupons
    assert coupon["expires_at"] == sent["created_at"] + sink_settings.coupons.valid_days * DAY_MS
    raw = next(m["raw_data"] for m in moto_ses.sent_messages() if sent["command_id"] in m["raw_data"])
    text = email.message_from_string(raw, policy=policy.default).get_body(("plain",)).get_content()
    assert "CART-CP1-1" in text and "Valid until" in text


def test_a_command_without_a_code_issues_no_coupon_and_the_expiry_counts_from_event_time():
    settings = CouponSettings(valid_days=3)
    plain = command(1, "c1")
    assert issued(settings, plain, now()) is None
    with_code = _coupon_command(2, "c1", created_at=1_000)
    assert expires_at(settings, with_code) == 1_000 + 3 * DAY_MS
    assert issued(settings, with_code, 5)["expires_at"] == 1_000 + 3 * DAY_MS
    assert serde.decode(serde.encode("CouponIssued", issued(settings, with_code, 5))).record["code"] == "CART-C1-2"
