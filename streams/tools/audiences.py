"""Retargeting audiences out: the current members of a named audience as an ad platform's customer list.

The processors write every join and leave to the compacted ``topics.audiences`` topic
(``streams/core/audiences.py``). An export reads it to the end (the end each fetch reports, never a
ListOffsets answer), keeps the latest record per ``<audience>:<customer_id>`` and writes the members:
SHA-256 hashes of normalised emails (trimmed, lower-cased), one per line, under the header the
platform's customer-list upload expects. A member who withdrew consent, unsubscribed, bounced or
complained has a leave as their latest record and is not exported; no raw email ever leaves.

The same export reads a memberships file (JSON lines, ``shopmail simulate --audiences``) for
offline runs.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from schemas import serde
from streams.config import Settings
from streams.core.audiences import membership_key
from streams.kafka.io import client_config
from streams.kafka.log_reader import ONE_OFF_READ_CONFIG, read_to_end

# format → header of the hashed-email column in that platform's customer-list CSV
FORMATS = {
    "google": "Email",  # Google Ads Customer Match (hashed values accepted in the Email column)
    "meta": "email",  # Meta custom audience customer list (EMAIL identifier, SHA-256)
    "hashed": "email_sha256",  # any other platform or a data team: the hash alone
}


@dataclass
class AudienceState:
    """The latest membership per ``<audience>:<customer_id>``, and what could not be read."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: int = 0
    unreadable: int = 0

    def apply(self, record: dict[str, Any]) -> None:
        self.records += 1
        self.latest[membership_key(record["audience"], record["customer_id"])] = record

    def members(self, audience: str) -> list[dict[str, Any]]:
        """Current members of ``audience`` (joined, not left since), by customer id."""
        out = [r for r in self.latest.values()
               if r["audience"] == audience and r["member"] and r.get("email_sha256")]
        out.sort(key=lambda r: r["customer_id"])
        return out

    def counts(self) -> dict[str, tuple[int, int]]:
        """audience → (members now, customers who left)."""
        out: dict[str, list[int]] = {}
        for r in self.latest.values():
            row = out.setdefault(r["audience"], [0, 0])
            row[0 if r["member"] else 1] += 1
        return {a: (n[0], n[1]) for a, n in sorted(out.items())}


def read_file(path: Path) -> AudienceState:
    state = AudienceState()
    with open(path, "rb") as src:
        for line in src:
            if line.strip():
                state.apply(orjson.loads(line))
    return state


def read_topic(settings: Settings, bootstrap: str, timeout_s: float = 120.0) -> AudienceState:
    """The memberships topic read to its end (committed records only)."""
    state = AudienceState()
    topic = settings.topics.name("audiences")
    consumer = Consumer(client_config(settings.kafka, bootstrap, **{
        "group.id": f"{settings.worker.app_id}-audience-export", "enable.auto.commit": False,
        "isolation.level": "read_committed", **ONE_OFF_READ_CONFIG}))
    try:
        md = consumer.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            raise LookupError(f"topic {topic} does not exist (run `shopmail topics`)")
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(md.topics[topic].partitions)]

        def handle(m: Message) -> None:
            if m.value() is None:  # a tombstone (an operator's deletion): the key is gone
                key = m.key()
                if key is not None:
                    state.latest.pop(key.decode(), None)
                return
            try:
                state.apply(serde.decode(m.value(), "AudienceMembership", m.topic()).record)
            except serde.SerdeError:
                state.unreadable += 1

        read_to_end(consumer, parts, handle, timeout_s, "audience memberships")
    finally:
        consumer.close()
    return state


def write_csv(members: Iterable[dict[str, Any]], out: IO[str], fmt: str) -> int:
    """The members as one customer-list CSV; returns how many rows."""
    header = FORMATS[fmt]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([header])
    n = 0
    for r in _distinct_hashes(members):
        writer.writerow([r])
        n += 1
    return n


def _distinct_hashes(members: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Two customer ids can share an address: a list holds each hash once."""
    seen: set[str] = set()
    for r in members:
        h = r["email_sha256"]
        if h not in seen:
            seen.add(h)
            yield h
