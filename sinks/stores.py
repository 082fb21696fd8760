"""What the sink must know before sending: the idempotency ledger and the audience (consent and
suppression). Both are read from compacted/feedback topics with plain assign-and-read consumers (no
consumer group: every sink replica needs all of it), and caught up on demand."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from schemas import serde

log = logging.getLogger("shopmail.sink.stores")


class TopicFollower:
    """Reads every partition of some topics from the beginning and can catch up to the current end."""

    def __init__(self, bootstrap: str, topics: list[str], group: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                                   "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                   "fetch.wait.max.ms": 50})  # the default 500 ms stalls every catch-up
        md = self._consumer.list_topics(timeout=10)
        self._tps = [TopicPartition(t, p, 0) for t in topics if t in md.topics for p in md.topics[t].partitions]
        self._consumer.assign(self._tps)
        self._lock = threading.Lock()

    def catch_up(self, handle: Any, timeout_s: float = 60.0) -> int:
        """Apply every record up to the ends as of now; returns the number of records applied."""
        with self._lock:
            targets = {}
            for tp in self._tps:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                targets[(tp.topic, tp.partition)] = high
            n = 0
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                positions = self._consumer.position([TopicPartition(t, p) for t, p in targets])
                if all(max(pos.offset, 0) >= targets[(pos.topic, pos.partition)] for pos in positions):
                    return n
                for m in self._consumer.consume(5000, 0.1):
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("follower error: %s", m.error())
                        continue
                    handle(m)
                    n += 1
            raise TimeoutError(f"could not catch up on {self.topics} within {timeout_s}s")

    def poll(self, handle: Any, max_records: int = 5000) -> int:
        """Apply whatever has already arrived, without waiting (the live refresh between batches)."""
        with self._lock:
            n = 0
            for m in self._consumer.consume(max_records, 0):
                if m.error() is None:
                    handle(m)
                    n += 1
            return n

    def close(self) -> None:
        self._consumer.close()


@dataclass
class LedgerEntry:
    state: str  # pending | sent | suppressed | failed
    message_id: str | None
    reason: str | None


class Ledger:
    """command_id → last ledger entry (compacted topic ``email.sink-ledger``)."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.entries: dict[str, LedgerEntry] = {}
        self._follower = TopicFollower(bootstrap, [topic], group)

    def _apply(self, m: Any) -> None:
        key = m.key().decode()
        if m.value() is None:
            self.entries.pop(key, None)
            return
        rec = serde.decode(m.value(), "SinkLedgerEntry").record
        self.entries[key] = LedgerEntry(rec["state"], rec["message_id"], rec["reason"])

    def catch_up(self) -> int:
        return self._follower.catch_up(self._apply)

    def record(self, command_id: str, state: str, message_id: str | None, reason: str | None) -> None:
        self.entries[command_id] = LedgerEntry(state, message_id, reason)

    def get(self, command_id: str) -> LedgerEntry | None:
        return self.entries.get(command_id)

    def close(self) -> None:
        self._follower.close()


class Audience:
    """Marketing consent (shop.customers) and suppression (email.feedback) per customer.

    - ``unsubscribed`` → no marketing mail; ``complained`` → no marketing mail;
    - ``bounced`` with ``permanent`` → no mail at all (transactional included);
    - consent is the latest ``marketing_opt_in`` by event time (unknown customer → no consent).
    """

    def __init__(self, bootstrap: str, customers_topic: str, feedback_topic: str, group: str) -> None:
        self.consent: dict[str, tuple[int, bool]] = {}
        self.suppressed_marketing: dict[str, str] = {}
        self.hard_bounced: set[str] = set()
        self._customers_topic = customers_topic
        self._follower = TopicFollower(bootstrap, [customers_topic, feedback_topic], group)

    def _apply(self, m: Any) -> None:
        try:
            decoded = serde.decode(m.value())
        except serde.SerdeError:
            return  # the processors dead-letter bad input; the sink only reads what it can
        rec = decoded.record
        cid = rec.get("customer_id")
        if decoded.name == "CustomerEvent":
            at, _ = self.consent.get(cid, (-1, False))
            if rec["occurred_at"] >= at:
                self.consent[cid] = (rec["occurred_at"], bool(rec["marketing_opt_in"]))
        elif decoded.name == "EmailFeedback":
            kind = rec["type"]
            if kind == "unsubscribed":
                self.suppressed_marketing[cid] = "unsubscribed"
            elif kind == "complained":
                self.suppressed_marketing[cid] = "complained"
            elif kind == "bounced" and rec.get("bounce_type") == "permanent":
                self.hard_bounced.add(cid)

    def catch_up(self) -> int:
        """Blocking: everything up to the current end (at start)."""
        return self._follower.catch_up(self._apply)

    def refresh(self) -> int:
        """Non-blocking: whatever consent/suppression records arrived since (between batches)."""
        return self._follower.poll(self._apply)

    def blocked(self, customer_id: str, category: str) -> str | None:
        """The reason this customer must not get mail of ``category`` now, or None."""
        if customer_id in self.hard_bounced:
            return "hard_bounced"
        if category != "marketing":
            return None
        if customer_id in self.suppressed_marketing:
            return self.suppressed_marketing[customer_id]
        consent = self.consent.get(customer_id)
        if consent is None or not consent[1]:
            return "no_consent"
        return None

    def close(self) -> None:
        self._follower.close()
