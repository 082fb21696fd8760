"""The domain core's contract with every runtime (Kafka transactional loop, faust, `simulate`).

One ``PartitionEngine`` holds all state of one input partition (every customer whose key hashes to
it, plus the partition's event-time clock). It is pure: no Kafka, no wall clock, no I/O.

Runtime contract:
- ``process(logical_topic, record)`` for each decoded input record in log order
  (``logical_topic`` ∈ carts, orders, shipments, customers, feedback, clock — keyed by customer,
  co-partitioned — or inventory, a *global* topic: see below); returns the commands to
  emit (EmailCommand records as dicts, in firing order) and rejections (→ DLQ; the engine has none
  today: every readable event is applied, and unreadable ones never reach it).
- ``advance(clock_ms)`` moves the clock forward (``simulate --until``); fires due steps.
- ``drain_changes()`` → {changelog key: serialized state or None (delete)} changed since the last
  drain; the runtime writes them to the changelog in the same transaction as the commands.
- ``restore(key, value)`` for each changelog record during recovery, then ``restored()``.
- ``drain_memberships()`` → the retargeting-audience joins and leaves since the last drain
  (``streams/core/audiences.py``); the runtime writes them in the same transaction as the commands.

Global topics (``GLOBAL_TOPICS``: ``inventory``, keyed by SKU, no ``customer_id``) are not
co-partitioned with customers: the runtime feeds every record of them to every partition engine it
runs, in the global topic's log order, interleaved with the partition's own records in arrival
order. The engine hands them to the flows that declare them (``Flow.on_global``), which keep what
they learn in partition tables (``streams/core/tables.py``, changelog keys ``"\x03<table>:<key>"``).
A global record never moves the partition clock (its producer's clock is not this partition's) and
is not buffered for settlement: it is applied on arrival, and a record older than the row it would
replace is stale (``stale:<topic>``). Mail it causes is due at its ``occurred_at`` or the watermark,
whichever is later, and goes through the same timers and guards as any marketing step.

Time model (docs/architecture.md "Time"): the partition clock is the largest ``occurred_at``/``tick_at`` seen;
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

import logging
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from streams.config import DAY_MS, HOUR_MS, Settings
from streams.core import customer as facts
from streams.core.audiences import AudienceTracker, Membership
from streams.core.context import FlowContext
from streams.core.decisions import DecisionLog
from streams.core.customer import on_arrival
from streams.core.customer import settle as settle_facts
from streams.core.due_queue import DueQueue
from streams.core.flows.base import Command, Flow
from streams.core.flows.registry import FLOWS
from streams.core.flows.transactional import TransactionalFlow
from streams.core.segments import SpendHistogram
from streams.core.state import CLOCK_KEY, Customer, Partition, decode_customer, decode_partition, encode, new_customer
from streams.core.tables import split_key
from streams.core.timed_flows import Timer, TimedFlows

log = logging.getLogger("shopmail.engine")

__all__ = ["CLOCK_KEY", "GLOBAL_TOPICS", "PartitionEngine", "Rejection", "StepResult"]

GLOBAL_TOPICS = frozenset({"inventory"})
TOPIC_RANK = {"customers": 0, "feedback": 1, "orders": 2, "shipments": 3, "carts": 4, "product_views": 5}
SEEN_RETENTION_MS = 2 * DAY_MS  # event ids remembered for dedupe (≫ grace; duplicates arrive soon)
PARTITION_VERSION = 2  # partition record: 2 = written by a release that never lets a future event move the clock
LATENESS_BUCKETS = ((HOUR_MS, "le_1h"), (DAY_MS, "le_1d"), (7 * DAY_MS, "le_7d"))  # else "gt_7d"


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


class StepResult:
    """What one record or clock move produced: commands in firing order, and rejections (→ DLQ)."""

    __slots__ = ("commands", "rejections")

    def __init__(self, commands: list[dict[str, Any]] | None = None, rejections: list[Rejection] | None = None) -> None:
        self.commands: list[dict[str, Any]] = [] if commands is None else commands
        self.rejections: list[Rejection] = [] if rejections is None else rejections

    def __repr__(self) -> str:
        return f"StepResult(commands={self.commands!r}, rejections={self.rejections!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StepResult):
            return NotImplemented
        return self.commands == other.commands and self.rejections == other.rejections

    __hash__ = None  # type: ignore[assignment]  (mutable, as the dataclass it replaces)

    def extend(self, other: "StepResult") -> None:
        self.commands.extend(other.commands)
        self.rejections.extend(other.rejections)


_WITHDRAWING = frozenset({"customers", "feedback"})  # topics whose records can end marketing consent
_BUF_ORDER = itemgetter(0, 1, 2)  # buffered event: (time, topic rank, event id, topic, record)
_NO_TIMER: tuple[None, None] = (None, None)  # ``_next_timer`` found none: no time, no flow


class PartitionEngine:
    def __init__(self, settings: Settings, partition: int = 0) -> None:
        self.settings = settings
        self.partition = partition
        self.ctx = ctx = FlowContext(settings)
        self.customers: dict[str, Customer] = {}
        self._due = DueQueue()  # (time, customer_id); entries ≠ _scheduled are stale
        self._scheduled: dict[str, int] = {}  # customer → the one time it is due next
        # customer → its earliest timer (when, whose; None: none) as last found, after its last settlement or
        # whatever else changed its flows' state (a late fact, a global record, a restore): its next settlement
        # starts from it instead of asking every timed flow again (hot path). Arrival changes no timer: the
        # flows that act on arrival have none (``_arrival_moves_timers``, else every arrival forgets it)
        self._timers: dict[str, Timer | None] = {}
        self._dirty: set[str] = set()
        self._legacy_clock = False  # restored a partition record older than PARTITION_VERSION
        self.grace_ms = settings.worker.late_grace_ms
        self.max_future_ms = settings.worker.max_future_skew_ms
        # every flow after the flows it names in ``after`` (else in registry order)
        self.flows: tuple[Flow, ...] = in_dependency_order(tuple(cls(ctx) for cls in FLOWS))
        for f in self.flows:
            f.connect(self.flows)
        # transactional mail that waited for an address names its flow
        self._transactional = {f.name: f for f in self.flows if isinstance(f, TransactionalFlow)}
        self._timed = TimedFlows(self.flows)  # every timed flow (streams/core/timed_flows.py)
        # the flows each topic goes to, each after the flows it names in ``after``
        topics = set(TOPIC_RANK)
        # the timers a settled record of each topic can move: those of the flows that settle it (a flow's
        # ``next_due`` reads its own state and the shared facts of its ``settle_topics``); a feedback record
        # can be a suppression, which ends every flow's instances
        self._retimed_by: dict[str, TimedFlows] = {
            t: self._timed if t == "feedback" else TimedFlows(f for f in self.flows if t in f.settle_topics)
            for t in topics}
        self._arrival: dict[str, tuple[Flow, ...]] = {
            t: tuple(f for f in self.flows if t in f.arrival_topics) for t in topics}
        self._arrival_moves_timers = any(f.has_timers and f.arrival_topics for f in self.flows)
        self._settlers: dict[str, tuple[Flow, ...]] = {
            t: tuple(f for f in self.flows if t in f.settle_topics) for t in topics}
        self._global: dict[str, tuple[Flow, ...]] = {
            t: tuple(f for f in self.flows if t in f.global_topics) for t in GLOBAL_TOPICS}
        self.audiences = AudienceTracker(self.flows, settings.audiences, ctx.count)
        self._track = self.audiences.track if self.audiences.enabled else None
        # whether every customer of the partition has been through the audience check (a state written
        # by a release without audiences, or with them switched off, is checked once when restored)
        self._audiences_checked = self.audiences.enabled
        self.decisions: DecisionLog | None = None  # ``explain``: off unless someone asks

    def explain(self, decisions: DecisionLog | None) -> None:
        """Record the decisions about ``decisions.ids`` in ``decisions`` from now on (``None``: stop)."""
        self.decisions = self.ctx.decisions = decisions
        if decisions is not None:
            decisions.attach(self.flows, self.customers, self.ctx)

    def drain_memberships(self) -> list[Membership]:
        """Audience joins and leaves since the last drain, in the order they happened."""
        events = self.audiences.events
        if not events:
            return []
        self.audiences.events = []
        return events

    # ---- the partition's clock and counters live in the flows' context ----------------------
    @property
    def clock_ms(self) -> int:
        return self.ctx.clock_ms

    @clock_ms.setter
    def clock_ms(self, value: int) -> None:
        self.ctx.clock_ms = value

    @clock_ms.deleter
    def clock_ms(self) -> None:  # what Python says for a property without one (compiled: the same error)
        raise AttributeError(f"property 'clock_ms' of {type(self).__name__!r} object has no deleter")

    @property
    def tick_ms(self) -> int:
        return self.ctx.tick_ms

    @property
    def stats(self) -> dict[str, int]:
        return self.ctx.stats

    @property
    def watermark(self) -> int:
        return self.ctx.clock_ms - self.grace_ms

    # ---- input ------------------------------------------------------------------------------
    def process(self, logical_topic: str, record: dict[str, Any]) -> StepResult:
        result = StepResult()
        if logical_topic == "clock":
            return self.tick(int(record["tick_at"]))
        if logical_topic in self._global:
            return self._process_global(logical_topic, record)
        ctx = self.ctx
        at = int(record["occurred_at"])
        clock = ctx.clock_ms
        cid = record["customer_id"]
        c = self.customers.get(cid)
        if c is None:
            c = self.customers[cid] = new_customer()
        eid = record["event_id"]
        seen = c.seen
        if self.decisions is not None:
            self.decisions.arrived(cid, logical_topic, record, clock, self.grace_ms, eid in seen, ctx.tick_ms,
                                   self.max_future_ms)
        if eid in seen:
            ctx.count("duplicate")
            return result
        wm = clock - self.grace_ms
        if logical_topic == "feedback" and ctx.deliverability.enabled:  # counted on arrival, late or not
            ctx.deliverability.observe(c.p.email, record, wm)
        if clock and at < wm:
            seen[eid] = wm  # remembered from when it became known
            self._apply_late(cid, c, logical_topic, record, at, result.commands)
            return result
        seen[eid] = at
        self._dirty.add(cid)
        if self._arrival_moves_timers:
            self._timers.pop(cid, None)
        commands = result.commands
        on_arrival(c, logical_topic, record)  # self._arrive, inlined (hot path)
        if logical_topic in _WITHDRAWING and (self._track is not None or c.aud):
            self.audiences.withdrawn(cid, c, logical_topic, record)
        for f in self._arrival[logical_topic]:
            sent = f.on_arrival(cid, c, logical_topic, record)
            if sent:
                commands.extend(sent)
        c.buf.append([at, TOPIC_RANK.get(logical_topic, 9), eid, logical_topic, record])
        self._schedule(cid, at)
        if at > clock:
            if ctx.tick_ms and at - ctx.tick_ms > self.max_future_ms:
                ctx.count(f"future:{logical_topic}")  # applied, but it does not move the clock
                log.debug("%s event %s of %s is %d ms ahead of the last clock tick %d: the clock stays",
                          logical_topic, eid, cid, at - ctx.tick_ms, ctx.tick_ms)
            else:
                ctx.clock_ms = at
                ctx.partition_changed = True
        if self._due.due(ctx.clock_ms - self.grace_ms):
            self._fire(commands)
        return result

    def _process_global(self, topic: str, record: dict[str, Any]) -> StepResult:
        """A record of a global topic: the flows apply it; the customers they changed are persisted and
        re-timed. The clock stays where it is."""
        result = StepResult()
        self.ctx.count(f"global:{topic}")
        touched: set[str] = set()
        for f in self._global[topic]:
            touched.update(f.on_global(topic, record, self.customers))
        customers = self.customers
        track = self._track
        for cid in sorted(touched):
            self._dirty.add(cid)
            if self.decisions is not None:
                self.decisions.observe(cid, customers[cid], topic, record, self.watermark)
            self._schedule(cid, self._next_due_at(cid, customers[cid]))
            if track is not None:
                track(cid, customers[cid], self.watermark)
        if self._due.due(self.watermark):
            self._fire(result.commands)
        return result

    def _arrive(self, cid: str, c: Customer, topic: str, record: dict[str, Any], out: list[Command]) -> None:
        """On arrival: contact details, then the mail an event causes at once (transactional)."""
        on_arrival(c, topic, record)
        if topic in _WITHDRAWING and (self._track is not None or c.aud):
            self.audiences.withdrawn(cid, c, topic, record)
        for f in self._arrival.get(topic, ()):
            sent = f.on_arrival(cid, c, topic, record)
            if sent:
                out.extend(sent)

    def _settle_event(self, cid: str, c: Customer, topic: str, record: dict[str, Any],
                      out: list[Command]) -> None:
        """One event in event-time order: mail that waited for an address, the shared facts, the flows."""
        ptx = c.waiting_for_address
        if ptx:
            waiting = ptx.pop(record["event_id"], None)
            if waiting is not None:  # transactional mail that waited for an address
                flow = self._transactional[waiting[0]]
                if c.p.email:
                    out.extend(flow.send(cid, c, record, waiting[1], waiting[2]))
                else:
                    self.ctx.dropped(cid, waiting[0], 1, "no_email")
        if not settle_facts(self.ctx, c, topic, record):
            if topic == "feedback":  # not a suppression (delivered, clicked, …): to the flows that settle feedback
                for f in self._settlers["feedback"]:
                    f.settle(cid, c, topic, record)
            return
        if topic == "feedback":  # a suppression: every flow instance of the customer ends here
            for f in self.flows:
                f.suppressed(c)
            return
        for f in self._settlers.get(topic, ()):
            f.settle(cid, c, topic, record)

    def _apply_late(self, cid: str, c: Customer, topic: str, record: dict[str, Any], at: int,
                    out: list[dict[str, Any]]) -> None:
        """A fact behind the watermark: applied now to the customer's settled state (all of it up to
        the watermark), then every step it put at or behind the watermark is skipped."""
        ctx = self.ctx
        ctx.count(f"late_applied:{topic}")
        behind = ctx.clock_ms - at
        ctx.count(f"lateness:{topic}:" + next((name for limit, name in LATENESS_BUCKETS if behind <= limit), "gt_7d"))
        wm = self.watermark
        if self._due.due(wm):  # only after a restore: settle what is due first, in order
            self._fire(out)
        self._dirty.add(cid)
        self._arrive(cid, c, topic, record, out)
        self._settle_event(cid, c, topic, record, out)
        self._skip_past(cid, c, wm)
        if self.decisions is not None:
            self.decisions.observe(cid, c, topic, record, wm)
        self._schedule(cid, self._next_due_at(cid, c))
        if self._track is not None:
            self._track(cid, c, wm)

    def _skip_past(self, cid: str, c: Customer, wm: int) -> None:
        """After a late fact: every step it put at or behind the watermark is marketing in the past and
        is skipped (counted ``dropped:<flow>:late_start``); a series whose start has passed starts (as
        it would have) and continues with its steps still ahead. Steps already emitted are untouched."""
        while True:
            timer = self._next_timer(c)
            if timer is None or timer[0] > wm:
                return
            due, flow = timer
            flow.skip(cid, c, due)

    def tick(self, tick_at: int) -> StepResult:
        """A clock tick (wall-clock time written into the log by the live workers)."""
        ctx = self.ctx
        if ctx.clock_ms - tick_at > self.max_future_ms:
            self._repair_clock(tick_at, "a clock tick")
        if tick_at > ctx.tick_ms:
            ctx.tick_ms = tick_at
            ctx.partition_changed = True
        return self.advance(tick_at)

    def _repair_clock(self, to: int, source: str) -> None:
        """Set a clock that ran too far ahead back to ``to`` (steps already emitted stand)."""
        ctx = self.ctx
        log.warning("partition %d: clock %d is more than %d ms ahead of %s (%d): set back", self.partition,
                    ctx.clock_ms, self.max_future_ms, source, to)
        ctx.count("clock_repaired")
        ctx.clock_ms = to
        ctx.partition_changed = True
        self._rebuild_due()

    def advance(self, clock_ms: int) -> StepResult:
        ctx = self.ctx
        if clock_ms > ctx.clock_ms:
            ctx.clock_ms = clock_ms
            ctx.partition_changed = True
        result = StepResult()
        if ctx.deliverability.enabled:  # the guard's status follows the clock (metrics) even without feedback
            ctx.deliverability.catch_up(self.watermark)
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

    def _next_timer(self, c: Customer) -> Timer | None:
        """The earliest pending timer of any flow, with its flow (the lowest priority on a tie)."""
        return self._timed.earliest(c)

    def _settle(self, cid: str, c: Customer, wm: int, out: list[dict[str, Any]]) -> int | None:
        """Apply buffered events and fire timers of one customer up to the watermark, in time order;
        returns when the customer is due next (its earliest buffered event or timer)."""
        buf = c.buf
        if len(buf) > 1:
            buf.sort(key=_BUF_ORDER)
        next_timer = self._timed.earliest
        retimed_by = self._retimed_by
        timers = self._timers
        timer = timers[cid] if cid in timers else next_timer(c)  # (when, whose) or None
        due, flow = timer or _NO_TIMER
        decisions = self.decisions
        while True:
            ev_at = buf[0][0] if buf else None
            if due is not None and due <= wm and (ev_at is None or due <= ev_at):
                out.extend(flow.fire(cid, c, due))
                if decisions is not None:
                    decisions.observe(cid, c, "timer", None, due)
                timer = next_timer(c)
            elif ev_at is not None and ev_at <= wm:
                _, _, _, topic, record = buf.pop(0)
                self._settle_event(cid, c, topic, record, out)
                if decisions is not None:
                    decisions.observe(cid, c, topic, record, ev_at)
                moved = retimed_by.get(topic, self._timed)
                # only the flows that settled it are asked again, unless the timer was one of theirs
                timer = moved.earliest(c, timer) if flow not in moved.flows else next_timer(c)
            else:
                break
            due, flow = timer or _NO_TIMER
        timers[cid] = timer
        self._dirty.add(cid)
        seen = c.seen
        if seen:  # forget ids older than the retention (the first is the oldest but for jitter)
            cutoff = self.ctx.clock_ms - SEEN_RETENTION_MS
            if next(iter(seen.values())) < cutoff:
                c.seen = {k: v for k, v in seen.items() if v >= cutoff}
        if self._track is not None:
            self._track(cid, c, wm)
        return _earliest(due, buf)

    def _next_due_at(self, cid: str, c: Customer) -> int | None:
        """When the customer is due next, its flows' state having changed outside a settlement."""
        timer = self._timers[cid] = self._next_timer(c)
        return _earliest(None if timer is None else timer[0], c.buf)

    def _settled_until(self, c: Customer) -> int:
        return max(facts.settled_until(c), *(f.settled_until(c) for f in self.flows))

    # ---- persistence ------------------------------------------------------------------------
    def drain_changes(self) -> dict[str, bytes | None]:
        """Changelog records of what changed since the last drain (encoded by ``streams/core/state.py``)."""
        ctx = self.ctx
        customers = self.customers
        out: dict[str, bytes | None] = {}
        for cid in self._dirty:
            c = customers.get(cid)
            out[cid] = None if c is None else encode(c)
        for table in ctx.tables.values():
            table.drain(out)
        if ctx.partition_changed:
            out[CLOCK_KEY] = encode(Partition(clock=ctx.clock_ms, cooc=ctx.cooc, catalog=ctx.catalog,
                                              spend=ctx.spend.counts, tick=ctx.tick_ms, v=PARTITION_VERSION,
                                              aud=self._audiences_checked, guard=ctx.deliverability.persisted()))
        self._dirty.clear()
        ctx.partition_changed = False
        return out

    def restore(self, key: str, value: bytes | None) -> None:
        """One changelog record (any format this release or an earlier one wrote)."""
        in_table = split_key(key)
        if in_table is not None:
            table = self.ctx.tables.get(in_table[0])
            if table is None:  # a table no registered flow keeps (a flow was removed): not restored
                self.ctx.count("restore:unknown_table")
                log.warning("partition %d: changelog key %r belongs to no table of this release", self.partition, key)
            else:
                table.restore(in_table[1], value)
            return
        if key == CLOCK_KEY:
            if value is not None:
                ctx = self.ctx
                data = decode_partition(value)
                ctx.clock_ms = data.clock
                ctx.cooc = data.cooc
                ctx.catalog = data.catalog
                ctx.spend = SpendHistogram(data.spend)
                ctx.tick_ms = data.tick
                self._legacy_clock = data.v < PARTITION_VERSION
                self._audiences_checked = data.aud and self.audiences.enabled
                ctx.deliverability.restore(data.guard)
            return
        self._timers.pop(key, None)
        if value is None:
            self.customers.pop(key, None)
        else:
            self.customers[key] = decode_customer(value)

    def restored(self) -> None:
        self._rebuild_due()
        self._dirty.clear()
        self.ctx.partition_changed = False
        if self._track is not None and not self._audiences_checked:
            self._check_audiences()
        if self._legacy_clock:  # written by a release that let any event move the clock: check it once
            self._legacy_clock = False
            settled = max((self._settled_until(c) for c in self.customers.values()), default=0)
            if settled and self.ctx.clock_ms - settled > self.max_future_ms:
                self._repair_clock(settled, "every settled fact of the restored state")

    def _check_audiences(self) -> None:
        """Every customer through the audience check once: a state restored from a release without
        audiences (or with them off) has members no settlement would find until they are active again."""
        track = self._track
        assert track is not None
        wm = self.watermark
        for cid in sorted(self.customers):
            c = self.customers[cid]
            before = (c.aud, c.ah)
            track(cid, c, wm)
            if (c.aud, c.ah) != before:
                self._dirty.add(cid)
        self._audiences_checked = True
        self.ctx.partition_changed = True
        self.ctx.count("audiences_checked_on_restore")

    def _rebuild_due(self) -> None:
        self._due = DueQueue()
        self._scheduled = {}
        self._timers = {}
        for cid, c in self.customers.items():
            nxt = self._next_due_at(cid, c)
            if nxt is not None:
                self._due.push(nxt, cid)
                self._scheduled[cid] = nxt


def in_dependency_order(flows: tuple[Flow, ...]) -> tuple[Flow, ...]:
    """``flows`` with each one after the flows it names in ``after`` (otherwise in the given order), so a
    flow that asks another about a record sees that flow's state after the record, whatever the registry
    order."""
    done: list[Flow] = []
    pending = list(flows)
    while pending:
        ready = next((f for f in pending if all(any(type(d) is cls for d in done) for cls in f.after)), None)
        if ready is None:
            raise ValueError("flows wait for each other or for a flow that is not registered: "
                             + ", ".join(f"{f.name} after {[cls.__name__ for cls in f.after]}" for f in pending))
        done.append(ready)
        pending.remove(ready)
    return tuple(done)


def _earliest(timer: int | None, buf: list[list[Any]]) -> int | None:
    """When a customer is due next: its earliest pending timer or buffered event."""
    if buf:
        first = min(e[0] for e in buf)
        return first if timer is None or first < timer else timer
    return timer

