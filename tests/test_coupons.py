"""Coupons the shop can honour: each emailed code is published once as CouponIssued on email.coupons,
the email shows its expiry, and a code nobody received (holdout, no consent) is never issued.
Through the real broker and moto."""

from __future__ import annotations

import email
import io
import re
from email import policy

import fastavro
import pytest

from schemas import serde
from datetime import datetime
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from sinks.coupons import expires_at, issued, published_kinds
from sinks.render_context import render_extra
from sinks.rendering import Renderer
from sinks.samples import FULL
from sinks.samples import command as sample_command
from streams.config import DAY_MS, CouponSettings, Settings, UnsubscribeSettings
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
    last_day = sent["created_at"] + sink_settings.coupons.valid_days * DAY_MS
    assert coupon["expires_at"] == expires_at(sink_settings.coupons, sent) == last_day - last_day % DAY_MS + DAY_MS - 1
    raw = next(m["raw_data"] for m in moto_ses.sent_messages() if sent["command_id"] in m["raw_data"])
    text = email.message_from_string(raw, policy=policy.default).get_body(("plain",)).get_content()
    assert "CART-CP1-1" in text and "Valid until" in text


def test_a_command_without_a_code_issues_no_coupon_and_the_expiry_counts_from_event_time():
    settings = CouponSettings(valid_days=3)
    plain = command(1, "c1")
    assert issued(settings, plain, now()) is None
    with_code = _coupon_command(2, "c1", created_at=1_000)
    assert expires_at(settings, with_code) == 4 * DAY_MS - 1  # the end of the (UTC) day 3 days later
    assert issued(settings, with_code, 5)["expires_at"] == 4 * DAY_MS - 1
    assert serde.decode(serde.encode("CouponIssued", issued(settings, with_code, 5))).record["code"] == "CART-C1-2"


def test_a_code_expires_at_the_end_of_the_recipients_day_and_the_email_says_so_in_their_calendar():
    settings = Settings(unsubscribe=UnsubscribeSettings(secret="k"))
    ctx = {**FULL[("abandoned_cart", 3)], "timezone": "Asia/Bangkok"}
    cmd = sample_command("abandoned_cart", 3, ctx, locale="th")  # created 2025-12-17 12:00 UTC
    end = expires_at(settings.coupons, cmd)
    assert datetime.fromtimestamp((end + 1) / 1000, ZoneInfo("Asia/Bangkok")) == \
        datetime(2026, 1, 1, tzinfo=ZoneInfo("Asia/Bangkok"))  # midnight after 31 Dec, Bangkok time
    email = Renderer().render(cmd, "https://shop.example.com/u", render_extra(settings, cmd))
    assert "31 ธันวาคม พ.ศ. 2568" in email.text and "23:59" in email.text and "2025" not in email.text
    de = Renderer().render(sample_command("abandoned_cart", 3, ctx, locale="de"), "https://shop.example.com/u",
                           render_extra(settings, sample_command("abandoned_cart", 3, ctx, locale="de")))
    assert "Gültig bis 31. Dezember 2025, 23:59 Uhr." in de.text


def test_the_button_applies_the_code_and_the_discounted_total_is_shown():
    settings = Settings(unsubscribe=UnsubscribeSettings(secret="k"))
    cmd = sample_command("abandoned_cart", 3, FULL[("abandoned_cart", 3)])
    email = Renderer().render(cmd, "https://shop.example.com/u", render_extra(settings, cmd))
    (apply,) = set(re.findall(r'https://shop\.example\.com/discount/CART-7QK2-M9\?[^"\s]+', email.text))
    query = parse_qs(urlsplit(apply).query)
    redirect = parse_qs(urlsplit(query["redirect"][0]).query)
    assert urlsplit(query["redirect"][0]).path == "/cart/k-1"
    # the landing page after the redirect carries the attribution, not only the discount link
    assert redirect["utm_campaign"] == ["abandoned_cart"] and redirect["utm_content"] == ["step3-control"]
    assert query["utm_source"] == ["shopmail"]
    assert "With your code: €178.20" in email.text and "Total: €198.00" in email.text
    settings.coupons.apply_url = ""
    plain = Renderer().render(cmd, "https://shop.example.com/u", render_extra(settings, cmd))
    assert "/discount/" not in plain.html and "https://shop.example.com/cart/k-1?utm_" in plain.html


def test_a_free_shipping_code_is_published_as_such_and_the_record_serialises():
    ctx = dict(CART_CTX, incentive="free_shipping", coupon_code="SHIP-X1")
    cmd = command(9, "c9", category="marketing", flow="abandoned_cart", step=3, context=ctx)
    record = issued(CouponSettings(), cmd, 5)
    assert record is not None and (record["code"], record["kind"], record["value"]) == ("SHIP-X1", "free_shipping", 0)
    decoded = serde.decode(serde.encode("CouponIssued", record), "CouponIssued")
    assert decoded.record["kind"] == "free_shipping" and decoded.record["code"] == "SHIP-X1"
    email = Renderer().render(sample_command("abandoned_cart", 3, {**CART_CTX, **ctx}), "https://shop.example.com/u",
                              render_extra(Settings(), cmd))
    assert "Your free-shipping code: SHIP-X1" in email.text


def test_the_coupon_schema_carries_both_kinds_and_reads_records_written_before_free_shipping():
    assert published_kinds() == ("percent_off", "free_shipping")
    (old,) = [e for e in serde.registry().by_fingerprint.values()
              if e.name == "CouponIssued" and e.path.parent.name == "history"]
    buf = io.BytesIO()
    buf.write(serde.MAGIC + old.fingerprint_bytes)
    record = issued(CouponSettings(), _coupon_command(1, "c1"), 5)
    fastavro.schemaless_writer(buf, old.parsed, record)
    assert serde.decode(buf.getvalue(), "CouponIssued").record == record
