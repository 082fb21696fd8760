"""SES events bridge: SES event notifications → email.feedback (malformed ones → email.feedback.dlq).

:class:`Bridge` turns one SES event (an SNS envelope or the bare event, from a file, stdin or the
demo) into a feedback record. :class:`SnsEndpoint` is the HTTP subscription side: it accepts only POSTs
whose SNS signature verifies, from an allowed topic, sent within the last ``bridge.max_message_age_s``
(see :mod:`sinks.sns_signature`), confirms subscriptions to allowed topics, and answers 403 to anything
else, producing nothing for it. :func:`sns_http_server` serves it (``POST /`` and ``GET /openapi.json``
only; health and metrics are on the ops port).
"""

from __future__ import annotations

import itertools
import json
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache
from confluent_kafka import KafkaException, Producer
from prometheus_client import Counter

from schemas import serde
from streams.runtime.dead_letters import dead_letter
from sinks.ses_events import BridgeError, to_feedback
from sinks.sns_signature import (MAX_CLOCK_SKEW_S, CertificateStore, CertificateUnavailable, SnsRejected, SnsVerifier,
                                 https_get, parse_message)
from streams.config import HttpSettings, Settings
from streams.kafka.io import producer_config
from streams.web import HttpServer, Request, Response, Route

log = logging.getLogger("shopmail.ses_bridge")
FEEDBACK = Counter("shopmail_feedback_total", "SES events turned into email.feedback", ["type"])
SNS_REJECTED = Counter("shopmail_sns_rejected_total",
                       "SNS POSTs refused (403) before anything was produced: unsigned, forged, tampered, "
                       "untrusted certificate or SubscribeURL host, topic not allowed, stale", ["reason"])
SNS_DEFERRED = Counter("shopmail_sns_deferred_total",
                       "SNS POSTs answered 503 because the signing certificate could not be fetched (network, DNS, "
                       "an AWS 5xx): SNS delivers them again", ["reason"])
SNS_REPLAYED = Counter("shopmail_sns_replayed_total",
                       "Verified SNS notifications whose MessageId was already handled within the message-age "
                       "window: answered 200, nothing written again")
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
            self.producer.produce(self.dlq, value=serde.encode("DeadLetter", dl, self.dlq))
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

    - 200: a verified Notification handled (feedback or ignored), a verified subscription message, or a
      Notification whose MessageId was already handled within the window (a replay or SNS's own
      redelivery: nothing is written again);
    - 202: verified, but its SES event is malformed → dead-lettered (SNS must not retry it);
    - 403: not a recent, validly signed SNS message from an allowed topic and certificate host — nothing
      produced;
    - 503: the signing certificate could not be fetched, or verified but Kafka (or the SubscribeURL)
      failed: SNS retries the delivery.

    MessageIds of handled Notifications are remembered for the message-age window (after it the signed
    Timestamp refuses the message anyway), at most ``remember`` of them (the oldest go first).

    ``confirm`` GETs a SubscribeURL of a verified subscription message (its topic is on the allow-list).
    """

    def __init__(self, bridge: Bridge, verifier: SnsVerifier, confirm: Callable[[str], Any],
                 remember: int = 100_000) -> None:
        self.bridge = bridge
        self.verifier = verifier
        self.confirm = confirm
        self.rejected = 0
        self.delivery_failing = False
        self._positions = itertools.count(1)
        self._lock = threading.Lock()  # one producer, one flush at a time: statuses match what was delivered
        self._handled_ids: TTLCache[str, bool] = TTLCache(maxsize=remember,
                                                          ttl=verifier.max_age_s + MAX_CLOCK_SKEW_S)

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
        except CertificateUnavailable as exc:
            SNS_DEFERRED.labels("certificate_unavailable").inc()
            log.warning("SNS POST answered 503 (SNS delivers it again): %s", exc)
            return 503
        if message["Type"] == "Notification":
            return self._deliver(body, message["MessageId"])
        return self._subscription(message)

    def _deliver(self, body: bytes, message_id: str) -> int:
        with self._lock:
            if message_id in self._handled_ids:
                SNS_REPLAYED.inc()
                log.debug("SNS message %s already handled: not written again", message_id[:80])
                return 200
            try:
                result = self.bridge.handle(body, "sns-http", next(self._positions))
                self.bridge.flush()
            except (KafkaException, BufferError, RuntimeError) as exc:
                self.delivery_failing = True
                log.error("feedback not delivered, SNS will retry: %s", exc)
                return 503
            self.delivery_failing = False
            self._handled_ids[message_id] = True
        return 202 if result == "dead_lettered" else 200

    def _subscription(self, message: dict[str, Any]) -> int:
        topic, kind = message["TopicArn"], message["Type"]
        if kind != "SubscriptionConfirmation":
            SNS_SUBSCRIPTIONS.labels("unsubscribed").inc()
            log.warning("SNS %s for %s: this endpoint no longer receives that topic", kind, topic)
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


SNS_OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "shopmail ses-bridge: SNS HTTPS subscription", "version": "1"},
    "paths": {"/": {"post": {
        "summary": "An SNS message (Notification, SubscriptionConfirmation, UnsubscribeConfirmation)",
        "parameters": [{"name": "x-amz-sns-message-type", "in": "header", "required": False,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}},
                                                      "application/json": {"schema": {"type": "object"}}}},
        "responses": {"200": {"description": "handled"}, "202": {"description": "verified; its SES event is "
                                                                                "malformed and dead-lettered"},
                      "403": {"description": "not a recent, signed message from an allowed topic"},
                      "413": {"description": "body too large"},
                      "503": {"description": "certificate not fetched, or verified but not delivered to "
                                             "Kafka: SNS retries"}}}}},
}


def sns_http_server(endpoint: SnsEndpoint, host: str, port: int, max_body_bytes: int,
                    limits: HttpSettings | None = None) -> HttpServer:
    """The SNS subscription listener: ``POST /`` → :class:`SnsEndpoint`. Health and metrics are served by
    the ops server on another port, so nothing but SNS's endpoint faces the ingress."""

    def post(request: Request) -> Response:
        return Response(endpoint.handle(request.body, request.headers.get("x-amz-sns-message-type")))

    return HttpServer(host, port, [Route("POST", "/", post, max_body_bytes)], "sns-http", limits, openapi=SNS_OPENAPI)


def endpoint_from_settings(settings: Settings, bridge: Bridge, ssl_context: ssl.SSLContext | None = None) -> SnsEndpoint:
    """The SNS endpoint as configured in ``bridge.*``: certificates and confirmations over verified HTTPS."""
    b = settings.bridge
    store = CertificateStore(lambda url: https_get(url, b.http_timeout_s, ssl_context), ttl_s=b.cert_cache_ttl_s)
    verifier = SnsVerifier(store, b.cert_host_pattern, b.topic_arns, max_age_s=b.max_message_age_s)
    return SnsEndpoint(bridge, verifier, lambda url: https_get(url, b.http_timeout_s, ssl_context, max_bytes=65536),
                       remember=b.remembered_message_ids)
