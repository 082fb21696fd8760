"""The unsubscribe endpoint: signed links, RFC 8058 one-click POST and a confirmation page in the
recipient's language, each unsubscribe an EmailFeedback on the real broker; forged links get 403."""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from schemas import serde
from sinks.mime import unsubscribe_link
from sinks.preview import find_browser
from sinks.unsubscribe_service import UnsubscribeService
from streams.config import Settings
from streams.kafka.io import consumer_config
from streams.kafka.topics import ensure_topics, topic_specs

pytestmark = pytest.mark.integration
CMD = "3f9a1c0e7b2d4e6f8a1b2c3d4e5f6a7b"


@pytest.fixture
def service(kafka: str, settings: Settings) -> Iterator[UnsubscribeService]:
    settings.unsubscribe.secret = "a-long-random-secret-from-a-k8s-secret"
    ensure_topics(kafka, topic_specs(settings), create=True)
    svc = UnsubscribeService(settings, kafka, port=0, host="127.0.0.1", ops_port=0).start()
    yield svc
    svc.shutdown()


def link(svc: UnsubscribeService, customer: str = "c-42", locale: str = "de", purpose: str = "unsubscribe") -> str:
    return unsubscribe_link(f"http://127.0.0.1:{svc.port}/email/unsubscribe", CMD, customer,
                            key=svc.settings.unsubscribe.secret, locale=locale, purpose=purpose)


