"""The decision log: what the engine decided for chosen customers, and why (pure, opt-in).

A ``PartitionEngine`` has no log unless one is attached (``PartitionEngine.explain``); every hook is a
single ``if log is not None`` on the path where the reason is already known, so a worker or
``simulate`` without a log pays one attribute test per record and per step. An attached log records
only the customers it was asked about (``ids``; ``None``: every customer, for short runs only — the
entries are kept in memory until ``drain``).

Entries (``Entry.kind``), each at the event time it was decided:

- ``fact`` — a record of the customer reached the engine: ``status`` is ``on_time`` (settled in
  event-time order once the watermark passes it), ``late`` (behind the watermark by ``behind_ms``,
  applied at once), ``future`` (too far ahead of the last clock tick to move the clock) or
  ``duplicate`` (an event id already seen: ignored);
- ``scheduled`` — a flow's next step is due at ``due`` (a new instance, a re-timed one, the next
  step after one went out); ``ended`` — a flow's pending step is gone: ``cause`` names the settled
  fact that ended it (an order, a cleared cart, a suppression…) or ``series_done``;
- ``deferred`` — a guard moved a due step to ``until`` (``reason``: ``frequency_cap`` or
  ``quiet_hours``, with the figures that decided it);
- ``dropped`` — a step will not be sent (``reason``: ``no_consent``, ``unsubscribed``,
  ``hard_bounced``, ``complained``, ``no_email``, ``after_goodbye``, ``expired_by_…``,
  ``late_start``, a flow's own rule such as ``weekly_cap`` or ``no_respam`` — cart activity after a
  finished series, within ``no_respam_ms`` of the last cart mail, starts none), with its figures;
- ``fired`` — a command was emitted (``variant`` ``holdout``: recorded, never sent).

``figures`` hold the numbers behind a reason as they were at that moment (times in epoch ms); the
explain tool (``streams/tools/explain.py``) turns them into words in the customer's time zone.

``pending_steps`` and ``customer_state`` answer the ops question "where is this customer, what is due
next" from a customer record alone (they read nothing the loop writes, so they run on a decoded
snapshot, in the customer's time zone); ``sunset_words`` says when the customer leaves (or left)
marketing. Times and durations are formatted by ``streams/core/timetext.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from streams.config import DAY_MS, GuardSettings
from streams.core.flows.base import Flow, KeyedFlow, SingleInstanceFlow
from streams.core.flows.sunset import Sunset
from streams.core.guards import Decision, zone
from streams.core.state import Customer
from streams.core.sunset import sunset_at
from streams.core.timetext import day, duration, iso, when, zone_words

__all__ = ["DecisionLog", "Entry", "PendingStep", "customer_state", "day", "duration", "iso", "leaves_marketing",
           "left_marketing", "pending_steps", "sunset_of", "sunset_words", "when", "zone"]


@dataclass
class Entry:
    kind: str  # fact | scheduled | ended | deferred | dropped | fired
    at: int  # event time the decision belongs to (ms)
    customer_id: str
    flow: str = ""
    step: int | None = None
    due: int | None = None  # scheduled: when; deferred: when it was due
    until: int | None = None  # deferred: when it goes now
    reason: str = ""
    cause: str = ""  # ended / scheduled: "<topic>:<type>" of the fact, "timer", "series_done"
    figures: dict[str, Any] = field(default_factory=dict)
    # a fact
    topic: str = ""
    event_id: str = ""
    event_type: str = ""
    status: str = ""  # on_time | late | future | duplicate
    behind_ms: int = 0
    # fired
    command_id: str = ""
    variant: str = ""
    category: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The fields that say something (empty ones left out); ``step`` whenever it is set, 0 included
        (a flow's start)."""
        return {k: v for k, v in asdict(self).items()
                if v not in ("", None, {}, 0) or k in ("at", "kind") or (k == "step" and v is not None)}


@dataclass(frozen=True)
class PendingStep:
    flow: str
    step: int  # 0: the flow's start (a win-back lapse date) rather than a step
    due: int
    deferred: bool  # due at a guard's deferral rather than its schedule
    key: str = ""  # a keyed flow's key (order id, SKU)


