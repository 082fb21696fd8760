"""The domain core's contract with every runtime (Kafka transactional loop, faust, `simulate`).

One ``PartitionEngine`` holds all state of one input partition (every customer whose key hashes to
it, plus the partition's event-time clock).  It is pure: no Kafka, no wall clock, no I/O.

Runtime contract:
- ``process(logical_topic, record)`` for each decoded input record in log order
  (``logical_topic`` ∈ carts, orders, shipments, customers, feedback, clock); returns the commands to
  emit (EmailCommand records as dicts, in firing order) and rejections (→ DLQ, e.g. reason ``late``).
- ``advance(clock_ms)`` moves the clock forward (``simulate --until``); fires due steps.
- ``drain_changes()`` → {changelog key: serialized state or None (delete)} changed since the last
  drain; the runtime writes them to the changelog in the same transaction as the commands.
- ``restore(key, value)`` for each changelog record during recovery, then ``restored()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streams.config import Settings
from streams.core.ids import command_id

CLOCK_KEY = "\x00partition"


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


@dataclass
class StepResult:
    commands: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def extend(self, other: "StepResult") -> None:
        self.commands.extend(other.commands)
        self.rejections.extend(other.rejections)


class PartitionEngine:
    def __init__(self, settings: Settings, partition: int = 0) -> None:
        self.settings = settings
        self.partition = partition
        self.clock_ms = 0
        self._seen: set[str] = set()
        self._dirty: set[str] = set()

    def process(self, logical_topic: str, record: dict[str, Any]) -> StepResult:
        result = StepResult()
        event_id = record.get("event_id")
        if event_id is not None:
            if event_id in self._seen:
                return result
            self._seen.add(event_id)
            self._dirty.add(CLOCK_KEY)
        at = record.get("occurred_at", record.get("tick_at", 0))
        if at > self.clock_ms:
            self.clock_ms = at
            self._dirty.add(CLOCK_KEY)
        if logical_topic == "orders" and record["type"] == "placed" and record.get("email"):
            result.commands.append(self._order_confirmation(record))
        return result

    def advance(self, clock_ms: int) -> StepResult:
        self.clock_ms = max(self.clock_ms, clock_ms)
        return StepResult()

    def _order_confirmation(self, order: dict[str, Any]) -> dict[str, Any]:
        ctx = {"order_id": order["order_id"], "items": order["items"], "total": order["total"],
               "currency": order["currency"], "cross_sell": []}
        return {
            "command_id": command_id("order_confirmation", 1, order["customer_id"], order["event_id"]),
            "customer_id": order["customer_id"], "to": order["email"], "flow": "order_confirmation", "step": 1,
            "template": "order_confirmation/step1", "locale": "en", "variant": "control",
            "category": "transactional", "send_at": order["occurred_at"],
            "expires_at": order["occurred_at"] + self.settings.flows.transactional.expires_after_ms,
            "context": json.dumps(ctx, sort_keys=True, separators=(",", ":")),
            "trigger_event_id": order["event_id"], "created_at": order["occurred_at"],
        }

    # ---- persistence ------------------------------------------------------------------------
    def drain_changes(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        if CLOCK_KEY in self._dirty:
            out[CLOCK_KEY] = json.dumps({"clock_ms": self.clock_ms, "seen": sorted(self._seen)}).encode()
        self._dirty.clear()
        return out

    def restore(self, key: str, value: bytes | None) -> None:
        if key == CLOCK_KEY and value is not None:
            data = json.loads(value)
            self.clock_ms = data["clock_ms"]
            self._seen = set(data["seen"])

    def restored(self) -> None:
        self._dirty.clear()
