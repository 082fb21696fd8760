"""The ledger and the commit: one transaction per step of the sink's loop, and what a restart finds.

A step's transaction holds the final outcomes (with their dead letters and coupons) of everything
settled since the last step, the ledger entries (final states, parked commands, the ``pending`` entries
of the commands about to be handed to SES, tombstones) and the committable offsets of
``email.commands``. Ledger memory follows only once the transaction is committed.

**Written in three acknowledged phases.** Apache Kafka aborts the open transaction of a producer that
died; Tansu 0.6.0 *commits* it when the same transactional id re-initialises (docs/runtime.md), and a
producer killed while its records were on the wire leaves any subset of them. So a transaction is
written so that every prefix of it is safe:

1. outcomes, dead letters and coupons — flushed (acknowledged) before
2. the ledger entries — flushed before
3. the offsets, then the commit.

A ledger entry is therefore never visible without the outcome it records, and an offset never moves
past a command whose ledger entry is missing. What a prefix can leave is an outcome whose final
ledger entry did not arrive: its command is still ``pending`` in the ledger. On assignment the sink
looks up the outcomes written since its pending entries (:func:`outcomes_since`) and settles those
commands from there, so a command gets exactly one outcome even then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import Counter

from schemas import serde
from sinks import coupons
from sinks.intake import PartitionOffsets, Work, now_ms
from sinks.stores import Ledger, Parked
from streams.config import KafkaSettings, Settings
from streams.kafka.io import client_config
from streams.runtime.dead_letters import dead_letter
from streams.shared_metrics import DLQ

log = logging.getLogger("shopmail.sink")

SENDS = Counter("shopmail_sink_sends_total", "Commands settled by the sink", ["outcome", "reason"])
TRANSACTIONS = Counter("shopmail_sink_transactions_total", "Transactions the sink committed (outcomes, ledger, offsets)")

FINAL = ("sent", "suppressed", "failed")
FLUSH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SinkTopics:
    commands: str
    outcomes: str
    coupons: str
    ledger: str
    dlq: str


@dataclass
class Step:
    """What one transaction settles, parks and hands to SES."""

    done: list[Work] = field(default_factory=list)  # settled since the last step (or back to waiting: unpend)
    parks: list[Work] = field(default_factory=list)  # to park until their send_at
    to_send: list[Work] = field(default_factory=list)  # about to be handed to SES: pending first
    tombstones: list[tuple[int, str]] = field(default_factory=list)  # (ledger partition, command_id) past retention
    recovered: list[tuple[int, str, str]] = field(default_factory=list)  # (ledger partition, command_id, state)

    def __bool__(self) -> bool:
        return bool(self.done or self.parks or self.to_send or self.tombstones or self.recovered)


@dataclass
class Committed:
    settled: list[str]  # command ids with a final ledger entry now
    waiting: list[Work]  # refused by SES for now (paused): back to waiting


class Commit:
    def __init__(self, settings: Settings, topics: SinkTopics, producer: Producer, ledger: Ledger) -> None:
        self.settings = settings
        self.topics = topics
        self.producer = producer
        self.ledger = ledger
        self.settled = 0
        self.transactions = 0  # committed by this sink

    def run(self, step: Step, offsets: dict[int, PartitionOffsets], group_metadata: object) -> Committed:
        """One transaction for ``step``; raises ``KafkaException`` (or ``RuntimeError`` if the broker does
        not acknowledge a phase) — nothing of it is then in the ledger's memory."""
        p, ledger = self.producer, self.ledger
        at = now_ms()
        p.begin_transaction()
        for w in step.done:  # phase 1: the facts
            self._emit(w, at)
        self._flush("outcomes")
        for w in step.parks:  # phase 2: the ledger
            self._produce_parked(w, "parked", at)
        for w in step.to_send:
            if w.parked:
                self._produce_parked(w, "sending", at)
            else:
                self._produce_entry(w.command_id, ledger.partition_of(w.partition), "pending", None, None, at)
        for w in step.done:
            self._settle_entry(w, at)
        for part, key, state in step.recovered:
            self._produce_entry(key, part, state, None, "found_in_outcomes", at)
        for part, key in step.tombstones:
            p.produce(self.topics.ledger, key=key.encode(), value=None, partition=part)
        self._flush("ledger entries")
        for w in step.done + step.parks:  # phase 3: the offsets
            po = offsets.get(w.partition)
            if po is not None and w.outcome != "unpend":
                po.open.discard(w.offset)
        tps = [TopicPartition(self.topics.commands, part, po.committable())
               for part, po in offsets.items() if po.next_offset >= 0]
        if tps:
            p.send_offsets_to_transaction(tps, group_metadata, 30)
        p.commit_transaction(60)
        self.transactions += 1
        TRANSACTIONS.inc()
        return self._remember(step, at)

    def _flush(self, what: str) -> None:
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while self.producer.flush(1.0):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} of the transaction not acknowledged in {FLUSH_TIMEOUT_S:.0f} s")

    def _remember(self, step: Step, at: int) -> Committed:
        ledger = self.ledger
        out = Committed([], [])
        for w in step.parks:
            w.parked = True
            ledger.record_parked(ledger.partition_of(w.partition), self.parked_record(w, "parked"))
        for w in step.to_send:
            if w.parked:
                ledger.record_parked(ledger.partition_of(w.partition), self.parked_record(w, "sending"))
            else:
                ledger.record(ledger.partition_of(w.partition), w.command_id, "pending", at)
        for w in step.done:
            lp = ledger.partition_of(w.partition)
            if w.outcome in FINAL and w.command_id:
                ledger.record(lp, w.command_id, w.outcome, at)
                out.settled.append(w.command_id)
            elif w.outcome == "unpend":
                if w.parked:
                    ledger.record_parked(lp, self.parked_record(w, "parked"))
                else:
                    ledger.forget(lp, w.command_id)
                w.outcome, w.reason = "", None
                out.waiting.append(w)
        for part, key, state in step.recovered:
            ledger.record(part, key, state, at)
        for part, key in step.tombstones:
            ledger.forget(part, key)
        return out

    @staticmethod
    def parked_record(w: Work, state: str) -> Parked:
        return Parked(w.command_id, state, w.value, w.partition, w.offset, w.command["send_at"])

    def _produce_parked(self, w: Work, state: str, at: int) -> None:
        rec = {"command_id": w.command_id, "state": state, "command": w.value, "commands_partition": w.partition,
               "commands_offset": w.offset, "send_at": w.command["send_at"], "at": at}
        self.producer.produce(self.topics.ledger, key=w.command_id.encode(),
                              value=serde.encode("SinkParkedCommand", rec), partition=self.ledger.partition_of(w.partition))

    def _produce_entry(self, command_id: str, ledger_partition: int, state: str, message_id: str | None,
                       reason: str | None, at: int) -> None:
        rec = {"command_id": command_id, "state": state, "message_id": message_id, "reason": reason, "at": at}
        self.producer.produce(self.topics.ledger, key=command_id.encode(), value=serde.encode("SinkLedgerEntry", rec),
                              partition=ledger_partition)

    def _settle_entry(self, w: Work, at: int) -> None:
        """The ledger side of a settled command: its final entry (or the withdrawal of its pending)."""
        lp = self.ledger.partition_of(w.partition)
        if w.outcome == "unpend":  # paused before SES took it: withdraw the pending (or re-park)
            if w.parked:
                self._produce_parked(w, "parked", at)
            else:
                self.producer.produce(self.topics.ledger, key=w.command_id.encode(), value=None, partition=lp)
        elif w.outcome != "skip" and w.command.get("command_id") and w.command.get("flow"):
            self._produce_entry(w.command_id, lp, w.outcome, w.message_id, w.reason, at)

    def _emit(self, w: Work, at: int) -> None:
        """The facts of a settled command: its dead letter, its outcome and the coupon it carried."""
        if w.outcome == "unpend":
            return
        p, cmd = self.producer, w.command
        if w.dead_letter:
            dl = dead_letter(self.settings.limits, topic=w.topic, partition=w.partition, offset=w.offset, key=w.key,
                             value=w.value, reason=w.error_code or (w.reason or "failed").split(":")[0],
                             detail=w.reason or "", component="sink", failed_at=at)
            p.produce(self.topics.dlq, key=dl["original_key"], value=serde.encode("DeadLetter", dl, self.topics.dlq))
            DLQ.labels(self.topics.dlq).inc()
        SENDS.labels(w.outcome, (w.error_code or w.reason or "").split(":")[0]).inc()
        if w.outcome == "skip" or not cmd.get("command_id") or not cmd.get("flow"):
            return  # a duplicate, or nothing decodable to report an outcome for (the DLQ record has it)
        outcome = {"command_id": cmd["command_id"], "customer_id": cmd["customer_id"], "outcome": w.outcome,
                   "message_id": w.message_id, "reason": w.reason, "flow": cmd["flow"], "step": cmd["step"],
                   "variant": cmd["variant"], "category": cmd["category"], "occurred_at": at,
                   "attempts": max(w.attempts, 1 if w.outcome == "sent" else 0)}
        p.produce(self.topics.outcomes, key=(cmd["customer_id"] or cmd["command_id"]).encode(),
                  value=serde.encode("EmailOutcome", outcome, self.topics.outcomes))
        coupon = coupons.issued(self.settings.coupons, cmd, at) if w.outcome == "sent" else None
        if coupon is not None:  # the code the customer received: the shop's checkout may now honour it
            p.produce(self.topics.coupons, key=coupon["code"].encode(),
                      value=serde.encode("CouponIssued", coupon, self.topics.coupons))
        self.settled += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s/%d to %s (%s)", w.outcome, cmd["command_id"], cmd["flow"], cmd["step"], cmd["to"],
                      w.message_id or w.reason)