def pending_steps(flows: Iterable[Flow], c: Customer) -> list[PendingStep]:
    """Every flow's next due step for the customer, earliest first."""
    out: list[PendingStep] = []
    for f in flows:
        if not f.has_timers:
            continue
        due = f.leaves_at(c) if isinstance(f, Sunset) else f.next_due(c)  # not a click's verdict: a step of none
        if due is None:
            continue
        step, deferred, key = 0, False, ""
        if isinstance(f, SingleInstanceFlow):
            inst = f.instance(c)
            if inst is not None:
                step, deferred = inst.next, inst.d is not None and inst.d == due
        elif isinstance(f, KeyedFlow):
            key = f.due_key(c, due)
            inst = f.timers(c)[key]
            step, deferred = inst.next, inst.d is not None and inst.d == due
        out.append(PendingStep(f.name, step, due, deferred, key))
    out.sort(key=lambda s: (s.due, s.flow))
    return out


class DecisionLog:
    """Entries for the customers in ``ids`` (``None``: all). Attached to one engine at a time."""

    def __init__(self, ids: Iterable[str] | None = None) -> None:
        self.ids: frozenset[str] | None = None if ids is None else frozenset(ids)
        self.entries: list[Entry] = []
        self._flows: tuple[Flow, ...] = ()
        self._customers: Mapping[str, Customer] = {}
        self._clock: Any = None  # the engine's FlowContext (clock, watermark)
        self._pending: dict[str, dict[str, PendingStep]] = {}  # customer → flow → last seen pending step

    def attach(self, flows: tuple[Flow, ...], customers: Mapping[str, Customer], ctx: Any) -> None:
        self._flows = flows
        self._customers = customers
        self._clock = ctx

    def wants(self, cid: str) -> bool:
        return self.ids is None or cid in self.ids

    def drain(self) -> list[Entry]:
        out, self.entries = self.entries, []
        return out

    # ---- hooks (the engine and the flows call these only when a log is attached) --------------
    def arrived(self, cid: str, topic: str, record: dict[str, Any], clock: int, grace_ms: int,
                duplicate: bool, tick_ms: int, max_future_ms: int) -> None:
        if not self.wants(cid):
            return
        at = int(record["occurred_at"])
        if duplicate:
            status, behind = "duplicate", 0
        elif clock and at < clock - grace_ms:
            status, behind = "late", clock - at
        elif at > clock and tick_ms and at - tick_ms > max_future_ms:
            status, behind = "future", 0
        else:
            status, behind = "on_time", 0
        self.entries.append(Entry("fact", at, cid, topic=topic, event_id=str(record.get("event_id", "")),
                                  event_type=str(record.get("type", "")), status=status, behind_ms=behind,
                                  figures={"clock": clock, "grace_ms": grace_ms}))

    def guarded(self, cid: str, flow: str, step: int, due: int, expires_at: int, decision: Decision,
                c: Customer, guards: GuardSettings) -> None:
        """A guard deferred or dropped a due marketing step (``guards.decide``'s answer)."""
        if not self.wants(cid):
            return
        figures = self._customer_figures(c, decision.reason)
        figures["expires_at"] = expires_at
        if decision.reason.endswith("frequency_cap"):
            figures["cap_ms"] = guards.frequency_cap_ms
        if decision.reason.endswith("quiet_hours") or decision.reason.endswith("frequency_cap"):
            figures["quiet"] = [guards.quiet_start_hour, guards.quiet_end_hour]
        if "provider_pause" in decision.reason and self._clock is not None:  # provider_paused, expired_by_provider_pause
            figures.update(self._clock.deliverability.pause_figures(c.p.email, due))
        if decision.action == "defer":
            self.entries.append(Entry("deferred", due, cid, flow, step, due=due, until=decision.at,
                                      reason=decision.reason, figures=figures))
            pending = self._pending.setdefault(cid, {})
            old = pending.get(flow)  # the deferral is logged here, not again as a re-schedule
            pending[flow] = PendingStep(flow, step, decision.at, True, old.key if old is not None else "")
        else:
            self.entries.append(Entry("dropped", due, cid, flow, step, due=due, reason=decision.reason,
                                      figures=figures))

    def dropped(self, cid: str, flow: str, step: int, reason: str) -> None:
        """A step will not be sent (``FlowContext.dropped``: every drop goes through it)."""
        if not self.wants(cid):
            return
        last = self.entries[-1] if self.entries else None
        if (last is not None and last.kind == "dropped" and last.customer_id == cid and last.flow == flow
                and last.step == step and last.reason == reason):
            return  # the guard's drop, already recorded with its figures
        c = self._customers.get(cid)
        figures = self._customer_figures(c, reason) if c is not None else {}
        wm = self._clock.watermark if self._clock is not None else 0
        if reason == "late_start":
            figures["watermark"] = wm
        self.entries.append(Entry("dropped", wm, cid, flow, step, reason=reason, figures=figures))

    def fired(self, cid: str, flow: str, step: int, at: int, command_id: str, variant: str,
              category: str) -> None:
        if not self.wants(cid):
            return
        self.entries.append(Entry("fired", at, cid, flow, step, due=at, command_id=command_id,
                                  variant=variant, category=category))

    def observe(self, cid: str, c: Customer, topic: str, record: dict[str, Any] | None, at: int) -> None:
        """The customer's state may have changed (a fact settled, a timer fired): record each flow
        whose next step appeared, moved or went away since the last look."""
        if not self.wants(cid):
            return
        before = self._pending.get(cid, {})
        now = {s.flow: s for s in pending_steps(self._flows, c)}
        cause = "timer" if record is None else f"{topic}:{record.get('type', '')}"
        fact_at = at if record is None else int(record["occurred_at"])
        for name, old in before.items():
            if name not in now:
                ended_by = "series_done" if record is None else cause
                figures: dict[str, Any] = {} if record is None else {"fact_at": fact_at, "event_id": record.get("event_id")}
                self.entries.append(Entry("ended", fact_at, cid, name, old.step, due=old.due, cause=ended_by,
                                          figures=figures))
        for name, step in now.items():
            old = before.get(name)
            if old is None or (old.due, old.step, old.key) != (step.due, step.step, step.key):
                self.entries.append(Entry("scheduled", fact_at, cid, name, step.step, due=step.due,
                                          cause=cause, figures={"key": step.key} if step.key else {}))
        self._pending[cid] = now

    # ---- figures -----------------------------------------------------------------------------
    @staticmethod
    def _customer_figures(c: Customer | None, reason: str) -> dict[str, Any]:
        if c is None:
            return {}
        p = c.p
        figures: dict[str, Any] = {"tz": p.tz or "UTC"}
        if reason.endswith("frequency_cap") and c.mk is not None:
            figures["last_marketing_at"] = c.mk
        elif reason == "no_consent":
            figures["consent_at"] = p.opt_at
        elif reason in ("unsubscribed", "hard_bounced", "complained") and c.sup is not None:
            figures["since"] = {"unsubscribed": c.sup.u, "hard_bounced": c.sup.b, "complained": c.sup.c}[reason]
        elif reason == "after_goodbye":
            figures["goodbye_at"] = c.gb
        elif reason == "no_respam":
            figures["last_sent"] = c.abandoned_cart.last_sent if c.abandoned_cart is not None else None
        elif reason == "weekly_cap":
            figures["last_due"] = c.browse.last_due if c.browse is not None else None
        return figures


