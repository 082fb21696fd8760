"""Walking skeleton through the real broker and the real HTTP SES emulator:
an order placed → order_confirmation command → rendered email stored by moto → `sent` outcome."""

from __future__ import annotations

import email
from email import policy

import pytest

from streams.kafka.io import produce_records, read_topic
from tests.support.runtime import running_processor
from tests.support.sink import point_at_ses, running_sink, verify_sender
from tests.test_processor_skeleton import order

pytestmark = pytest.mark.integration


def test_an_order_placed_arrives_at_ses_with_its_items_and_a_sent_outcome(kafka, moto_ses, settings):
    point_at_ses(settings, moto_ses.endpoint_url)
    verify_sender(settings, moto_ses.endpoint_url)
    placed = order("e2e-1", customer="cust-e2e", items=[
        {"sku": "MUG", "name": "Enamel camp mug", "price": "14.00", "quantity": 2, "image_url": None, "url": None},
        {"sku": "TEE", "name": "Organic tee", "price": "29.00", "quantity": 1, "image_url": None, "url": None}],
        total="57.00")
    with running_processor(settings, kafka), running_sink(settings, kafka):
        produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [placed])
        outcomes = read_topic(kafka, settings.topics.name("outcomes"), expect=1, timeout_s=30)
    assert len(outcomes) == 1
    outcome = outcomes[0].decoded().record
    assert outcome["outcome"] == "sent" and outcome["flow"] == "order_confirmation" and outcome["message_id"]
    stored = [m for m in moto_ses.sent_messages() if m["id"] == outcome["message_id"]]
    assert len(stored) == 1
    msg = email.message_from_string(stored[0]["raw_data"], policy=policy.default)
    assert msg["To"] == "cust-e2e@example.com" and "confirmed" in msg["Subject"]
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    for body in (html, text):
        assert "Enamel camp mug" in body and "Organic tee" in body and "57.00" in body
    assert msg["List-Unsubscribe"] is None  # transactional mail