def outcomes_since(bootstrap: str, kafka: KafkaSettings, group: str, topic: str, since_ms: int, ids: Iterable[str],
                   timeout_s: float = 120.0) -> dict[str, str]:
    """command_id → outcome of those ``ids`` that have a committed outcome in ``topic`` at or after
    ``since_ms`` (read_committed, from the offsets of that time to the end of every partition). ``group``
    only names the reader (it assigns partitions and commits nothing)."""
    wanted = set(ids)
    found: dict[str, str] = {}
    if not wanted:
        return found
    c = Consumer(client_config(kafka, bootstrap, **{
        "group.id": group, "enable.auto.commit": False, "enable.partition.eof": True,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest"}))
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {topic}"))
        starts = c.offsets_for_times([TopicPartition(topic, p, since_ms) for p in sorted(md.partitions)], 10)
        todo = [tp for tp in starts if tp.offset >= 0]  # -1: nothing written since then
        if not todo:
            return found
        c.assign(todo)
        open_parts = {tp.partition for tp in todo}
        deadline = time.monotonic() + timeout_s
        while open_parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} since {since_ms} took more than {timeout_s:.0f} s")
            for m in c.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(m.partition())
                        continue
                    raise KafkaException(m.error())
                if m.timestamp()[1] < since_ms:  # offsets_for_times is a hint (Tansu may start earlier)
                    continue
                try:
                    rec = serde.decode(m.value(), "EmailOutcome", topic).record
                except serde.SerdeError:
                    continue  # not ours to judge here: only the ids we wrote matter
                if rec["command_id"] in wanted:
                    found[rec["command_id"]] = rec["outcome"]
        return found
    finally:
        c.close()
