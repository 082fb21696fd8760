"""SES events bridge: SES event notifications → email.feedback (malformed ones → email.feedback.dlq).

:class:`Bridge` turns one SES event (an SNS envelope or the bare event, from a file, stdin or the
demo) into a feedback record. :class:`SnsEndpoint` is the HTTP subscription side: it accepts only POSTs
whose SNS signature verifies (see :mod:`sinks.sns_signature`), confirms subscriptions to allowed topics,
and answers 403 to anything else, producing nothing for it.
"""

from __future__ import annotations

import itertools
import json
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from confluent_kafka import KafkaException, Producer
from prometheus_client import Counter

from schemas import serde
from streams.runtime.dead_letters import dead_letter
from sinks.ses_events import BridgeError, to_feedback
from sinks.sns_signature import CertificateStore, SnsRejected, SnsVerifier, https_get, parse_message
from streams.config import Settings
from streams.kafka.io import producer_config
from streams.web import HttpListener

log = logging.getLogger("shopmail.ses_bridge")
FEEDBACK = Counter("shopmail_feedback_total", "SES events turned into email.feedback", ["type"])
SNS_REJECTED = Counter("shopmail_sns_rejected_total",
                       "SNS POSTs refused (403/413) before anything was produced: unsigned, forged, tampered, "
                       "untrusted certificate or SubscribeURL host, topic not allowed", ["reason"])
SNS_SUBSCRIPTIONS = Counter("shopmail_sns_subscriptions_total",
                            "Verified SNS subscription messages: confirmed, left for an operator, or failed",
                            ["outcome"])


class Bridge:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.topic = settings.topics.name("feedback")
        self.dlq = settings.topics.dlq("feedback")
        self.producer = Producer(producer_config(settings, bootstrap, **{"enable.idempotence": True}))
        self.counts = {"feedback": 0, "ignored": 0, "dead_lettered": 0}

    def handle(self, raw: bytes, source: str, position: int) -> str:
        try:
            record = to_feedback(json.loads(raw))
        except (BridgeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, BridgeError) else "malformed"
            detail = exc.detail if isinstance(exc, BridgeError) else f"not JSON: {exc}"
            dl = dead_letter(self.settings.limits, topic=source, partition=-1, offset=position, key=None, value=raw,
                             reason=reason, detail=detail, component="ses-bridge")
            self.producer.produce(self.dlq, value=serde.encode("DeadLetter", dl))
            self.counts["dead_lettered"] += 1
            log.debug("dead-lettered %s #%d: %s: %s", source, position, reason, detail)
            return "dead_lettered"
        if record is None:
            self.counts["ignored"] += 1
            return "ignored"
        self.producer.produce(self.topic, key=record["customer_id"].encode(), value=serde.encode("EmailFeedback", record, self.topic))
        self.counts["feedback"] += 1
        FEEDBACK.labels(record["type"]).inc()
        return "feedback"

    def flush(self) -> None:
        if self.producer.flush(30):
            raise RuntimeError("could not deliver every feedback record")


