"""The view builder: shop.orders, shop.shipments and email.commands → the compacted view topic.

A consumer group splits the (co-partitioned, customer-keyed) input partitions between replicas, the
way Kafka Streams splits tasks. The view of an order is written to the *same partition number* of the
view topic as its customer's input, so the member that owns input partition *p* is the only writer of
view partition *p*: on assignment it restores that partition by reading it to the end the fetch
reports (never to a ListOffsets watermark), then applies input on top. Writes are acks=all from an
idempotent producer; an input offset is committed only once the record was handled and every write
it caused is confirmed (also on revoke and on the way down), and every update is idempotent, so a crash
re-reads input and changes nothing twice.

Input is bounded like the worker's: a record the worker refuses (unreadable, too large, bad ids) is
counted and skipped here (the processors dead-letter it already), free text and line items are clamped
(:func:`streams.runtime.limits.clamp`), and a view that would still not fit ``limits.max_message_bytes``
is not written. A record the builder cannot turn into a view — too large a view, or any error while
applying it — is dead-lettered with the reason (component ``tracking-view``, on the tracking service's
dead-letter topic ``shop.shipments.dlq``; the DeadLetter names the original topic, partition and offset)
and the builder goes on with the next record.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter

from schemas import serde
from streams.config import LimitSettings, Settings
from streams.kafka.io import consumer_config, producer_config
from streams.kafka.log_reader import EOF_CONFIG, read_to_end
from streams.runtime.dead_letters import dead_letter
from streams.runtime.limits import admit, clamp, fits
from streams.tracking import view as views

log = logging.getLogger("shopmail.tracking.builder")
APPLIED = Counter("shopmail_tracking_view_updates_total", "Input records that changed a tracking view", ["topic"])
SKIPPED = Counter("shopmail_tracking_input_skipped_total", "Input records the view builder skipped", ["reason"])
DEAD_LETTERED = Counter("shopmail_tracking_input_dead_lettered_total",
                        "Input records the view builder could not apply (dead-lettered with the reason)", ["reason"])
_COMMAND_FLOWS = ("order_confirmation", "delivery_feedback")


def _command_context(limits: LimitSettings, raw: Any) -> dict[str, Any]:
    """The command's context (a JSON string), parsed first and then clamped inside: names, text, URLs and
    line items like an input record's, each cross-sell product too. Clamping the string itself would cut
    the JSON of any ordinary order (ten items are over ``limits.max_text_chars``)."""
    context = orjson.loads(raw if isinstance(raw, (str, bytes)) else b"{}")
    if not isinstance(context, dict):
        raise ValueError("the command's context is not a JSON object")
    clamp(limits, context)
    cross_sell = context.get("cross_sell")
    if isinstance(cross_sell, list):
        del cross_sell[limits.max_items:]
        for product in cross_sell:
            if isinstance(product, dict):
                clamp(limits, product)
    return context


class ViewBuilder:
    def __init__(self, settings: Settings, bootstrap: str) -> None:
        t = settings.topics
        self.settings = settings
        self.bootstrap = bootstrap
        self.logical = {t.name("orders"): "orders", t.name("shipments"): "shipments", t.name("commands"): "commands"}
        self.view_topic = settings.tracking.view_topic_name(t.prefix)
        self.dlq = t.dlq("shipments")  # the tracking service's dead-letter topic
        self.consumer = Consumer(consumer_config(settings, bootstrap, settings.tracking.group_id))
        self.producer = Producer(producer_config(settings, bootstrap, **{"enable.idempotence": True, "acks": "all"}))
        self.owned: dict[int, dict[str, dict[str, Any]]] = {}  # view partition → order id → view
        self._errors: list[str] = []
        self._handled: dict[tuple[str, int], int] = {}  # (topic, partition) → next offset, writes not yet confirmed
        self._committable: dict[tuple[str, int], int] = {}  # handled and confirmed, not yet committed
        self.restored = threading.Event()  # set after the first assignment's restore

    # ---- partitions ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in sorted({tp.partition for tp in partitions} - set(self.owned)):
            self.owned[p] = self._restore(p)
        self.restored.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was handled and confirmed (never a record read but not handled), then forget."""
        try:
            self._flush()
            self._commit(consumer)
        except (RuntimeError, KafkaException) as exc:  # the next owner re-reads from the last commit
            log.error("on revoke: handled records not committed (the next owner re-applies them): %s", exc)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for tp in gone:
            self._handled.pop(tp, None)
            self._committable.pop(tp, None)
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
        """Apply one input record; whatever happens, it counts as handled (applied, skipped or dead-lettered)."""
        try:
            self._apply(m)
        except Exception as exc:  # noqa: BLE001 - one record never stops the builder: recorded with its reason
            self._dead_letter(m, "tracking_error", f"{type(exc).__name__}: {exc}")
        self._handled[(m.topic(), m.partition())] = m.offset() + 1

    def _apply(self, m: Message) -> None:
        topic = self.logical[m.topic()]
        limits = self.settings.limits
        value = m.value() or b""
        refusal = admit(limits, topic, m.key(), len(value), None)
        try:
            rec = serde.decode(value).record if refusal is None else None
        except serde.SerdeError as exc:
            SKIPPED.labels(exc.reason).inc()
            log.debug("skipped %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), exc)
            return
        refusal = refusal or admit(limits, topic, m.key(), len(value), rec)
        if refusal is not None or rec is None:  # the processors dead-letter it
            SKIPPED.labels(refusal.reason if refusal else "unreadable").inc()
            return
        context: dict[str, Any] = {}
        if topic == "commands":
            if rec.get("flow") not in _COMMAND_FLOWS:
                return
            context = _command_context(limits, rec.pop("context", None))
            clamp(limits, rec)
            order_id = context.get("order_id")
        else:
            clamp(limits, rec)
            order_id = rec.get("order_id")
        if not order_id or not isinstance(order_id, str) or len(order_id) > limits.max_id_chars:
            SKIPPED.labels("no_order_id").inc()
            return
        state = self.owned.setdefault(m.partition(), {})
        have = state.get(order_id)
        view = views.decode(views.encode(have)) if have else views.new_view(order_id, rec["customer_id"])
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
        key, encoded = order_id.encode(), views.encode(view)
        if not fits(limits, key, encoded):
            self._dead_letter(m, "view_too_large", f"the view of order {order_id[:80]} would be {len(encoded)} "
                                                   f"bytes, over limits.max_message_bytes ({limits.max_message_bytes})")
            return
        state[order_id] = view
        APPLIED.labels(topic).inc()
        self.producer.produce(self.view_topic, key=key, value=encoded, partition=m.partition(),
                              on_delivery=self._delivered)
        log.debug("view %s rev %d from %s@%d", order_id, view["rev"], m.topic(), m.offset())

    def _dead_letter(self, m: Message, reason: str, detail: str) -> None:
        DEAD_LETTERED.labels(reason).inc()
        log.warning("%s[%d]@%d not applied to the tracking view: %s: %s", m.topic(), m.partition(), m.offset(),
                    reason, detail)
        dl = dead_letter(self.settings.limits, topic=m.topic(), partition=m.partition(), offset=m.offset(),
                         key=m.key(), value=m.value(), reason=reason, detail=detail, component="tracking-view")
        self.producer.produce(self.dlq, key=m.key(), value=serde.encode("DeadLetter", dl, self.dlq), on_delivery=self._delivered)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _flush(self) -> None:
        """Wait for every write so far; the records that caused them become committable."""
        remaining = self.producer.flush(30)
        if remaining or self._errors:
            raise RuntimeError(f"tracking view writes not confirmed ({remaining} pending; errors: {self._errors[:3]})")
        self._committable.update(self._handled)
        self._handled.clear()

    def _commit(self, consumer: Consumer) -> None:
        """Commit the offsets of handled, confirmed records (and only those)."""
        if not self._committable:
            return
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in self._committable.items()],
                        asynchronous=False)
        self._committable.clear()

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
                    self._commit(self.consumer)
        finally:
            self._handled.clear()  # read but not confirmed: never committed on the way down
            self.consumer.close()