# ---- words ------------------------------------------------------------------------------------------

def sunset_of(flows: Iterable[Flow]) -> Sunset | None:
    """The sunset flow among ``flows`` (None when it is not configured)."""
    return next((f for f in flows if isinstance(f, Sunset)), None)


def leaves_marketing(at: int | None, tz: ZoneInfo) -> str:
    """"leaves marketing on 2026-06-30 unless they order or click" (the sunset timer's due time)."""
    return f"leaves marketing on {day(at, tz)} unless they order or click"


def left_marketing(at: int | None, days: int, tz: ZoneInfo) -> str:
    """"left marketing on 2026-06-30 (no order or click for 180 days)" (the day left out when not known)."""
    on = f" on {day(at, tz)}" if at is not None else ""
    return f"left marketing{on} (no order or click for {days} days)"


def sunset_words(c: Customer, flow: Sunset | None, tz: ZoneInfo) -> tuple[str, int] | None:
    """Sunset in words (``left_marketing`` or ``leaves_marketing``) and its time; None when it does not
    apply."""
    if flow is None or not flow.after_ms:
        return None
    if c.sunset_since is not None:
        return left_marketing(c.sunset_since, flow.after_ms // DAY_MS, tz), c.sunset_since
    if not c.p.opt:
        return None
    at = sunset_at(c, flow.after_ms)
    if at is None:
        return None
    return leaves_marketing(at, tz), at


def customer_state(cid: str, c: Customer, flows: Iterable[Flow], clock_ms: int) -> dict[str, Any]:
    """The customer's state in words and the next due mail steps, times in their zone (``clock_ms``: the
    partition's event-time clock, which due times are measured from). Sunset's timer sends no mail: it
    is a sentence of the state and its own ``sunset`` entry, not a step of ``next_due``."""
    p = c.p
    tz = zone(p.tz)
    flows = tuple(flows)
    steps_of = {f.name: _step_count(f) for f in flows}

    def next_step(flow: str, n: int) -> str:
        return f"next step {n}" if n <= steps_of.get(flow, n) else "every step done"

    state = [f"email {'known' if p.email else 'not known'}, locale {p.loc or 'en'}, time zone {zone_words(p.tz)}"]
    if p.opt is None:
        state.append("no marketing consent decision yet")
    else:
        state.append(f"marketing consent {'given' if p.opt else 'withdrawn'} at {when(p.opt_at, tz)}")
    sup = c.sup
    if sup is not None:
        for name, at in (("unsubscribed", sup.u), ("hard bounced", sup.b), ("complained", sup.c)):
            if at is not None:
                state.append(f"{name} at {when(at, tz)}: no marketing mail")
    sunset = sunset_words(c, sunset_of(flows), tz)
    if sunset is not None:
        state.append(sunset[0])
    o = c.ord
    if o is not None and o.n:
        state.append(f"{o.n} order(s), the last placed at {when(o.last, tz)}")
    cart = c.abandoned_cart.run if c.abandoned_cart is not None else None
    if cart is not None:
        state.append(_cart_words(c, cart, next((f for f in flows if f.name == "abandoned_cart"), None),
                                 steps_of.get("abandoned_cart", 3), tz))
    wb = c.win_back
    if wb is not None and wb.run is not None:
        state.append(f"win-back series ({wb.run.seg}) since {when(wb.run.a, tz)}, "
                     f"{next_step('win_back', wb.run.next)}")
    elif wb is not None and wb.lapses_at is not None:
        state.append(f"lapses (win-back) at {when(wb.lapses_at, tz)}")
    if c.mk is not None:
        state.append(f"last marketing mail at {when(c.mk, tz)}")
    if c.gb is not None:
        state.append(f"win-back goodbye sent at {when(c.gb, tz)}: no marketing until the customer stays")
    if c.buf:
        state.append(f"{len(c.buf)} fact(s) waiting for the watermark to settle")
    steps = [{"flow": s.flow, "step": s.step, "due": iso(s.due, tz), "due_ms": s.due, "in": duration(s.due - clock_ms),
              "deferred_by_guard": s.deferred, **({"key": s.key} if s.key else {})}
             for s in pending_steps(flows, c) if s.flow != Sunset.name]
    doc: dict[str, Any] = {"customer_id": cid, "timezone": tz.key, "clock": iso(clock_ms, tz),
                           "clock_ms": clock_ms, "state": state, "next_due": steps}
    if sunset is not None:
        doc["sunset"] = {"text": sunset[0], "at": iso(sunset[1], tz), "at_ms": sunset[1],
                         "in": duration(sunset[1] - clock_ms), "left": c.sunset_since is not None}
    return doc


def _step_count(flow: Flow) -> int:
    """The steps a flow's series has as configured (its delays), else as declared."""
    return len(getattr(flow, "delays", ())) or flow.steps


def _cart_words(c: Customer, cart: Any, flow: Flow | None, steps: int, tz: ZoneInfo) -> str:
    """The open cart and where its series stands (``steps``: its series' step count). Cart activity after a
    finished series, within the flow's ``no_respam_ms`` of the last cart mail, starts no series: said as such,
    with when one would."""
    lines = f"cart {cart.id} with {len(cart.items)} line(s), last activity {when(cart.a, tz)}"
    if cart.next <= steps:
        return f"open {lines}, next step {cart.next}"
    st = c.abandoned_cart
    last = st.last_sent if st is not None else None
    if last is None or cart.a <= last:
        return f"open {lines}: every step of its series sent"
    respam = getattr(getattr(flow, "options", None), "no_respam_ms", None)
    again = f"; cart activity from {when(last + respam, tz)} starts a new series" if respam else ""
    return (f"open {lines}: no series for it — the last cart series sent its last step at {when(last, tz)}, "
            f"{duration(cart.a - last, signed=False)} before{again}")
