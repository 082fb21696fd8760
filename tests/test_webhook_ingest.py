"""Carrier webhooks in: accepted shapes and status mapping (pure), and through the real broker: a
verified update becomes a ShipmentEvent keyed by the customer and shows on the page; repeats are
idempotent; bad signatures write nothing (401); malformed bodies 400 + a dead letter; unknown
tracking numbers 422; a broker that does not confirm → 503."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
import urllib.error
import urllib.request
from typing import Any

import pytest

from schemas import serde
from streams.kafka.io import produce_records, read_topic
from streams.tracking import view as views
from streams.tracking.ingest import WebhookIngest, shipment_event_id
from streams.tracking.tokens import make_token
from streams.tracking.webhooks import WebhookError, parse, sign, signature_header, signature_ok
from tests.test_tracking import KEY, T0, order, shipment, tracked, wait_for  # noqa: F401 - fixture

AS_KEY, GEN_KEY = b"as-secret", b"gen-secret"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp() * 1000)


def aftership(event_id: str = "ev-1", tag: str = "InTransit", tn: str = "TN-1", **msg: Any) -> bytes:
    body = {"event": "tracking_update", "event_id": event_id, "ts": 1_780_000_100,
            "msg": {"tracking_number": tn, "slug": "dhl", "tag": tag, "updated_at": "2026-05-29T10:00:00+00:00",
                    "checkpoints": [{"checkpoint_time": "2026-05-29T09:59:00Z", "tag": tag}], **msg}}
    return json.dumps(body).encode()


def labelled_order_page(kafka: str, settings: Any, svc: Any) -> str:
    """Order o-1 of c-1 with a label_created shipment (TN-1): its page URL, once the page shows it."""
    t = settings.topics
    produce_records(settings, kafka, t.name("orders"), "OrderEvent", [order()])
    produce_records(settings, kafka, t.name("shipments"), "ShipmentEvent", [shipment("label_created", T0)])
    page = f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-1', 'c-1')}"
    wait_for(page, "Shipping label created")
    return page


def post(port: int, provider: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[signature_header(provider)] = signature
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/{provider}", data=body, headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# ---- shapes and statuses --------------------------------------------------------------------------

@pytest.mark.parametrize("tag,ours", [("InfoReceived", "label_created"), ("Pending", "label_created"),
                                      ("InTransit", "in_transit"), ("OutForDelivery", "out_for_delivery"),
                                      ("AvailableForPickup", "out_for_delivery"), ("AttemptFail", "exception"),
                                      ("Exception", "exception"), ("Expired", "exception"), ("Delivered", "delivered")])
def test_aftership_tags_map_to_our_statuses(tag, ours):
    update = parse("aftership", aftership(tag=tag))
    assert update.status == ours and update.tracking_number == "TN-1" and update.carrier == "dhl"
    assert update.occurred_at == ms("2026-05-29T09:59:00")  # the last checkpoint's time


def test_an_aftership_exception_returning_to_the_sender_is_returned():
    assert parse("aftership", aftership(tag="Exception", subtag_message="Returned to sender")).status == "returned"


@pytest.mark.parametrize("status,ours", [("pre_transit", "label_created"), ("in_transit", "in_transit"),
                                         ("Out-For-Delivery", "out_for_delivery"), ("delivered", "delivered"),
                                         ("failure", "exception"), ("return_to_sender", "returned")])
def test_generic_statuses_map_to_ours(status, ours):
    body = json.dumps({"event_id": 7, "tracking_number": "TN-1", "carrier": "ups", "status": status,
                       "occurred_at": "2026-05-29T10:00:00Z", "tracking_url": "javascript:x"}).encode()
    update = parse("generic", body)
    assert update.status == ours and update.provider_event_id == "7" and update.tracking_url is None
    assert update.occurred_at == ms("2026-05-29T10:00:00")


@pytest.mark.parametrize("body,reason", [
    (b"{not json", "malformed"), (b"[]", "malformed"),
    (json.dumps({"tracking_number": "T", "status": "delivered", "occurred_at": T0}).encode(), "malformed"),
    (json.dumps({"event_id": "e", "tracking_number": "T", "status": "teleported", "occurred_at": T0}).encode(),
     "unknown_status"),
    (json.dumps({"event_id": "e", "tracking_number": "T", "status": "delivered", "occurred_at": 1_780_000_000}).encode(),
     "malformed"),  # seconds, not milliseconds
])
def test_malformed_bodies_are_typed_errors(body, reason):
    with pytest.raises(WebhookError) as exc:
        parse("generic", body)
    assert exc.value.reason == reason


def test_signatures_are_checked_over_the_raw_body():
    body = aftership()
    assert signature_ok("aftership", AS_KEY, body, sign("aftership", AS_KEY, body))
    assert not signature_ok("aftership", AS_KEY, body + b" ", sign("aftership", AS_KEY, body))
    assert not signature_ok("aftership", b"other", body, sign("aftership", AS_KEY, body))
    assert not signature_ok("generic", GEN_KEY, body, None)
    assert signature_ok("generic", GEN_KEY, body, sign("generic", GEN_KEY, body).upper().replace("SHA256=", "sha256="))


# ---- through the broker ----------------------------------------------------------------------------

@pytest.mark.integration
def test_a_verified_webhook_becomes_a_shipment_event_for_the_customer_once(kafka, tracked):
    settings, svc = tracked
    t = settings.topics
    page = labelled_order_page(kafka, settings, svc)
    body = aftership(tag="OutForDelivery")
    code, answer = post(svc.http.port, "aftership", body, sign("aftership", AS_KEY, body))
    assert code == 200 and answer["status"] == "written", answer
    assert post(svc.http.port, "aftership", body, sign("aftership", AS_KEY, body)) == (200, {"status": "duplicate"})
    wait_for(page, "<p class=\"status\">Out for delivery</p>")
    written = [r for r in read_topic(kafka, t.name("shipments")) if r.decoded().record["type"] == "out_for_delivery"]
    assert len(written) == 1
    rec = written[0].decoded().record
    assert written[0].key == b"c-1" and rec["customer_id"] == "c-1" and rec["order_id"] == "o-1"
    assert rec["shipment_id"] == "o-1-s1" and rec["event_id"] == shipment_event_id("aftership", "ev-1")
    assert rec["tracking_url"] == "https://carrier.example/track?n=TN-1"  # kept from the shop's event

    code, answer = post(svc.http.port, "aftership", aftership(event_id="ev-2"), "forged")
    assert code == 401 and answer["error"] == "bad_signature"
    code, answer = post(svc.http.port, "aftership", aftership(event_id="ev-3"), None)
    assert code == 401
    bad = b'{"event_id": "ev-4", "msg": "nope"}'
    code, answer = post(svc.http.port, "aftership", bad, sign("aftership", AS_KEY, bad))
    assert code == 400 and answer["error"] == "malformed" and "msg" in answer["detail"]
    unknown = json.dumps({"event_id": "g-1", "tracking_number": "NOPE", "status": "delivered",
                          "occurred_at": T0}).encode()
    code, answer = post(svc.http.port, "generic", unknown, sign("generic", GEN_KEY, unknown))
    assert code == 422 and answer["error"] == "unknown_tracking_number"
    assert post(svc.http.port, "dpd", unknown, sign("generic", b"x", unknown))[0] == 404  # no secret configured

    dlq = read_topic(kafka, t.dlq("shipments"), expect=1, timeout_s=10)
    assert len(dlq) == 1
    dead = dlq[0].decoded().record
    assert dead["original_value"] == bad and dead["error"] == "malformed" and dead["component"] == "tracking-webhook"
    shipments = [r.decoded().record["event_id"] for r in read_topic(kafka, t.name("shipments"))]
    assert len(shipments) == 2  # the shop's label_created and the one verified update: nothing from the rest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_an_unconfirmed_write_answers_503_so_the_provider_retries(settings):
    settings.tracking.webhook_secrets = {"aftership": AS_KEY.decode()}
    settings.tracking.delivery_timeout_ms = 1500
    store = views.ViewStore()
    v = views.new_view("o-1", "c-1")
    views.apply_shipment(v, shipment("label_created", T0))
    store.put(v)
    store.ready.set()
    ingest = WebhookIngest(settings, f"127.0.0.1:{_closed_port()}", store)
    try:
        body = aftership()
        answer = ingest.handle("aftership", body, sign("aftership", AS_KEY, body))
        assert answer.code == 503 and answer.body["error"] == "not_written", answer
        again = ingest.handle("aftership", body, sign("aftership", AS_KEY, body))
        assert again.code == 503  # not remembered as done: the retry is written, not answered "duplicate"
        bad = b"{"
        assert ingest.handle("aftership", bad, sign("aftership", AS_KEY, bad)).code == 503  # dead letter not written
    finally:
        ingest.close()


def test_a_decoded_shipment_event_round_trips():
    rec = shipment("delivered", T0)
    assert serde.decode(serde.encode("ShipmentEvent", rec)).record["event_id"] == rec["event_id"]
