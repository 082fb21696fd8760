"""The domain core's contract with every runtime (Kafka transactional loop, faust, `simulate`).

One ``PartitionEngine`` holds all state of one input partition (every customer whose key hashes to
it, plus the partition's event-time clock). It is pure: no Kafka, no wall clock, no I/O.

Runtime contract:
- ``process(logical_topic, record)`` for each decoded input record in log order
  (``logical_topic`` ∈ carts, orders, shipments, customers, feedback, clock); returns the commands to
  emit (EmailCommand records as dicts, in firing order) and rejections (→ DLQ; the engine has none
  today: every readable event is applied, and unreadable ones never reach it).
- ``advance(clock_ms)`` moves the clock forward (``simulate --until``); fires due steps.
- ``drain_changes()`` → {changelog key: serialized state or None (delete)} changed since the last
  drain; the runtime writes them to the changelog in the same transaction as the commands.
- ``restore(key, value)`` for each changelog record during recovery, then ``restored()``.

Time model (DESIGN.md "Time"): the partition clock is the largest ``occurred_at``/``tick_at`` seen;
the watermark is ``clock - late_grace_ms``. Transactional mail an event causes (order/shipping
confirmation, tracking update) is emitted the moment the event is processed. Everything else — cart
activity, orders as exits, consent, suppression — goes into a per-customer buffer and is *settled* in
(event time, topic rank, event id) order once the watermark passes it, interleaved with the
customer's due timers. So any arrival order within the grace window yields the same commands
(tested by a property test).

Late events (older than the watermark) are facts like any other: applied on arrival to the state as
it is (a fact superseded by a newer one of the same kind changes nothing), counted per topic and by
how late (``late_applied:<topic>``, ``lateness:<topic>:<bucket>``). Steps already emitted stand;
whatever the fact ends or blocks is cancelled before it fires. A step a late fact would schedule at
or behind the watermark — marketing in the past — is skipped (``dropped:<flow>:late_start``).

Future events: the log's wall clock is its clock ticks (live workers write one per partition every
``tick_interval_s``; replays copy them). An event more than ``max_future_skew_ms`` ahead of the
partition's latest tick is applied like any event (transactional mail at once, settlement when the
clock reaches its time) but never moves the clock (``future:<topic>``); ticks and the events within
the skew do. A log without ticks (a ``simulate`` file, a test) has no wall clock: its events are the
only time there is, and gaps of days between them are normal. A clock tick that finds the clock more
than the skew ahead of itself (a first event of an empty partition, or a state written by a release
without this rule) sets the clock back to the tick, and a restored legacy state whose clock is that
far ahead of every settled fact is set back on restore (``clock_repaired``). All of it is a function
of the log, so replays give the same result.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

from streams.config import DAY_MS, HOUR_MS, Settings
from streams.core import flows
from streams.core.due_queue import DueQueue
from streams.core.segments import SpendHistogram

log = logging.getLogger("shopmail.engine")

CLOCK_KEY = "\x00partition"
TOPIC_RANK = {"customers": 0, "feedback": 1, "orders": 2, "shipments": 3, "carts": 4}
SEEN_RETENTION_MS = 2 * DAY_MS  # event ids remembered for dedupe (≫ grace; duplicates arrive soon)
STATE_VERSION = 2  # partition record: 2 = written by a release that never lets a future event move the clock
LATENESS_BUCKETS = ((HOUR_MS, "le_1h"), (DAY_MS, "le_1d"), (7 * DAY_MS, "le_7d"))  # else "gt_7d"


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


_BUF_ORDER = itemgetter(0, 1, 2)  # buffered event: (time, topic rank, event id, topic, record)


def new_customer() -> dict[str, Any]:
    return {"p": {}, "seen": {}, "buf": []}


class PartitionEngine:
    def __init__(self, settings: Settings, partition: int = 0) -> None:
        self.settings = settings
        self.partition = partition
        self.clock_ms = 0
        self.tick_ms = 0  # the latest clock tick (the log's wall clock); 0 = none seen
        self.customers: dict[str, dict[str, Any]] = {}
        self.cooc: dict[str, dict[str, int]] = {}  # sku → {sku: times bought together}
        self.catalog: dict[str, dict[str, Any]] = {}  # sku → last seen item (name, price, image, url)
        self.spend = SpendHistogram()
        self.stats: dict[str, int] = {}
        self._due = DueQueue()  # (time, customer_id); entries ≠ _scheduled are stale
        self._scheduled: dict[str, int] = {}  # customer → the one time it is due next
        self._dirty: set[str] = set()
        self._partition_dirty = False
        self._legacy_clock = False  # restored a partition record older than STATE_VERSION
        # hot-path copies of settings (the flows read these, not the nested settings objects)
        self.grace_ms = settings.worker.late_grace_ms
        self.max_future_ms = settings.worker.max_future_skew_ms
        self.cart_delays = list(settings.flows.abandoned_cart.delays_ms)
        self.winback_delays = list(settings.flows.win_back.delays_ms)

    # ---- input ------------------------------------------------------------------------------
    @property
    def watermark(self) -> int:
        return self.clock_ms - self.grace_ms

    def process(self, logical_topic: str, record: dict[str, Any]) -> StepResult:
        result = StepResult()
        if logical_topic == "clock":
            return self.tick(int(record["tick_at"]))
        at = int(record["occurred_at"])
        clock = self.clock_ms
        cid = record["customer_id"]
        c = self.customers.get(cid)
        if c is None:
            c = self.customers[cid] = new_customer()
        eid = record["event_id"]
        seen = c["seen"]
        if eid in seen:
            self._count("duplicate")
            return result
        wm = clock - self.grace_ms
        if clock and at < wm:
            seen[eid] = wm  # remembered from when it became known
            self._apply_late(cid, c, logical_topic, record, at, result.commands)
            return result
        seen[eid] = at
        self._dirty.add(cid)
        commands = result.commands
        arrival = flows.on_arrival(self, cid, c, logical_topic, record)
        if arrival:
            commands.extend(arrival)
        c["buf"].append([at, TOPIC_RANK.get(logical_topic, 9), eid, logical_topic, record])
        self._schedule(cid, at)
        if at > clock:
            if self.tick_ms and at - self.tick_ms > self.max_future_ms:
                self._count(f"future:{logical_topic}")  # applied, but it does not move the clock
                log.debug("%s event %s of %s is %d ms ahead of the last clock tick %d: the clock stays",
                          logical_topic, eid, cid, at - self.tick_ms, self.tick_ms)
            else:
                self.clock_ms = at
                self._partition_dirty = True
        if self._due.due(self.watermark):
            self._fire(commands)
        return result

    def _apply_late(self, cid: str, c: dict[str, Any], topic: str, record: dict[str, Any], at: int,
                    out: list[dict[str, Any]]) -> None:
        """A fact behind the watermark: applied now to the customer's settled state (all of it up to
        the watermark), then every step it put at or behind the watermark is skipped."""
        self._count(f"late_applied:{topic}")
        behind = self.clock_ms - at
        self._count(f"lateness:{topic}:" + next((name for limit, name in LATENESS_BUCKETS if behind <= limit), "gt_7d"))
        wm = self.watermark
        if self._due.due(wm):  # only after a restore: settle what is due first, in order
            self._fire(out)
        self._dirty.add(cid)
        out.extend(flows.on_arrival(self, cid, c, topic, record))
        out.extend(flows.settle_event(self, cid, c, topic, record))
        flows.skip_past(self, cid, c, wm)
        self._schedule(cid, flows.next_due(self, c))

    def tick(self, tick_at: int) -> StepResult:
        """A clock tick (wall-clock time written into the log by the live workers)."""
        if self.clock_ms - tick_at > self.max_future_ms:
            self._repair_clock(tick_at, "a clock tick")
        if tick_at > self.tick_ms:
            self.tick_ms = tick_at
            self._partition_dirty = True
        return self.advance(tick_at)

    def _repair_clock(self, to: int, source: str) -> None:
        """Set a clock that ran too far ahead back to ``to`` (steps already emitted stand)."""
        log.warning("partition %d: clock %d is more than %d ms ahead of %s (%d): set back", self.partition,
                    self.clock_ms, self.max_future_ms, source, to)
        self._count("clock_repaired")
        self.clock_ms = to
        self._partition_dirty = True
        self._rebuild_due()

    def advance(self, clock_ms: int) -> StepResult:
        if clock_ms > self.clock_ms:
            self.clock_ms = clock_ms
            self._partition_dirty = True
        result = StepResult()
        self._fire(result.commands)
        return result

    # ---- settling and timers ----------------------------------------------------------------
    def _fire(self, out: list[dict[str, Any]]) -> None:
        """Settle every customer whose next buffered event or timer is at or behind the watermark."""
        wm = self.watermark
        queue = self._due
        scheduled = self._scheduled
        customers = self.customers
        while queue.due(wm):
            at, cid = queue.pop()
            if scheduled.get(cid) != at:
                continue  # superseded by an earlier schedule
            del scheduled[cid]
            c = customers.get(cid)
            if c is None:
                continue
            self._schedule(cid, self._settle(cid, c, wm, out))

    def _schedule(self, cid: str, at: int | None) -> None:
        if at is None:
            return
        current = self._scheduled.get(cid)
        if current is None or at < current:
            self._scheduled[cid] = at
            self._due.push(at, cid)

    def _settle(self, cid: str, c: dict[str, Any], wm: int, out: list[dict[str, Any]]) -> int | None:
        """Apply buffered events and fire timers of one customer up to the watermark, in time order;
        returns when the customer is due next (its earliest buffered event or timer)."""
        buf = c["buf"]
        if len(buf) > 1:
            buf.sort(key=_BUF_ORDER)
        timer = flows.next_timer(self, c)
        while True:
            ev_at = buf[0][0] if buf else None
            if timer is not None and timer <= wm and (ev_at is None or timer <= ev_at):
                out.extend(flows.on_timer(self, cid, c, timer))
            elif ev_at is not None and ev_at <= wm:
                _, _, _, topic, record = buf.pop(0)
                out.extend(flows.settle_event(self, cid, c, topic, record))
            else:
                break
            timer = flows.next_timer(self, c)
        self._dirty.add(cid)
        seen = c["seen"]
        if seen:  # forget ids older than the retention (the first is the oldest but for jitter)
            cutoff = self.clock_ms - SEEN_RETENTION_MS
            if next(iter(seen.values())) < cutoff:
                c["seen"] = {k: v for k, v in seen.items() if v >= cutoff}
        return flows.earliest(timer, buf)

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def dropped(self, cid: str, flow: str, step: int, reason: str) -> None:
        """A step that will not be sent: counted and logged, never silent."""
        self._count(f"dropped:{flow}:{reason}")
        log.debug("dropped %s step %d for %s: %s", flow, step, cid, reason)

    # ---- helpers for flows ------------------------------------------------------------------
    def cross_sell(self, skus: list[str], limit: int) -> list[dict[str, Any]]:
        scores: dict[str, int] = {}
        basket = set(skus)
        cooc = self.cooc
        for sku in skus:
            row = cooc.get(sku)
            if row:
                for other, n in row.items():
                    if other not in basket:
                        scores[other] = scores.get(other, 0) + n
        ranked = [(-n, sku) for sku, n in scores.items()]  # most bought together first, then by sku
        ranked.sort()
        catalog = self.catalog
        return [catalog[s] for _, s in ranked[:limit] if s in catalog]

    def learn_basket(self, items: list[dict[str, Any]]) -> None:
        skus = sorted({it["sku"] for it in items})
        for it in items:
            self.catalog[it["sku"]] = {"sku": it["sku"], "name": it["name"], "price": it["price"],
                                       "image_url": it.get("image_url"), "url": it.get("url")}
        for a in skus:
            row = self.cooc.setdefault(a, {})
            for b in skus:
                if a != b:
                    row[b] = row.get(b, 0) + 1
            if len(row) > 50:  # bounded: keep the strongest pairs
                self.cooc[a] = dict(sorted(row.items(), key=lambda kv: -kv[1])[:30])
        self._partition_dirty = True

    # ---- persistence ------------------------------------------------------------------------
    def drain_changes(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for cid in self._dirty:
            c = self.customers.get(cid)
            out[cid] = None if c is None else json.dumps(c, separators=(",", ":")).encode()
        if self._partition_dirty:
            out[CLOCK_KEY] = json.dumps({"clock": self.clock_ms, "cooc": self.cooc, "catalog": self.catalog,
                                         "spend": self.spend.counts, "tick": self.tick_ms,
                                         "v": STATE_VERSION},
                                        separators=(",", ":")).encode()
        self._dirty.clear()
        self._partition_dirty = False
        return out

    def restore(self, key: str, value: bytes | None) -> None:
        if key == CLOCK_KEY:
            if value is not None:
                data = json.loads(value)
                self.clock_ms = data["clock"]
                self.cooc = data["cooc"]
                self.catalog = data["catalog"]
                self.spend = SpendHistogram({int(k): v for k, v in data["spend"].items()})
                self.tick_ms = data.get("tick", 0)
                self._legacy_clock = data.get("v", 1) < STATE_VERSION
            return
        if value is None:
            self.customers.pop(key, None)
        else:
            self.customers[key] = json.loads(value)

    def restored(self) -> None:
        self._rebuild_due()
        self._dirty.clear()
        self._partition_dirty = False
        if self._legacy_clock:  # written by a release that let any event move the clock: check it once
            self._legacy_clock = False
            settled = max((flows.settled_until(c) for c in self.customers.values()), default=0)
            if settled and self.clock_ms - settled > self.max_future_ms:
                self._repair_clock(settled, "every settled fact of the restored state")

    def _rebuild_due(self) -> None:
        self._due = DueQueue()
        self._scheduled = {}
        for cid, c in self.customers.items():
            nxt = flows.next_due(self, c)
            if nxt is not None:
                self._due.push(nxt, cid)
                self._scheduled[cid] = nxt


def decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