class SnsEndpoint:
    """One SNS POST → an HTTP status. Only verified messages reach the bridge or the SubscribeURL.

    - 200: a verified Notification handled (feedback or ignored), or a verified subscription message;
    - 202: verified, but its SES event is malformed → dead-lettered (SNS must not retry it);
    - 403: not a validly signed SNS message from an allowed topic and certificate host — nothing produced;
    - 503: verified, but Kafka (or the SubscribeURL) failed: SNS retries the delivery.

    ``confirm`` GETs a SubscribeURL; subscriptions are confirmed only when the verifier has a TopicArn
    allow-list (the message's topic is on it by then); otherwise an operator confirms them.
    """

    def __init__(self, bridge: Bridge, verifier: SnsVerifier, confirm: Callable[[str], Any]) -> None:
        self.bridge = bridge
        self.verifier = verifier
        self.confirm = confirm
        self.rejected = 0
        self.delivery_failing = False
        self._positions = itertools.count(1)
        self._lock = threading.Lock()  # one producer, one flush at a time: statuses match what was delivered

    def reject(self, reason: str, detail: str) -> int:
        SNS_REJECTED.labels(reason).inc()
        self.rejected += 1
        log.debug("SNS POST refused: %s: %s", reason, detail)
        return 403

    def handle(self, body: bytes, message_type_header: str | None = None) -> int:
        try:
            message = parse_message(body)
            if message_type_header is not None and message_type_header != message.get("Type"):
                raise SnsRejected("malformed", f"x-amz-sns-message-type {message_type_header!r} differs from Type")
            self.verifier.verify(message)
        except SnsRejected as exc:
            return self.reject(exc.reason, exc.detail)
        if message["Type"] == "Notification":
            return self._deliver(body)
        return self._subscription(message)

    def _deliver(self, body: bytes) -> int:
        with self._lock:
            try:
                result = self.bridge.handle(body, "sns-http", next(self._positions))
                self.bridge.flush()
            except (KafkaException, BufferError, RuntimeError) as exc:
                self.delivery_failing = True
                log.error("feedback not delivered, SNS will retry: %s", exc)
                return 503
            self.delivery_failing = False
        return 202 if result == "dead_lettered" else 200

    def _subscription(self, message: dict[str, Any]) -> int:
        topic, kind = message["TopicArn"], message["Type"]
        if kind != "SubscriptionConfirmation":
            SNS_SUBSCRIPTIONS.labels("unsubscribed").inc()
            log.warning("SNS %s for %s: this endpoint no longer receives that topic", kind, topic)
            return 200
        if not self.verifier.topic_arns:
            SNS_SUBSCRIPTIONS.labels("left_for_operator").inc()
            log.warning("SNS subscription to %s not confirmed automatically (no bridge.topic_arns allow-list): "
                        "confirm it in the SNS console if it is yours", topic)
            return 200
        try:
            url = self.verifier.check_url(message.get("SubscribeURL"), "SubscribeURL")
        except SnsRejected as exc:
            return self.reject(exc.reason, exc.detail)
        try:
            self.confirm(url)
        except OSError as exc:
            SNS_SUBSCRIPTIONS.labels("failed").inc()
            log.error("confirming the SNS subscription to %s failed (SNS will resend it): %s", topic, exc)
            return 503
        SNS_SUBSCRIPTIONS.labels("confirmed").inc()
        log.info("SNS subscription to %s confirmed", topic)
        return 200

    def health(self) -> tuple[bool, dict[str, Any]]:
        return not self.delivery_failing, {**self.bridge.counts, "rejected": self.rejected}


class SnsHttpServer(HttpListener):
    """The SNS subscription listener: POST / → :class:`SnsEndpoint`; GET /healthz for the ingress. Metrics
    are served by the ops server on another port, so they are not exposed where SNS posts."""

    def __init__(self, endpoint: SnsEndpoint, host: str, port: int, max_body_bytes: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # seconds a client may take per read: a stalled connection does not hold a thread

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self.close_connection = True
                    self._answer(411)
                elif int(length) > max_body_bytes:
                    endpoint.reject("too_large", f"Content-Length {length} > {max_body_bytes}")
                    self.close_connection = True
                    self._answer(413)
                else:
                    body = self.rfile.read(int(length))
                    self._answer(endpoint.handle(body, self.headers.get("x-amz-sns-message-type")))

            def do_GET(self) -> None:  # noqa: N802
                self._answer(200 if self.path.startswith("/healthz") else 404)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        super().__init__(host, port, Handler, "sns-http")


def endpoint_from_settings(settings: Settings, bridge: Bridge, ssl_context: ssl.SSLContext | None = None) -> SnsEndpoint:
    """The SNS endpoint as configured in ``bridge.*``: certificates and confirmations over verified HTTPS."""
    b = settings.bridge
    store = CertificateStore(lambda url: https_get(url, b.http_timeout_s, ssl_context), ttl_s=b.cert_cache_ttl_s)
    verifier = SnsVerifier(store, b.cert_host_pattern, b.topic_arns)
    return SnsEndpoint(bridge, verifier, lambda url: https_get(url, b.http_timeout_s, ssl_context, max_bytes=65536))
