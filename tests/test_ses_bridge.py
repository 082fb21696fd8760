"""SES events bridge: SNS/Firehose SES events → email.feedback; malformed → DLQ."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sinks.ses_events import BridgeError, to_feedback
from streams.kafka_io import read_topic
from streams.topics import ensure_topics, topic_specs
from tests.support.procs import settings_env

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