def request(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    status, text, _ = exchange(url, method, body)
    return status, text


def exchange(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def feedback(kafka: str, settings: Settings) -> list[dict]:
    """Every record on email.feedback, read until every partition reports EOF (never trusting watermarks).

    Partitions are assigned, not subscribed: no group join to wait for."""
    consumer = Consumer(consumer_config(settings, kafka, f"check-{time.monotonic_ns()}",
                                        **{"enable.partition.eof": True}))
    topic = settings.topics.name("feedback")
    out, eof, deadline = [], set(), time.monotonic() + 30
    parts = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
    try:
        while len(eof) < parts and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                continue
            out.append(serde.decode(msg.value(), "EmailFeedback").record)
    finally:
        consumer.close()
    return out


def test_one_click_post_publishes_an_unsubscribe_for_the_signed_recipient(kafka, settings, service):
    status, body = request(link(service), "POST", b"List-Unsubscribe=One-Click")
    assert (status, body) == (200, "unsubscribed")
    [rec] = feedback(kafka, settings)
    assert (rec["type"], rec["customer_id"], rec["command_id"], rec["event_id"]) == \
        ("unsubscribed", "c-42", CMD, f"unsubscribe:{CMD}")


@pytest.mark.parametrize("edit", ["customer", "command", "locale", "token", "no_token", "non_ascii_token"])
def test_a_forged_or_edited_link_gets_403_and_changes_nothing(kafka, settings, service, edit):
    url = link(service)
    forged = {"customer": url.replace("u=c-42", "u=c-43"), "command": url.replace(f"c={CMD}", "c=" + "0" * 32),
              "locale": url.replace("l=de", "l=en"), "token": url[:-3] + ("AAA" if url[-3:] != "AAA" else "BBB"),
              "no_token": url.split("&t=")[0], "non_ascii_token": url.split("&t=")[0] + "&t=%C3%A9"}[edit]
    for method, body in (("POST", b"List-Unsubscribe=One-Click"), ("GET", None)):
        status, _ = request(forged, method, body)
        assert status == 403
    assert feedback(kafka, settings) == []


def test_get_shows_a_confirmation_in_the_recipients_language_and_changes_nothing(kafka, settings, service):
    status, page = request(link(service, locale="pl"))
    assert status == 200 and '<html lang="pl">' in page and "Wypisać się z e-maili od Example Shop?" in page
    assert feedback(kafka, settings) == []  # link scanners fetch URLs; only a POST unsubscribes
    status, page = request(link(service, locale="pl"), "POST", b"confirm=1")
    assert status == 200 and "Wypisano Cię z listy" in page
    assert [r["type"] for r in feedback(kafka, settings)] == ["unsubscribed"]


@pytest.mark.skipif(find_browser() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_the_confirmation_page_renders_in_a_real_browser(service):
    browser = find_browser()
    assert browser
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                              "--dump-dom", link(service, locale="tr")], capture_output=True, text=True, timeout=120).stdout
    assert "Example Shop e-postalarından çıkmak istiyor musunuz?" in dom
    assert '<button type="submit" id="unsubscribe">Abonelikten çıkın</button>' in dom
    assert f'action="{urlsplit(link(service, locale="tr")).path}?' in dom.replace("&amp;", "&")


def test_the_keep_link_confirms_on_get_and_resubscribes_on_post(kafka, settings, service):
    status, page = request(link(service, locale="it", purpose="keep"))
    assert status == 200 and '<html lang="it">' in page and "Vuoi continuare a ricevere le email di Example Shop?" in page
    assert 'id="keep"' in page
    assert feedback(kafka, settings) == []
    status, page = request(link(service, locale="it", purpose="keep"), "POST", b"choice=keep")
    assert status == 200 and "Continuerai a ricevere email da Example Shop" in page
    [rec] = feedback(kafka, settings)
    assert (rec["type"], rec["customer_id"], rec["command_id"], rec["event_id"]) == \
        ("resubscribed", "c-42", CMD, f"keep:{CMD}")


def test_keeping_after_an_unsubscribe_does_not_claim_the_customer_is_subscribed_again(kafka, settings, service):
    url = link(service, locale="en", purpose="preferences")
    assert request(url, "POST", b"choice=unsubscribe")[0] == 200
    status, page = request(url, "POST", b"choice=keep")
    page = page.replace("&#39;", "'")
    assert status == 200 and "You stay subscribed" not in page and "You're still subscribed" not in page
    assert "this link doesn't undo an unsubscribe" in page


def test_the_preference_page_offers_both_choices_and_records_each(kafka, settings, service):
    url = link(service, locale="th", purpose="preferences")
    status, page = request(url)
    assert status == 200 and "การตั้งค่าอีเมลของคุณ" in page
    assert page.count('<form method="post"') == 2 and 'value="unsubscribe"' in page and 'value="keep"' in page
    assert request(url, "POST", b"choice=maybe")[0] == 400
    assert request(url, "POST", b"List-Unsubscribe=One-Click")[0] == 400  # not a one-click link
    assert feedback(kafka, settings) == []
    status, page = request(url, "POST", b"choice=unsubscribe")
    assert status == 200 and "ยกเลิกการรับอีเมลเรียบร้อยแล้ว" in page
    status, page = request(url, "POST", b"choice=keep")
    assert status == 200 and "ลิงก์นี้ไม่ได้สมัครรับอีเมลให้คุณใหม่" in page
    records = feedback(kafka, settings)
    assert [(r["type"], r["customer_id"], r["command_id"]) for r in records] == [
        ("unsubscribed", "c-42", CMD), ("resubscribed", "c-42", CMD)]
    assert len({r["event_id"] for r in records}) == 2


@pytest.mark.parametrize("signed_for,used_as", [("keep", "preferences"), ("preferences", "keep"),
                                                ("unsubscribe", "keep"), ("keep", "unsubscribe"),
                                                ("preferences", "unsubscribe"), ("keep", "other")])
def test_a_token_for_one_purpose_does_not_work_for_another(kafka, settings, service, signed_for, used_as):
    url = link(service, purpose=signed_for)
    url = url.replace(f"&a={signed_for}", "") if signed_for != "unsubscribe" else url
    if used_as != "unsubscribe":
        url = url.replace("&t=", f"&a={used_as}&t=")
    for method, body in (("GET", None), ("POST", b"choice=unsubscribe"), ("POST", b"List-Unsubscribe=One-Click")):
        assert request(url, method, body)[0] == 403
    assert feedback(kafka, settings) == []


def test_pages_carry_security_headers_and_ops_paths_are_only_on_the_ops_port(service):
    status, _, headers = exchange(link(service))
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert (headers["X-Frame-Options"], headers["X-Content-Type-Options"], headers["Referrer-Policy"]) == \
        ("DENY", "nosniff", "no-referrer")
    assert "Server" not in headers
    for path in ("/metrics", "/healthz", "/readyz"):
        assert request(f"http://127.0.0.1:{service.port}{path}")[0] == 403  # a list link without a token
        assert request(f"http://127.0.0.1:{service.ops.port}{path}")[0] == 200
    assert "shopmail_unsubscribe_requests_total" in request(f"http://127.0.0.1:{service.ops.port}/metrics")[1]
