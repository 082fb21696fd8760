"""The tracking service at its edges, through the real broker: it survives any order the worker accepts
(a 30,000-item order is clamped, a view too large for its topic is dead-lettered, the service goes on),
webhook input is bounded (times outside 2000 … now + 1 d, NaN, huge numbers, deep nesting → 400 + dead
letter, never a dropped connection), odd view data still renders, and a bad token's 404 is the same
bytes whether or not the order exists."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from streams.kafka.io import produce_records, read_topic
from streams.tracking import view as views
from streams.tracking.page import PageRenderer
from streams.tracking.tokens import make_token
from streams.tracking.webhooks import WebhookError, parse, sign
from tests.test_tracking import KEY, T0, get, order, shipment, tracked, tracking_settings, wait_for  # noqa: F401 - fixture
from tests.test_webhook_ingest import GEN_KEY, labelled_order_page, post


def generic(occurred_at: Any, event_id: str = "g-1", tn: str = "TN-1") -> bytes:
    return json.dumps({"event_id": event_id, "tracking_number": tn, "status": "in_transit",
                       "occurred_at": occurred_at}).encode()


# ---- pure ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    generic(9_000_000_000_000_000_000), generic(1e30), generic(-1e30), generic(946_684_799_999),
    generic("1999-12-31T23:59:59Z"), generic("9999-12-31T23:59:59Z"),
    generic(int(time.time() * 1000) + 2 * 86_400_000),
], ids=["9e18", "1e30", "-1e30", "a_ms_before_2000", "iso_1999", "iso_9999", "two_days_ahead"])  # fixed ids: each
def test_a_webhook_time_outside_2000_to_a_day_ahead_is_refused(body):  # pytest-xdist worker collects the same ones
    with pytest.raises(WebhookError) as err:
        parse("generic", body)
    assert err.value.reason in ("invalid_time", "malformed")


@pytest.mark.parametrize("body", [
    b'{"event_id": "e", "tracking_number": "T", "status": "in_transit", "occurred_at": NaN}',
    b'{"event_id": "e", "tracking_number": "T", "status": "in_transit", "occurred_at": Infinity}',
    b'{"event_id": "e", "tracking_number": "T", "status": "in_transit", "occurred_at": 1' + b"0" * 400 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
], ids=["nan", "infinity", "400_digits", "deep_array", "deep_object"])
def test_nan_huge_numbers_and_deep_nesting_are_malformed(body):
    with pytest.raises(WebhookError) as err:
        parse("generic", body)
    assert err.value.reason in ("malformed", "invalid_time")


def test_a_page_whose_data_is_odd_still_renders():
    view = views.new_view("o-odd", "c-1")
    views.apply_order(view, order("o-odd", items=[{"sku": "x", "name": "Odd", "price": "NaN", "quantity": 1},
                                                  {"sku": "y", "name": "Huge", "price": "1e999999", "quantity": 1}],
                                  total="Infinity", currency="???"))
    for at in (9_000_000_000_000_000_000, -9_000_000_000_000_000_000, T0):
        views.apply_shipment(view, shipment("in_transit", at, order_id="o-odd"))
    renderer = PageRenderer()
    for lang in renderer.available:
        page = renderer.render(view, lang)
        assert "o-odd" in page and "Odd" in page and "Huge" in page
    view["shipments"]["o-odd-s1"]["events"].append({"status": "delivered", "at": "soon", "event_id": "x"})
    assert "o-odd" in renderer.render(view, "en")  # parts that cannot be shown are left out, the page renders


# ---- through the broker ----------------------------------------------------------------------------

@pytest.mark.integration
def test_before_the_views_are_restored_the_page_and_webhooks_answer_503_with_retry_after(kafka, settings):
    import urllib.request

    from streams.tracking.ingest import WebhookIngest
    from streams.tracking.server import TrackingHttp

    store = views.ViewStore()
    ingest = WebhookIngest(tracking_settings(settings), kafka, store)
    http = TrackingHttp("127.0.0.1", 0, store, PageRenderer(), ingest, KEY, 65536).start()
    try:
        page = f"http://127.0.0.1:{http.port}/track/{make_token(KEY, 'o-1', 'c-1')}"
        try:
            urllib.request.urlopen(page, timeout=5)
            raise AssertionError("answered before the views were restored")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and exc.headers["Retry-After"] == "5", exc.headers
        body = generic(int(time.time() * 1000))
        assert post(http.port, "generic", body, sign("generic", GEN_KEY, body)) == (503, {
            "error": "not_ready", "detail": "tracking views are still being restored"})
        store.ready.set()
        assert get(page)[0] == 404  # restored: an order it does not hold is not found, no longer "starting"
    finally:
        http.shutdown()
        ingest.close()

@pytest.mark.integration
def test_a_30000_item_order_then_10_normal_ones_gives_every_page_and_the_service_never_exits(kafka, tracked):
    settings, svc = tracked
    t = settings.topics
    items = [{"sku": f"s{i}", "name": "x", "price": "0.01", "quantity": 1} for i in range(30_000)]
    huge = order("o-huge", "c-huge", items=items)
    produce_records(settings, kafka, t.name("orders"), "OrderEvent",
                    [huge] + [order(f"o-{i}", f"c-{i}") for i in range(10)])
    for i in range(10):
        wait_for(f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, f'o-{i}', f'c-{i}')}", "Blue mug",
                 timeout_s=30)
    code, page = get(f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-huge', 'c-huge')}")
    assert code == 200 and page.count("<tr><td>1 × x</td>") == settings.limits.max_items  # clamped like the worker
    assert svc.health()[0] and not svc.stop.is_set()


@pytest.mark.integration
def test_a_view_too_large_for_its_topic_is_dead_lettered_and_the_builder_goes_on(kafka, settings):
    from tests.test_tracking import create_topics, start, tracking_settings

    tracking_settings(settings)
    settings.limits.max_message_bytes = 12_000  # a 100-item order with 200-character names does not fit
    create_topics(kafka, settings)
    svc = start(settings, kafka)
    try:
        t = settings.topics
        long_items = [{"sku": f"s{i}", "name": "n" * 300, "price": "1.00", "quantity": 1} for i in range(200)]
        produce_records(settings, kafka, t.name("orders"), "OrderEvent",
                        [order("o-big", "c-big", items=long_items), order("o-after", "c-big")])
        wait_for(f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-after', 'c-big')}", "Blue mug",
                 timeout_s=30)
        dlq = [r.decoded().record for r in read_topic(kafka, t.dlq("shipments"), expect=1, timeout_s=10)]
        assert [(d["error"], d["component"], d["topic"]) for d in dlq] == [
            ("view_too_large", "tracking-view", t.name("orders"))]
        assert get(f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-big', 'c-big')}")[0] == 404
        assert svc.health()[0]
    finally:
        svc.close()


@pytest.mark.integration
def test_odd_webhook_bodies_get_400_and_a_dead_letter_and_the_page_keeps_rendering(kafka, tracked):
    settings, svc = tracked
    t = settings.topics
    page = labelled_order_page(kafka, settings, svc)
    bodies = [generic(9e18, "g-1"), generic(1e30, "g-2"), generic(946_684_799_999, "g-3"),
              b'{"event_id": "g-4", "tracking_number": "TN-1", "status": "in_transit", "occurred_at": NaN}',
              b'{"a":' * 30_000 + b"1" + b"}" * 30_000]
    for body in bodies:
        code, answer = post(svc.http.port, "generic", body, sign("generic", GEN_KEY, body))
        assert code == 400 and answer["error"] in ("invalid_time", "malformed"), answer
    dlq = read_topic(kafka, t.dlq("shipments"), expect=len(bodies), timeout_s=15)
    assert len(dlq) == len(bodies)
    code, body = get(page)
    assert code == 200 and "Shipping label created" in body
    assert svc.health()[0]


@pytest.mark.integration
def test_a_german_order_confirmation_with_ten_items_gives_its_page_language_and_cross_sell(kafka, tracked):
    settings, svc = tracked
    t = settings.topics
    produce_records(settings, kafka, t.name("orders"), "OrderEvent", [order("o-ten", "c-ten")])
    items = [{"sku": f"sku-{i}", "name": f"Keramikbecher Nummer {i}", "price": "12.50", "quantity": 1,
              "image_url": f"https://cdn.shop.example/img/sku-{i}.jpg", "url": f"https://shop.example/p/sku-{i}"}
             for i in range(10)]
    context = json.dumps({"order_id": "o-ten", "first_name": "Jürgen", "items": items, "total": "125.00",
                          "cross_sell": [{"sku": "tea", "name": "Grüner Tee", "price": "4.00", "image_url": None,
                                          "url": "https://shop.example/tea"}]})
    assert len(context) > settings.limits.max_text_chars  # an ordinary order's context is longer than free text
    cmd = {"command_id": "cmd-ten", "customer_id": "c-ten", "to": "a@example.com", "flow": "order_confirmation",
           "step": 1, "template": "order_confirmation/step1", "locale": "de", "variant": "control",
           "category": "transactional", "send_at": T0, "expires_at": T0 + 1, "trigger_event_id": "o-ten-placed",
           "created_at": T0, "context": context}
    produce_records(settings, kafka, t.name("commands"), "EmailCommand", [cmd])
    _, body, _ = wait_for(f"http://127.0.0.1:{svc.http.port}/track/{make_token(KEY, 'o-ten', 'c-ten')}",
                          "Grüner Tee", timeout_s=15)
    assert '<html lang="de"' in body and "Das könnte Ihnen auch gefallen" in body
    assert read_topic(kafka, t.dlq("shipments"), idle_s=1.0) == []  # nothing dead-lettered


@pytest.mark.integration
def test_a_bad_token_gets_the_same_404_whether_or_not_the_order_exists(kafka, tracked):
    settings, svc = tracked
    t = settings.topics
    produce_records(settings, kafka, t.name("orders"), "OrderEvent", [order("o-de", "c-de")])
    cmd_locale = {"command_id": "cmd-de", "customer_id": "c-de", "to": "a@example.com", "flow": "order_confirmation",
                  "step": 1, "template": "order_confirmation/step1", "locale": "de", "variant": "control",
                  "category": "transactional", "send_at": T0, "expires_at": T0 + 1, "trigger_event_id": "o-de-placed",
                  "created_at": T0, "context": json.dumps({"order_id": "o-de"})}
    produce_records(settings, kafka, t.name("commands"), "EmailCommand", [cmd_locale])
    base = f"http://127.0.0.1:{svc.http.port}/track/"
    wait_for(base + make_token(KEY, "o-de", "c-de"), '<html lang="de"')  # the order's page is in German
    forged_existing = make_token(b"not-the-key", "o-de", "c-de")
    forged_missing = make_token(b"not-the-key", "o-none", "c-de")
    for headers in ({}, {"Accept-Language": "it"}):
        a, b = get(base + forged_existing, headers), get(base + forged_missing, headers)
        assert a[0] == b[0] == 404 and a[1] == b[1]
    assert get(base + make_token(KEY, "o-de", "c-other"))[1] == get(base + forged_missing)[1]  # another customer


@pytest.mark.integration
def test_on_revoke_the_builder_commits_only_the_records_it_handled(kafka, settings):
    import threading

    from confluent_kafka import Consumer, TopicPartition

    from streams.kafka.io import consumer_config
    from streams.tracking.builder import ViewBuilder
    from tests.test_tracking import create_topics, tracking_settings

    tracking_settings(settings)
    create_topics(kafka, settings)
    orders_topic = settings.topics.name("orders")
    produce_records(settings, kafka, orders_topic, "OrderEvent", [order(f"o-r{i}", "c-r") for i in range(6)])
    builder = ViewBuilder(settings, kafka)
    builder.consumer.subscribe(list(builder.logical), on_assign=builder._on_assign, on_revoke=builder._on_revoke)
    read, deadline = [], time.monotonic() + 30
    while len(read) < 6 and time.monotonic() < deadline:
        read += [m for m in builder.consumer.consume(10, 0.5) if m.error() is None and m.topic() == orders_topic]
    assert len(read) == 6
    for m in read[:2]:  # two handled; four read but not handled when the partitions go
        builder.handle(m)
    builder.consumer.close()  # revokes: flushes the two views and commits their offsets, nothing more
    check = Consumer(consumer_config(settings, kafka, settings.tracking.group_id))
    try:
        [committed] = check.committed([TopicPartition(orders_topic, read[0].partition())], timeout=10)
    finally:
        check.close()
    assert committed.offset == read[1].offset() + 1
    views_written = {r.key for r in read_topic(kafka, settings.tracking.view_topic_name(settings.topics.prefix),
                                               idle_s=1.0)}
    assert views_written == {b"o-r0", b"o-r1"}

    restarted, stop = ViewBuilder(settings, kafka), threading.Event()  # the next owner picks up the other four
    runner = threading.Thread(target=restarted.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for_views = time.monotonic() + 30
        while time.monotonic() < wait_for_views and len(views_written) < 6:
            views_written = {r.key for r in read_topic(kafka, settings.tracking.view_topic_name(
                settings.topics.prefix), idle_s=0.5)}
    finally:
        stop.set()
        runner.join(30)
    assert views_written == {f"o-r{i}".encode() for i in range(6)}
