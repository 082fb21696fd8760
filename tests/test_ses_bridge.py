"""SES events bridge: SNS/Firehose SES events → email.feedback; malformed → DLQ; only SNS-signed POSTs
reach the topic (forged, tampered or untrusted ones get 403 and produce nothing)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from schemas import serde
from sinks.ses_bridge import Bridge, SnsEndpoint, sns_http_server
from sinks.ses_events import BridgeError, to_feedback
from sinks.sns_signature import CertificateStore, SnsVerifier, https_get
from streams.config import Settings
from streams.kafka.io import produce_records, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.procs import CliProcess, settings_env, wait_for
from tests.support.sink import point_at_ses, running_sink, verify_sender
from tests.support.sns import CERT_URL, TOPIC, Signer, loopback_https, notification, sns_time, subscription

MAIL = {"messageId": "0102-abc", "timestamp": "2026-11-24T10:00:00.000Z",
        "tags": {"command_id": ["cmd-1"], "customer_id": ["cust-7"], "flow": ["abandoned_cart"]}}


def event(kind: str, **detail) -> dict:
    key = kind[0].lower() + kind[1:]
    return {"eventType": kind, "mail": MAIL, key: {"timestamp": "2026-11-24T10:05:00.000Z", **detail}}


def sns(inner: dict) -> dict:
    return {"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:eu-west-1:1:ses",
            "Message": json.dumps(inner)}


def test_ses_events_map_to_feedback_joined_by_the_sends_tags():
    bounce = to_feedback(sns(event("Bounce", bounceType="Permanent")))
    assert bounce["type"] == "bounced" and bounce["bounce_type"] == "permanent"
    assert bounce["customer_id"] == "cust-7" and bounce["command_id"] == "cmd-1" and bounce["message_id"] == "0102-abc"
    assert bounce["occurred_at"] == 1795514700000
    assert to_feedback(event("Bounce", bounceType="Transient"))["bounce_type"] == "transient"
    click = to_feedback(event("Click", link="https://shop.example.com/cart/k"))
    assert click["type"] == "clicked" and click["link"] == "https://shop.example.com/cart/k"
    assert [to_feedback(event(k))["type"] for k in ("Delivery", "Open", "Complaint", "Subscription")] == \
        ["delivered", "opened", "complained", "unsubscribed"]
    assert to_feedback(event("Send")) is None and to_feedback({"Type": "SubscriptionConfirmation"}) is None
    assert to_feedback(event("Open"))["event_id"] == to_feedback(event("Open"))["event_id"]  # replay-stable


@pytest.mark.parametrize("bad,reason", [
    ({"Type": "Notification", "Message": "{oops"}, "malformed"),
    ({"eventType": "Teleport", "mail": MAIL}, "malformed"),
    ({"eventType": "Open", "mail": {"messageId": "m", "tags": {}}, "open": {"timestamp": "2026-01-01T00:00:00Z"}},
     "untagged"),
    ({"eventType": "Open", "mail": MAIL, "open": {"timestamp": "yesterday"}}, "malformed"),
])
def test_malformed_notifications_are_typed_errors(bad, reason):
    with pytest.raises(BridgeError) as err:
        to_feedback(bad)
    assert err.value.reason == reason


@pytest.mark.integration
def test_the_bridge_command_writes_feedback_and_dead_letters_the_rest(kafka, settings, tmp_path):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    src = tmp_path / "ses-events.jsonl"
    src.write_text("\n".join([json.dumps(sns(event("Bounce", bounceType="Permanent"))), "not json at all",
                              json.dumps(event("Send")), json.dumps(event("Click", link="https://x"))]) + "\n")
    run = subprocess.run([sys.executable, "-m", "streams.cli", "ses-bridge", "--input", str(src)],
                         env=settings_env(settings, kafka), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"feedback": 2, "ignored": 1, "dead_lettered": 1}
    fb = [r.decoded().record for r in read_topic(kafka, settings.topics.name("feedback"), expect=2, timeout_s=15)]
    assert sorted(f["type"] for f in fb) == ["bounced", "clicked"] and {f["customer_id"] for f in fb} == {"cust-7"}
    (dl,) = [r.decoded().record for r in read_topic(kafka, settings.topics.dlq("feedback"), expect=1, timeout_s=15)]
    assert dl["original_value"] == b"not json at all" and dl["offset"] == 2 and dl["error"] == "malformed"


# ---- SNS HTTP endpoint: signatures -------------------------------------------------------------------

@pytest.fixture(scope="module")
def aws_sns() -> Signer:
    """Plays Amazon SNS: its certificate is what CERT_URL (an sns.eu-west-1.amazonaws.com URL) serves."""
    return Signer("sns.amazonaws.com").issue()


def hard_bounce(customer: str) -> dict:
    return {"eventType": "Bounce", "bounce": {"bounceType": "Permanent", "timestamp": "2026-11-24T10:05:00.000Z"},
            "mail": {"messageId": f"0102-{customer}", "timestamp": "2026-11-24T10:00:00.000Z",
                     "tags": {"command_id": [f"cmd-{customer}"], "customer_id": [customer]}}}


@contextlib.contextmanager
def sns_endpoint(settings: Settings, kafka: str, aws: Signer, topics: tuple[str, ...] = (TOPIC,),
                 confirm: Callable[[str], Any] = lambda url: None, https_port: int = 443,
                 fetch: Callable[[str], bytes] | None = None) -> Iterator[tuple[SnsEndpoint, str]]:
    """The bridge's real HTTP endpoint on loopback; the certificate at CERT_URL is served from memory
    (unless ``fetch`` stands in for the download)."""
    def served(url: str) -> bytes:
        if url != CERT_URL:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)  # type: ignore[arg-type]
        return aws.pem

    verifier = SnsVerifier(CertificateStore(fetch or served), settings.bridge.cert_host_pattern, topics,
                           max_age_s=settings.bridge.max_message_age_s, https_port=https_port)
    endpoint = SnsEndpoint(Bridge(settings, kafka), verifier, confirm)
    server = sns_http_server(endpoint, "127.0.0.1", 0, settings.bridge.max_body_bytes).start()
    try:
        yield endpoint, f"http://127.0.0.1:{server.port}/"
    finally:
        server.shutdown()


def post(url: str, message: dict | bytes, headers: dict[str, str] | None = None) -> int:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    kind = {} if isinstance(message, bytes) else {"x-amz-sns-message-type": str(message.get("Type"))}
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "text/plain; charset=UTF-8", **kind, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def order_confirmation(customer: str) -> dict:
    now = int(time.time() * 1000)
    context = {"order_id": f"o-{customer}", "total": "12.00", "currency": "EUR", "cross_sell": [],
               "items": [{"sku": "S", "name": "Mug", "price": "12.00", "quantity": 1, "image_url": None, "url": None}]}
    return serde.from_json("EmailCommand", {
        "command_id": f"order-{customer}", "customer_id": customer, "to": f"{customer}@example.com",
        "flow": "order_confirmation", "step": 1, "template": "order_confirmation/step1", "category": "transactional",
        "send_at": now, "expires_at": now + 3_600_000, "context": json.dumps(context), "trigger_event_id": f"ev-{customer}",
        "created_at": now})


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("shopmail_sns_rejected_total", {"reason": reason}) or 0.0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.integration
def test_a_forged_hard_bounce_does_not_suppress_the_victims_next_order_confirmation(kafka, moto_ses, settings, aws_sns):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    point_at_ses(settings, moto_ses.endpoint_url)
    verify_sender(settings, moto_ses.endpoint_url)
    attacker = Signer("sns.amazonaws.com").issue()  # a key of its own; cannot make SNS's certificate hold it
    before = {r: rejected(r) for r in ("unsigned", "bad_signature", "untrusted_url")}
    with sns_endpoint(settings, kafka, aws_sns) as (endpoint, url):
        forged = {
            "unsigned": notification(hard_bounce("victim")),
            "signed by another key, SNS's certificate URL": attacker.sign(notification(hard_bounce("victim")), "2"),
            "certificate on the attacker's host": attacker.sign(
                notification(hard_bounce("victim")), "1", cert_url="https://sns.attacker.example.com/cert.pem"),
            "a genuine message with its SES event swapped": dict(
                aws_sns.sign(notification(hard_bounce("someone")), "2"), Message=json.dumps(hard_bounce("victim"))),
        }
        assert {what: post(url, m) for what, m in forged.items()} == {what: 403 for what in forged}
        assert post(url, aws_sns.sign(notification(hard_bounce("bouncer-v1")), "1")) == 200
        assert post(url, aws_sns.sign(notification(hard_bounce("bouncer-v2"), subject="SES"), "2")) == 200
        assert endpoint.rejected == 4 and endpoint.health()[0]
    assert {r: rejected(r) - before[r] for r in before} == {"unsigned": 1, "bad_signature": 2, "untrusted_url": 1}
    feedback = [r.decoded().record for r in read_topic(kafka, settings.topics.name("feedback"), idle_s=1.5)]
    assert sorted((f["customer_id"], f["type"], f["bounce_type"]) for f in feedback) == [
        ("bouncer-v1", "bounced", "permanent"), ("bouncer-v2", "bounced", "permanent")]
    with running_sink(settings, kafka):
        produce_records(settings, kafka, settings.topics.name("commands"), "EmailCommand",
                        [order_confirmation(c) for c in ("victim", "bouncer-v1", "bouncer-v2")])
        outs = read_topic(kafka, settings.topics.name("outcomes"), expect=3, timeout_s=30)
    assert {o["customer_id"]: (o["outcome"], o["reason"]) for o in (r.decoded().record for r in outs)} == {
        "victim": ("sent", None), "bouncer-v1": ("suppressed", "hard_bounced"),
        "bouncer-v2": ("suppressed", "hard_bounced")}


def complaint(customer: str) -> dict:
    return {"eventType": "Complaint", "complaint": {"timestamp": "2026-11-24T10:05:00.000Z",
                                                     "complaintFeedbackType": "abuse"},
            "mail": {"messageId": f"0102-{customer}", "timestamp": "2026-11-24T10:00:00.000Z",
                     "tags": {"command_id": [f"cmd-{customer}"], "customer_id": [customer]}}}


@pytest.mark.integration
def test_a_validly_signed_complaint_replayed_from_another_accounts_topic_suppresses_nobody(kafka, settings, aws_sns):
    """SNS signs every account's messages alike: an attacker publishes a forged SES complaint to a topic of
    their own, subscribes to it, and replays the message SNS signed for them to our endpoint."""
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    foreign = "arn:aws:sns:eu-west-1:666666666666:attacker-topic"
    before = {r: rejected(r) for r in ("topic", "stale")}
    with sns_endpoint(settings, kafka, aws_sns) as (endpoint, url):
        replayed = {
            "from a foreign topic": aws_sns.sign(notification(complaint("victim"), topic=foreign), "2"),
            "from our topic, signed 2 h ago": aws_sns.sign(
                notification(complaint("victim"), timestamp=sns_time(2 * 3600)), "2"),
            "from our topic, dated an hour ahead": aws_sns.sign(
                notification(complaint("victim"), timestamp=sns_time(-3600)), "1"),
        }
        assert {what: post(url, m) for what, m in replayed.items()} == {what: 403 for what in replayed}
        assert post(url, aws_sns.sign(notification(complaint("complainer")), "2")) == 200
    assert {r: rejected(r) - before[r] for r in before} == {"topic": 1, "stale": 2}
    feedback = [r.decoded().record for r in read_topic(kafka, settings.topics.name("feedback"), idle_s=1.5)]
    assert [(f["customer_id"], f["type"]) for f in feedback] == [("complainer", "complained")]


@pytest.mark.integration
def test_only_verified_subscriptions_to_allowed_topics_are_confirmed_through_their_subscribe_url(
        kafka, settings, aws_sns, tmp_path):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    # the loopback server stands in for sns.<region>.amazonaws.com: its host joins the allowed pattern
    settings.bridge.cert_host_pattern = r"^(localhost|sns\.[a-z0-9-]+\.amazonaws\.com)$"
    with loopback_https({"/confirm": b"<ConfirmSubscriptionResponse/>"}, tmp_path) as aws:
        def confirm(url: str) -> bytes:
            return https_get(url, 5.0, aws.client_context)

        good = aws_sns.sign(subscription(f"{aws.url}/confirm?Action=ConfirmSubscription&Token=t1"), "2")
        port = int(aws.url.rsplit(":", 1)[1])  # stands in for SNS's 443
        with sns_endpoint(settings, kafka, aws_sns, confirm=confirm, https_port=port) as (_, url):
            assert post(url, good) == 200
            assert aws.requests == ["/confirm?Action=ConfirmSubscription&Token=t1"]
            ip_host = aws.url.replace("localhost", "127.0.0.1")  # same server, host outside the pattern
            refused = {
                "forged": Signer("sns.amazonaws.com").issue().sign(subscription(f"{aws.url}/confirm?Token=t2"), "2"),
                "SubscribeURL host not allowed": aws_sns.sign(subscription(f"{ip_host}/confirm?Token=t3"), "2"),
                "topic not allowed": aws_sns.sign(subscription(f"{aws.url}/confirm?Token=t4", topic=TOPIC + "-x"), "1"),
            }
            assert {what: post(url, m) for what, m in refused.items()} == {what: 403 for what in refused}
            assert post(url, aws_sns.sign(subscription(f"{aws.url}/gone?Token=t5"), "1")) == 503  # SNS resends it
            assert post(url, aws_sns.sign(subscription(f"{aws.url}/confirm?Token=t6",
                                                       kind="UnsubscribeConfirmation"), "1")) == 200
        assert aws.requests == ["/confirm?Action=ConfirmSubscription&Token=t1", "/gone?Token=t5"]
    assert read_topic(kafka, settings.topics.name("feedback"), idle_s=1.0) == []


@pytest.mark.integration
def test_the_bridge_command_binds_loopback_by_default_and_refuses_unsigned_posts(kafka, settings, tmp_path):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    env = settings_env(settings, kafka, SHOPMAIL_BRIDGE__WEB_PORT="0", SHOPMAIL_BRIDGE__TOPIC_ARNS=TOPIC)
    proc = CliProcess(["ses-bridge", "--http-port", "0"], env, tmp_path / "bridge.log")
    try:
        def listeners() -> tuple[re.Match, re.Match] | None:
            sns, ops = (re.search(rf"{what} on (\S+):(\d+)", proc.log()) for what in ("SNS endpoint", "ops http"))
            return (sns, ops) if sns and ops else None

        found = wait_for(listeners, 30, what="the bridge's listeners")
        (sns_host, sns_port), (ops_host, ops_port) = found[0].groups(), found[1].groups()
        assert sns_host == ops_host == "127.0.0.1"
        url = f"http://127.0.0.1:{sns_port}/"
        assert post(url, notification(hard_bounce("victim"))) == 403
        assert post(url, b"x" * 10, headers={"Content-Length": str(2 << 20)}) == 413
        for path in ("metrics", "healthz", "readyz"):  # served on the ops port only, never where SNS posts
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + path, timeout=10)
            assert err.value.code == 404
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=10).read().decode()
        assert 'shopmail_sns_rejected_total{reason="unsigned"} 1.0' in metrics
        assert 'shopmail_http_refused_total{listener="sns-http",reason="too_large"} 1.0' in metrics
    finally:
        assert proc.terminate() == 0, proc.log()
    assert read_topic(kafka, settings.topics.name("feedback"), idle_s=1.0) == []


@pytest.mark.integration
def test_a_certificate_download_failure_answers_503_so_sns_delivers_again(kafka, settings, aws_sns):
    """A short DNS or AWS failure while fetching the signing certificate must not lose a real complaint:
    SNS retries a 5xx, never a 4xx."""
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    down = [True]

    def fetch(url: str) -> bytes:
        if down[0]:
            raise OSError(f"{url}: Temporary failure in name resolution")
        return aws_sns.pem

    before = (sample("shopmail_sns_deferred_total", reason="certificate_unavailable"), rejected("certificate"))
    message = aws_sns.sign(notification(complaint("complainer")), "2")
    with sns_endpoint(settings, kafka, aws_sns, fetch=fetch) as (_, url):
        assert post(url, message) == 503
        assert (sample("shopmail_sns_deferred_total", reason="certificate_unavailable") - before[0],
                rejected("certificate") - before[1]) == (1, 0)  # counted apart from the refusals
        down[0] = False
        assert post(url, message) == 200  # SNS's redelivery
    feedback = [r.decoded().record for r in read_topic(kafka, settings.topics.name("feedback"), idle_s=1.5)]
    assert [(f["customer_id"], f["type"]) for f in feedback] == [("complainer", "complained")]


@pytest.mark.integration
def test_a_signed_message_replayed_within_the_window_is_answered_200_and_written_once(kafka, settings, aws_sns):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    before = sample("shopmail_sns_replayed_total")
    message = aws_sns.sign(notification(complaint("complainer")), "2")
    with sns_endpoint(settings, kafka, aws_sns) as (_, url):
        assert [post(url, message) for _ in range(3)] == [200, 200, 200]
        assert post(url, aws_sns.sign(notification(complaint("other")), "1")) == 200  # another MessageId
    assert sample("shopmail_sns_replayed_total") - before == 2
    feedback = [r.decoded().record for r in read_topic(kafka, settings.topics.name("feedback"), idle_s=1.5)]
    assert [(f["customer_id"], f["type"]) for f in feedback] == [("complainer", "complained"), ("other", "complained")]


@pytest.mark.parametrize("arns", ["", "[]", '[""]', "shopmail-ses-events"], ids=["unset", "brackets", "quoted_empty", "bare_name"])
def test_the_bridge_command_refuses_to_serve_sns_without_allowed_topics(settings, tmp_path, arns):
    env = settings_env(settings, "127.0.0.1:1", SHOPMAIL_BRIDGE__TOPIC_ARNS=arns)
    run = subprocess.run([sys.executable, "-m", "streams.cli", "ses-bridge", "--http-port", "0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "bridge.topic_arns" in run.stdout + run.stderr
