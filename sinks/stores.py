"""What the sink must know before sending: the idempotency ledger and the audience (consent and
suppression). Both are read with plain assign-and-read consumers (no consumer group offsets).

Catch-up reads each partition to the end *the fetch reports* (``enable.partition.eof``: librdkafka
signals ``_PARTITION_EOF`` when a fetch answers with the partition's end — the last stable offset
under ``read_committed``). ``ListOffsets`` high watermarks are not trusted: some Kafka-protocol
brokers count batches there, not records, which would stop a catch-up long before the end. Catch-up
has no timeout that raises: it runs until every partition reports its end or ``stop`` is set, and it
reports progress so the sink's health shows it is moving.

The ledger (``email.sink-ledger``, compacted, key ``command_id``) is partitioned like
``email.commands``: the sink writes a command's entries to ledger partition *p mod n* for commands
partition *p*, so a replica reads only the ledger partitions of the commands partitions it owns. It is
bounded in time — an entry older than ``sink.ledger_retention_ms`` is dropped from memory and
tombstoned in the topic (the sink never sends a command more than that long after its ``send_at``, so
a dropped entry can never let a command be sent twice) — and in memory: one small int per command id
of the owned partitions only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from schemas import serde
from streams.config import KafkaSettings
from streams.kafka.io import client_config

log = logging.getLogger("shopmail.sink.stores")

TP = tuple[str, int]


class TopicFollower:
    """Follows chosen partitions of some topics from the beginning; catches up to the fetched end."""

    def __init__(self, bootstrap: str, topics: list[str], group: str, *, all_partitions: bool = True,
                 kafka: KafkaSettings | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self._consumer = Consumer(client_config(kafka or KafkaSettings(), bootstrap, **{
            "group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed",
            "auto.offset.reset": "earliest", "enable.partition.eof": True,
            "fetch.wait.max.ms": 50}))  # the default 500 ms stalls every catch-up
        md = self._consumer.list_topics(timeout=10)
        self.partition_counts = {t: len(md.topics[t].partitions) for t in topics if t in md.topics}
        self._next: dict[TP, int] = {}  # next offset to read per followed partition (our own bookkeeping)
        self._lock = threading.Lock()
        if all_partitions:
            self.add([(t, p) for t, n in self.partition_counts.items() for p in range(n)])

    @property
    def followed(self) -> set[TP]:
        return set(self._next)

    def add(self, tps: Iterable[TP]) -> None:
        """Follow these partitions from their beginning."""
        with self._lock:
            new = [tp for tp in tps if tp not in self._next]
            for tp in new:
                self._next[tp] = OFFSET_BEGINNING
            if new:
                self._consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new])

    def remove(self, tps: Iterable[TP]) -> None:
        with self._lock:
            gone = [tp for tp in tps if tp in self._next]
            for tp in gone:
                del self._next[tp]
            if gone:
                self._consumer.incremental_unassign([TopicPartition(t, p) for t, p in gone])

    def catch_up(self, handle: Callable[[Message], None], stop: threading.Event | None = None,
                 progress: Callable[[int], None] | None = None, only: Iterable[TP] | None = None) -> int:
        """Apply every record up to each partition's end as the fetch reports it; returns the count.

        Re-seeks each partition to its own next offset first: librdkafka signals the end once per
        fetch start, so a seek makes a partition with nothing new report its end again."""
        with self._lock:
            waiting = set(self._next if only is None else [tp for tp in only if tp in self._next])
            for t, p in waiting:
                self._consumer.seek(TopicPartition(t, p, self._next[(t, p)]))
            n = 0
            last_log = time.monotonic()
            while waiting and not (stop is not None and stop.is_set()):
                for m in self._consumer.consume(5000, 0.2):
                    tp = (m.topic(), m.partition())
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            if tp in self._next:  # the event's offset is the broker's word: only ever forward
                                self._next[tp] = max(self._next[tp], m.offset())
                            waiting.discard(tp)
                        else:
                            log.warning("follower error on %s: %s", self.topics, err)
                        continue
                    if tp not in self._next or m.offset() < self._next[tp]:
                        continue  # not followed, or fetched before the seek: applied already
                    self._next[tp] = m.offset() + 1
                    handle(m)
                    n += 1
                if progress is not None:
                    progress(n)
                if time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    log.info("catching up on %s: %d records so far, %d partitions to go", self.topics, n, len(waiting))
            return n

    def poll(self, handle: Callable[[Message], None], max_records: int = 5000) -> int:
        """Apply whatever has already arrived, without waiting (the live refresh between batches)."""
        with self._lock:
            n = 0
            for m in self._consumer.consume(max_records, 0):
                tp = (m.topic(), m.partition())
                if m.error() is None and tp in self._next and m.offset() >= self._next[tp]:
                    self._next[tp] = m.offset() + 1
                    handle(m)
                    n += 1
            return n

    def close(self) -> None:
        self._consumer.close()


# ledger states packed into one int per command id: (at_ms << 3) | state
STATES = ("pending", "sent", "suppressed", "failed")
_CODE = {s: i for i, s in enumerate(STATES)}


@dataclass
class Parked:
    """A command parked in the ledger until its send_at (or handed to SES from there: ``sending``)."""

    command_id: str
    state: str  # parked | sending
    value: bytes  # the original email.commands value
    commands_partition: int
    commands_offset: int
    send_at: int


class Ledger:
    """command_id → latest ledger state, for the ledger partitions of the owned commands partitions.

    Values of the ledger topic are ``SinkLedgerEntry`` (pending/sent/suppressed/failed) or
    ``SinkParkedCommand`` (parked/sending); a tombstone forgets the key."""

    def __init__(self, bootstrap: str, topic: str, group: str, retention_ms: int,
                 kafka: KafkaSettings | None = None) -> None:
        self.topic = topic
        self.retention_ms = retention_ms
        self._follower = TopicFollower(bootstrap, [topic], group, all_partitions=False, kafka=kafka)
        self.partitions = self._follower.partition_counts.get(topic, 0)
        if not self.partitions:
            raise RuntimeError(f"ledger topic {topic} does not exist (run `shopmail topics`)")
        self._entries: dict[int, dict[str, int]] = {}  # ledger partition → command_id → (at << 3) | state
        self.parked: dict[int, dict[str, Parked]] = {}  # ledger partition → command_id → parked command
        self.expired: list[tuple[int, str]] = []  # (ledger partition, command_id) to tombstone
        self.undecodable = 0

    def partition_of(self, commands_partition: int) -> int:
        return commands_partition % self.partitions

    @property
    def size(self) -> int:
        return sum(len(d) for d in self._entries.values())

    def own(self, ledger_partitions: set[int], stop: threading.Event | None = None,
            progress: Callable[[int], None] | None = None) -> int:
        """Follow exactly these ledger partitions: drop the others, read new ones from the beginning and
        catch kept ones up; returns the records applied."""
        gone = {p for _, p in self._follower.followed} - ledger_partitions
        self._follower.remove((self.topic, p) for p in gone)
        for p in gone:
            self._entries.pop(p, None)
            self.parked.pop(p, None)
        self.expired = [(p, k) for p, k in self.expired if p not in gone]
        for p in ledger_partitions:
            self._entries.setdefault(p, {})
            self.parked.setdefault(p, {})
        self._follower.add((self.topic, p) for p in ledger_partitions)
        return self._follower.catch_up(self._apply, stop, progress)

    def _apply(self, m: Message) -> None:
        part, key = m.partition(), m.key().decode()
        entries, parked = self._entries[part], self.parked[part]
        if m.value() is None:
            entries.pop(key, None)
            parked.pop(key, None)
            return
        try:
            decoded = serde.decode(m.value(), ("SinkLedgerEntry", "SinkParkedCommand"))
        except serde.SerdeError as exc:
            self.undecodable += 1
            log.warning("ledger record at %s[%d]@%d unreadable: %s", m.topic(), part, m.offset(), exc)
            return
        rec = decoded.record
        if decoded.name == "SinkParkedCommand":
            entries.pop(key, None)
            parked[key] = Parked(key, rec["state"], rec["command"], rec["commands_partition"],
                                 rec["commands_offset"], rec["send_at"])
            return
        parked.pop(key, None)
        if rec["at"] + self.retention_ms < time.time() * 1000:
            entries.pop(key, None)
            self.expired.append((part, key))
            return
        self._put(entries, key, rec["state"], rec["at"])

    @staticmethod
    def _put(entries: dict[str, int], key: str, state: str, at: int) -> None:
        entries.pop(key, None)  # re-insert at the end: the dict stays (roughly) in `at` order for expiry
        entries[key] = (at << 3) | _CODE[state]

    def record(self, ledger_partition: int, command_id: str, state: str, at: int) -> None:
        """Our own committed write of a SinkLedgerEntry (kept only for partitions we follow)."""
        if ledger_partition in self._entries:
            self.parked[ledger_partition].pop(command_id, None)
            self._put(self._entries[ledger_partition], command_id, state, at)

    def record_parked(self, ledger_partition: int, parked: Parked) -> None:
        if ledger_partition in self._entries:
            self._entries[ledger_partition].pop(parked.command_id, None)
            self.parked[ledger_partition][parked.command_id] = parked

    def forget(self, ledger_partition: int, command_id: str) -> None:
        """Our own committed tombstone."""
        self._entries.get(ledger_partition, {}).pop(command_id, None)
        self.parked.get(ledger_partition, {}).pop(command_id, None)

    def state(self, ledger_partition: int, command_id: str) -> str | None:
        """pending | sent | suppressed | failed | parked | sending, or None if unknown."""
        packed = self._entries.get(ledger_partition, {}).get(command_id)
        if packed is not None:
            return STATES[packed & 7]
        p = self.parked.get(ledger_partition, {}).get(command_id)
        return p.state if p is not None else None

    def unsettled(self) -> dict[tuple[int, str], int]:
        """(ledger partition, command_id) → since when (ms) of every command handed to SES without a
        final entry: ``pending`` entries and parked commands found ``sending``."""
        out: dict[tuple[int, str], int] = {}
        for part, entries in self._entries.items():
            for key, packed in entries.items():
                if STATES[packed & 7] == "pending":
                    out[(part, key)] = packed >> 3
        for part, parked in self.parked.items():
            for key, p in parked.items():
                if p.state == "sending":
                    out[(part, key)] = p.send_at
        return out

    def expire(self, now_ms: int, limit: int = 10_000) -> list[tuple[int, str]]:
        """Drop entries older than the retention from memory; returns (partition, key) to tombstone
        (at most ``limit`` per call, including those found expired during catch-up)."""
        cutoff = (now_ms - self.retention_ms) << 3
        out = self.expired[:limit]
        del self.expired[:limit]
        for part, entries in self._entries.items():
            while len(out) < limit and entries:
                key = next(iter(entries))
                if entries[key] >= cutoff:
                    break
                del entries[key]
                out.append((part, key))
        return out

    def close(self) -> None:
        self._follower.close()


class Audience:
    """Marketing consent (shop.customers) and suppression (email.feedback) per customer.

    - ``unsubscribed`` → no marketing mail; ``complained`` → no marketing mail;
    - ``bounced`` with ``permanent`` → no mail at all (transactional included);
    - consent is the latest ``marketing_opt_in`` by event time (unknown customer → no consent).
    """

    def __init__(self, bootstrap: str, customers_topic: str, feedback_topic: str, group: str,
                 kafka: KafkaSettings | None = None) -> None:
        self.consent: dict[str, tuple[int, bool]] = {}
        self.suppressed_marketing: dict[str, str] = {}
        self.hard_bounced: set[str] = set()
        self._customers_topic = customers_topic
        self._follower = TopicFollower(bootstrap, [customers_topic, feedback_topic], group, kafka=kafka)

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

    def catch_up(self, stop: threading.Event | None = None, progress: Callable[[int], None] | None = None) -> int:
        """Blocking: everything up to the current end (at start)."""
        return self._follower.catch_up(self._apply, stop, progress)

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
