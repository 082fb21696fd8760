"""The view builder: shop.orders, shop.shipments and email.commands → the compacted view topic.

A consumer group splits the (co-partitioned, customer-keyed) input partitions between replicas, the
way Kafka Streams splits tasks. The view of an order is written to the *same partition number* of the
view topic as its customer's input, so the member that owns input partition *p* is the only writer of
view partition *p*: on assignment it restores that partition by reading it to the end the fetch
reports (never to a ListOffsets watermark), then applies input on top. Writes are acks=all from an
idempotent producer; input offsets are committed only after every write of the batch is confirmed,
and every update is idempotent, so a crash re-reads input and changes nothing twice.

Input the builder cannot read is counted and skipped here (the processors dead-letter it already).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter

from schemas import serde
from streams.config import Settings
from streams.kafka.io import consumer_config, producer_config
from streams.kafka.log_reader import EOF_CONFIG, read_to_end
from streams.tracking import view as views

log = logging.getLogger("shopmail.tracking.builder")
APPLIED = Counter("shopmail_tracking_view_updates_total", "Input records that changed a tracking view", ["topic"])
SKIPPED = Counter("shopmail_tracking_input_skipped_total", "Input records the view builder skipped", ["reason"])
_COMMAND_FLOWS = ("order_confirmation", "delivery_feedback")


class ViewBuilder:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        t = settings.topics
        self.settings = settings
        self.bootstrap = bootstrap
        self.logical = {t.name("orders"): "orders", t.name("shipments"): "shipments", t.name("commands"): "commands"}
        self.view_topic = settings.tracking.view_topic_name(t.prefix)
        self.consumer = Consumer(consumer_config(settings, bootstrap, settings.tracking.group_id))
        self.producer = Producer(producer_config(settings, bootstrap, **{"enable.idempotence": True, "acks": "all"}))
        self.owned: dict[int, dict[str, dict[str, Any]]] = {}  # view partition → order id → view
        self._errors: list[str] = []
        self.restored = threading.Event()  # set after the first assignment's restore

    # ---- partitions ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in sorted({tp.partition for tp in partitions} - set(self.owned)):
            self.owned[p] = self._restore(p)
        self.restored.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flush()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:  # nothing consumed since the last commit
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise
        for p in {tp.partition for tp in partitions}:
            self.owned.pop(p, None)

    def _restore(self, partition: int) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = {}

        def handle(m: Message) -> None:
            key = (m.key() or b"").decode()
            if m.value() is None:
                state.pop(key, None)
            else:
                state[key] = views.decode(m.value())

        c = Consumer(consumer_config(self.settings, self.bootstrap, self.settings.tracking.group_id + "-restore",
                                     **EOF_CONFIG))
        try:
            read_to_end(c, [TopicPartition(self.view_topic, partition, OFFSET_BEGINNING)], handle,
                        self.settings.tracking.restore_timeout_s, f"tracking view partition {partition}")
        finally:
            c.close()
        log.info("restored %d tracking views of partition %d", len(state), partition)
        return state

    # ---- records ------------------------------------------------------------------------------
    def handle(self, m: Message) -> None:
        topic = self.logical[m.topic()]
        try:
            rec = serde.decode(m.value()).record
        except serde.SerdeError as exc:
            SKIPPED.labels(exc.reason).inc()
            log.debug("skipped %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), exc)
            return
        context: dict[str, Any] = {}
        if topic == "commands":
            if rec.get("flow") not in _COMMAND_FLOWS:
                return
            context = orjson.loads(rec["context"])
            order_id = context.get("order_id")
        else:
            order_id = rec.get("order_id")
        if not order_id:
            SKIPPED.labels("no_order_id").inc()
            return
        state = self.owned.setdefault(m.partition(), {})
        view = state.get(order_id) or views.new_view(order_id, rec["customer_id"])
        if view["customer_id"] != rec["customer_id"]:  # another customer's event never joins this order
            SKIPPED.labels("customer_mismatch").inc()
            log.debug("order %s belongs to another customer; %s@%d skipped", order_id, m.topic(), m.offset())
            return
        if topic == "orders":
            changed = views.apply_order(view, rec)
        elif topic == "shipments":
            changed = views.apply_shipment(view, rec)
        else:
            changed = views.apply_command(view, rec, context)
        if not changed:
            return
        state[order_id] = view
        APPLIED.labels(topic).inc()
        self.producer.produce(self.view_topic, key=order_id.encode(), value=views.encode(view),
                              partition=m.partition(), on_delivery=self._delivered)
        log.debug("view %s rev %d from %s@%d", order_id, view["rev"], m.topic(), m.offset())

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _flush(self) -> None:
        remaining = self.producer.flush(30)
        if remaining or self._errors:
            raise RuntimeError(f"tracking view writes not confirmed ({remaining} pending; errors: {self._errors[:3]})")

    # ---- loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.consumer.subscribe(list(self.logical), on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not stop.is_set():
                msgs = self.consumer.consume(500, 0.1)
                data = [m for m in msgs if m.error() is None]
                for m in msgs:
                    if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", m.error())
                for m in data:
                    self.handle(m)
                if data:
                    self._flush()
                    self.consumer.commit(asynchronous=False)
        finally:
            self.consumer.close()
