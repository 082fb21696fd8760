"""Verified carrier webhooks → ShipmentEvent records on shop.shipments (keyed by customer_id).

Every answer is decided here; the HTTP layer only maps it to a response:

- 401 bad or missing signature: nothing is produced, not even a dead letter (an unauthenticated body
  is never written anywhere);
- 400 malformed body: the reason, and a DeadLetter on ``shop.shipments.dlq`` (503 instead if that
  dead letter cannot be written, so the provider retries and it is recorded);
- 422 unknown tracking number: authentic and well-formed, but no order in the tracking view has this
  shipment yet (the provider's retries cover a webhook that overtakes the shop's own event);
- 503 the view is not restored yet, or the record was not confirmed (acks=all, idempotent producer)
  within ``tracking.delivery_timeout_ms``: the provider retries;
- 200 written (or already written: the provider's event id was seen and confirmed before).

The ShipmentEvent's event_id is derived from (provider, provider event id), so a redelivery the ingest
no longer remembers still carries the same id and the engine ignores it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter

from schemas import serde
from streams.runtime.dead_letters import dead_letter
from streams.config import Settings
from streams.kafka.io import producer_config
from streams.tracking import webhooks
from streams.tracking.view import ViewStore

log = logging.getLogger("shopmail.tracking.ingest")
WEBHOOKS = Counter("shopmail_tracking_webhooks_total", "Carrier webhooks by provider and answer", ["provider", "code"])


@dataclass(frozen=True)
class Answer:
    code: int
    body: dict[str, Any]


def shipment_event_id(provider: str, provider_event_id: str) -> str:
    """Stable ShipmentEvent id of a provider event (hashed: provider ids have any length and alphabet)."""
    digest = hashlib.sha256(f"{provider}\x00{provider_event_id}".encode()).hexdigest()[:32]
    return f"wh-{provider}-{digest}"[:200]


class WebhookIngest:
    def __init__(self, settings: Settings, bootstrap: str, store: ViewStore) -> None:
        self.settings = settings
        self.store = store
        self.topic = settings.topics.name("shipments")
        self.dlq = settings.topics.dlq("shipments")
        self.timeout_s = settings.tracking.delivery_timeout_ms / 1000
        self.producer = Producer(producer_config(
            settings, bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 0,
                                    "message.timeout.ms": settings.tracking.delivery_timeout_ms}))
        self._seen: OrderedDict[str, None] = OrderedDict()  # confirmed provider event ids, oldest first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="webhook-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def close(self) -> None:
        self._stop.set()
        self._poller.join(5)
        self.producer.flush(self.timeout_s)

    def handle(self, provider: str, body: bytes, signature: str | None) -> Answer:
        answer = self._handle(provider, body, signature)
        WEBHOOKS.labels(provider if answer.code != 404 else "unknown", str(answer.code)).inc()
        return answer

    def _handle(self, provider: str, body: bytes, signature: str | None) -> Answer:
        key = self.settings.tracking.webhook_key(provider)
        if not key:
            return Answer(404, {"error": "unknown_provider", "detail": f"no webhook secret for {provider!r}"})
        if not webhooks.signature_ok(provider, key, body, signature):
            log.debug("webhook from %s: bad signature", provider)
            return Answer(401, {"error": "bad_signature",
                                "detail": f"header {webhooks.signature_header(provider)} missing or wrong"})
        try:
            update = webhooks.parse(provider, body, self.settings.limits.max_id_chars)
        except webhooks.WebhookError as exc:
            return self._dead_letter(provider, body, exc)
        dedupe_key = f"{provider}\x00{update.provider_event_id}"
        with self._lock:
            if dedupe_key in self._seen:
                self._seen.move_to_end(dedupe_key)
                return Answer(200, {"status": "duplicate"})
        if not self.store.ready.is_set():
            return Answer(503, {"error": "not_ready", "detail": "tracking views are still being restored"})
        hit = self.store.by_tracking_number(update.tracking_number)
        if hit is None:
            return Answer(422, {"error": "unknown_tracking_number",
                                "detail": f"no order has a shipment with tracking number {update.tracking_number!r}"})
        view, shipment_id = hit
        shipment = view["shipments"][shipment_id]
        record = {"event_id": shipment_event_id(provider, update.provider_event_id),
                  "customer_id": view["customer_id"], "occurred_at": update.occurred_at, "type": update.status,
                  "shipment_id": shipment_id, "order_id": view["order_id"],
                  "carrier": update.carrier or shipment.get("carrier"), "tracking_number": update.tracking_number,
                  "tracking_url": update.tracking_url or shipment.get("tracking_url"), "email": None}
        error = self._write(self.topic, view["customer_id"].encode(), serde.encode("ShipmentEvent", record, self.topic))
        if error is not None:
            return Answer(503, {"error": "not_written", "detail": error})
        with self._lock:
            self._seen[dedupe_key] = None
            while len(self._seen) > self.settings.tracking.dedupe_ids:
                self._seen.popitem(last=False)
        log.debug("webhook %s/%s → %s %s", provider, update.provider_event_id, view["order_id"], update.status)
        return Answer(200, {"status": "written", "event_id": record["event_id"], "order_id": view["order_id"],
                            "shipment_status": update.status})

    def _dead_letter(self, provider: str, body: bytes, exc: webhooks.WebhookError) -> Answer:
        dl = dead_letter(self.settings.limits, topic=f"webhook:{provider}", partition=-1, offset=-1, key=None,
                         value=body, reason=exc.reason, detail=exc.detail, component="tracking-webhook")
        error = self._write(self.dlq, None, serde.encode("DeadLetter", dl, self.dlq))
        if error is not None:
            return Answer(503, {"error": "not_written", "detail": f"dead letter not written: {error}"})
        log.debug("webhook from %s dead-lettered: %s", provider, exc)
        return Answer(400, {"error": exc.reason, "detail": exc.detail})

    def _write(self, topic: str, key: bytes | None, value: bytes) -> str | None:
        """Produce and wait for the broker's acknowledgement; None when durably written, else why not."""
        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            outcome.append(err)
            done.set()

        try:
            self.producer.produce(topic, key=key, value=value, on_delivery=delivered)
        except (BufferError, KafkaException) as exc:  # queue full or a client error: not written
            return f"{type(exc).__name__}: {exc}"
        if not done.wait(self.timeout_s + 1.0):
            return f"not confirmed within {self.timeout_s:.1f}s"
        return None if outcome[0] is None else str(outcome[0])
