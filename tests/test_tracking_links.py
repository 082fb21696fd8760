"""Shipping mail links to the shop's own tracking page once a token key is configured, and the link
opens that order's page (the token verifies for the order and the customer). The sink signs the link at
render time from the command's ids: the command itself carries no link and the engine needs no key."""

from __future__ import annotations

import json

from schemas import serde
from sinks.render_context import render_extra
from sinks.rendering import Renderer
from streams.config import load_settings
from streams.core.engine import PartitionEngine
from streams.tracking.tokens import verify_token

T0 = 1_700_000_000_000


def _shipment(key: str | None):
    s = load_settings(env={})
    s.tracking.secret = key or ""
    engine = PartitionEngine(s, 0)
    engine.process("customers", serde.from_json("CustomerEvent", {
        "event_id": "p", "customer_id": "c1", "occurred_at": T0, "type": "upserted", "email": "c1@example.com",
        "locale": "de", "timezone": "UTC", "marketing_opt_in": True}))
    (cmd,) = engine.process("shipments", serde.from_json("ShipmentEvent", {
        "event_id": "s1", "customer_id": "c1", "occurred_at": T0 + 1, "type": "in_transit", "shipment_id": "sh1",
        "order_id": "o1", "carrier": "DHL", "tracking_number": "123",
        "tracking_url": "https://carrier.example/track/123"})).commands
    return s, cmd


def test_the_engine_builds_shipping_mail_without_the_tracking_key():
    _, with_key = _shipment("page-key")
    _, without = _shipment(None)
    assert with_key == without and "tracking_page_url" not in json.loads(with_key["context"])


def test_the_sink_signs_the_tracking_page_link_of_shipping_mail_at_render_time():
    s, cmd = _shipment("page-key")
    url = render_extra(s, cmd)["tracking_page_url"]
    assert url.startswith(s.tracking.base_url + "/") and url.endswith("?lang=de")
    token = url[len(s.tracking.base_url) + 1:].split("?")[0]
    assert verify_token(b"page-key", token, "o1", "c1") and not verify_token(b"page-key", token, "o1", "c2")
    rendered = Renderer().render(cmd, "https://shop.example.com/unsubscribe", render_extra(s, cmd))
    assert url.split("?")[0] in rendered.html and "carrier.example" not in rendered.text


def test_without_a_key_the_mail_keeps_the_carrier_link():
    s, cmd = _shipment(None)
    assert "tracking_page_url" not in render_extra(s, cmd)
    assert "https://carrier.example/track/123" in Renderer().render(cmd, "https://shop.example.com/u",
                                                                    render_extra(s, cmd)).text
