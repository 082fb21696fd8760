"""The one protocol every flow implements, and what marketing flows share (guards, experiments).

A flow is one class (the Bytewax ``StatefulBatchLogic`` / Kafka Streams ``Processor`` shape): it is
built once per partition engine with the partition's ``FlowContext`` and then only reacts:

- ``on_arrival`` — a record arrived (before settlement): transactional mail goes out at once;
- ``settle`` — a record of one of its ``settle_topics`` settled (event-time order, behind the
  watermark): start, re-time or end its instance; ``suppressed`` — the customer unsubscribed,
  bounced or complained;
- ``next_due`` — when its earliest timer is due (``None``: none pending). The engine asks every flow
  and fires the earliest; when two are due at the same moment the lower ``priority`` goes first. It reads
  only the flow's own state and the shared facts of its ``settle_topics``: after a settled record the
  engine asks again only the flows that settle its topic (every flow after a feedback record, which can be
  a suppression), and it keeps a customer's earliest timer from one settlement to the next (a late fact,
  a global record and a restore make it ask every flow again);
- ``fire`` — its timer is due: emit the step (marketing steps pass the guards first); ``skip`` — a late
  fact put the step in the past: skip it (counted ``dropped:<flow>:late_start``);
- ``context`` — the template context of a step (``sinks/templates/emails/<name>_step<n>``);
- ``audience_of`` — which of its named retargeting ``audiences`` a customer is in now
  (``streams/core/audiences.py`` turns the answers into joins and leaves);
- ``on_global`` — a record of one of its ``global_topics`` (not keyed by customer: every partition
  engine gets every record) arrived; it may update the flow's partition tables and the state of any
  customer of the partition, and returns the ids of the customers it changed (the engine persists
  them and re-times their timers).

Flows keep their state in their own fields of the customer record (``streams/core/state.py``: readable
attribute names, short stored names), read no other flow's fields and never touch the engine. The bases
below hold what flows share: ``MarketingFlow`` the guards and experiments; ``SingleInstanceFlow``
(``SeriesFlow``) and ``KeyedFlow`` the timer plumbing (fire, skip, advance, earliest due) for one
running instance or one pending mail per key, and the declared ``exits`` (``Exit``: which facts end an
instance). docs/adding-a-flow.md walks through adding a flow.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any, ClassVar, TypeVar

import orjson

from schemas.serde import canonical_json
from streams.config import FlowSettings
from streams.core.context import FlowContext
from streams.core.customer import dec
from streams.core.guards import decide
from streams.core.ids import command_id
from streams.core.state import Customer, Instance
from streams.core.sunset import click_verdict_after, sunset_after_ms, sunset_at
from streams.core.variants import HOLDOUT, assign, experiment_for

Command = dict[str, Any]
F = TypeVar("F", bound="Flow")
S = TypeVar("S")

ITEM_FIELDS = ("sku", "name", "price", "quantity", "image_url", "url")


def items(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Line items as kept in state and contexts: the LineItem fields, with ``stock`` only where the
    shop sent it (templates claim scarcity only then). Lines that are exactly that are shared."""
    if all(len(it) == 6 and tuple(it) == ITEM_FIELDS for it in lines):
        return lines
    return [_line(it) for it in lines]


def _line(it: dict[str, Any]) -> dict[str, Any]:
    line = {"sku": it["sku"], "name": it["name"], "price": it["price"], "quantity": it["quantity"],
            "image_url": it.get("image_url"), "url": it.get("url")}
    if it.get("stock") is not None:
        line["stock"] = it["stock"]
    return line


def own(c: Customer, field: str, new: Callable[[], S]) -> S:
    """The flow's state struct in the customer's field ``field``, created empty the first time."""
    state = getattr(c, field)
    if state is None:
        state = new()
        setattr(c, field, state)
    return state  # type: ignore[no-any-return]


def timer_getters(path: str) -> tuple[str, Callable[[Customer], Any] | None]:
    """A ``timer_key`` as the engine reads it: the customer's field, and for ``field.attribute`` a C-level
    getter of that attribute through the field (asked only once the field is set: the engine reads every
    timed flow's field at once, ``fields_getter``, for every customer it settles)."""
    field, _, attr = path.partition(".")
    return field, (attrgetter(path) if attr else None)


def fields_getter(names: list[str]) -> Callable[[Customer], tuple[Any, ...]]:
    """One C-level call that reads the customer's fields ``names`` as a tuple (``itertools.compress`` then
    keeps the flows whose field is set)."""
    if not names:
        return lambda c: ()
    get = attrgetter(*names)
    if len(names) == 1:
        return lambda c: (get(c),)
    return get


def abstract_methods(cls: type) -> list[str]:
    """The methods marked ``@abstractmethod`` that ``cls`` leaves without an implementation (sorted)."""
    return sorted(name for name in dir(cls) if getattr(getattr(cls, name, None), "__isabstractmethod__", False))


def total(lines: list[dict[str, Any]]) -> str:
    return str(sum((dec(it["price"]) * it["quantity"] for it in lines), Decimal(0)).quantize(Decimal("0.01")))


def _settings_of(flows: FlowSettings) -> Any:
    """This flow's settings section (a dataclass of streams/config.py): ``Flow.settings_of``, which every flow
    implements (a static method)."""


class Flow:
    name: ClassVar[str] = ""  # every flow names itself (its templates, counters and commands carry the name)
    category: ClassVar[str] = ""  # "transactional" (sent on arrival, no guards) or "marketing"
    priority: ClassVar[int] = 9  # lower goes first when two steps are due at the same moment
    steps: ClassVar[int] = 1  # template steps: emails/<name>_step1 … _step<steps>
    settle_topics: ClassVar[frozenset[str]] = frozenset()  # logical topics ``settle`` is called for
    arrival_topics: ClassVar[frozenset[str]] = frozenset()  # logical topics ``on_arrival`` is called for
    global_topics: ClassVar[frozenset[str]] = frozenset()  # topics not keyed by customer, for ``on_global``
    has_timers: ClassVar[bool] = False  # whether ``next_due`` can ever answer
    # a customer whose field of this name (or ``field.attribute`` of the flow's own struct) is empty has no
    # timer of this flow: the engine does not ask it
    timer_key: ClassVar[str] = ""
    # likewise for ``audience_of``: a customer whose field of this name is empty is in none of the flow's
    # ``audiences``, so the audience check does not ask (empty: always asked)
    audience_key: ClassVar[str] = ""
    audiences: ClassVar[tuple[str, ...]] = ()  # retargeting audiences it defines (``audience_of``)
    # flows whose state this one asks about (through their methods, never their fields): they see every
    # record before this flow does, whatever the registry order
    after: ClassVar[tuple[type[Flow], ...]] = ()

    def __init__(self, ctx: FlowContext) -> None:
        missing = abstract_methods(type(self)) + [a for a in ("name", "category") if not getattr(self, a)]
        if missing:  # what ``abc.ABC`` would refuse (a compiled flow has a C layout, so no ABC metaclass)
            raise TypeError(f"flow {type(self).__name__} cannot be built: it does not define "
                            f"{', '.join(missing)}")
        self.ctx = ctx
        self.options = self.settings_of(ctx.settings.flows)
        self._peers: dict[type[Flow], Flow] = {}

    def connect(self, flows: tuple[Flow, ...]) -> None:
        """The partition's other flows (the engine calls this once, after building them all)."""
        self._peers = {type(f): f for f in flows if type(f) in self.after}
        missing = [cls.__name__ for cls in self.after if cls not in self._peers]
        if missing:
            raise ValueError(f"flow {self.name} needs {', '.join(missing)}, which is not registered")

    def peer(self, cls: type[F]) -> F:
        """The partition's instance of a flow named in ``after``."""
        flow = self._peers[cls]
        assert isinstance(flow, cls)
        return flow

    # spelled out, not stacked as decorators: compiled (streams/compiled.py), the stack would apply in the other order
    settings_of = staticmethod(abstractmethod(_settings_of))

    def on_arrival(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> list[Command]:
        return []

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        return None

    def on_global(self, topic: str, r: dict[str, Any], customers: Mapping[str, Customer]) -> list[str]:
        return []

    def suppressed(self, c: Customer) -> None:
        return None

    def audience_of(self, c: Customer) -> tuple[str, ...]:
        """Which of this flow's ``audiences`` the customer is in, as the flow sees them now (consent is
        the engine's: it asks only for customers who may be in an audience at all)."""
        return ()

    def next_due(self, c: Customer) -> int | None:
        return None

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        return []

    def skip(self, cid: str, c: Customer, due: int) -> None:
        return None

    def settled_until(self, c: Customer) -> int:
        """The latest event time among this flow's settled facts (0 if none)."""
        return 0

    def command(self, cid: str, c: Customer, step: int, trigger: str, at: int, expires_at: int,
                context: dict[str, Any], to: str, variant: str = "control") -> Command:
        """An EmailCommand of this flow (template ``<name>/step<step>``)."""
        p = c.p
        ctx = self.ctx
        name = self.name
        cmd_id = command_id(name, step, cid, trigger)
        loc = p.loc or "en"
        base = {"first_name": p.fn, "shop_url": ctx.shop_url, "locale": loc}
        if self.category == "marketing":
            base["unsubscribe_url"] = f"{ctx.shop_url}/unsubscribe?c={cmd_id}"
        if "coupon_code" in context:  # the sink shows the coupon's expiry in the customer's time zone
            base["timezone"] = p.tz or "UTC"
        base.update(context)
        ctx.count(f"command:{name}")
        if ctx.decisions is not None:
            ctx.decisions.fired(cid, name, step, at, cmd_id, variant, self.category)
        return {"command_id": cmd_id, "customer_id": cid, "to": to, "flow": name, "step": step,
                "template": f"{name}/step{step}", "locale": loc, "variant": variant,
                "category": self.category, "send_at": at, "expires_at": expires_at, "context": canonical_json(base),
                "trigger_event_id": trigger, "created_at": at}


del _settings_of  # only ``Flow.settings_of``


class MarketingFlow(Flow):
    """A timed series behind the guards: consent, suppression, frequency cap, quiet hours, expiry,
    then the experiment's variant (a holdout is recorded as a command the sink never sends)."""

    category = "marketing"
    has_timers = True

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self.expires_ms = self.expires_after()
        self.guards = ctx.settings.flows.guards
        self.experiments = ctx.settings.flows.experiments
        self.sunset_ms = sunset_after_ms(ctx.settings.flows.sunset)  # 0: off
        guard = ctx.deliverability
        self.provider_guard = guard if guard.enabled else None  # the complaint and bounce guard

    @abstractmethod
    def original_due(self, inst: Any) -> int:
        """When the instance's next step was due before any deferral (its expiry counts from here)."""

    @abstractmethod
    def advance(self, c: Customer, inst: Any, key: str) -> None:
        """The step is done (sent, held out, dropped or skipped): move on."""

    @abstractmethod
    def context(self, cid: str, c: Customer, inst: Any, step: int, key: str) -> dict[str, Any]:
        """The template context of ``step``."""

    def sent(self, c: Customer, due: int) -> None:
        """A step went out (not a holdout)."""
        return None

    def expires_after(self) -> int:
        return int(self.options.expires_after_ms)

    def step_command(self, cid: str, c: Customer, inst: Any, step: int, at: int, expires_at: int,
                     variant: str, key: str) -> Command:
        return self.command(cid, c, step, inst.trig, at, expires_at, self.context(cid, c, inst, step, key),
                            c.p.email or "", variant)

    def fire_instance(self, cid: str, c: Customer, inst: Instance, due: int, key: str = "") -> list[Command]:
        ctx = self.ctx
        name = self.name
        step = inst.next
        expires_at = self.original_due(inst) + self.expires_ms
        sunset_ms = self.sunset_ms
        if not sunset_ms:
            sunset = None
        elif c.engaged_at is not None:  # ``sunset_at`` for a customer with an engaged time (hot path)
            sunset = c.engaged_at + sunset_ms
        else:
            sunset = sunset_at(c, sunset_ms)
        if sunset is not None and sunset <= due and c.recent_clicks:  # a click waits: its verdict first
            verdict_at = click_verdict_after(c, due, self.ctx.settings.metrics.bot_burst_window_ms)
            if verdict_at is not None:
                inst.d = verdict_at
                return []
        decision = decide(c.p, c.sup, c.mk, due, expires_at, self.guards, c.gb, sunset, self.provider_guard,
                          expires_at - self.expires_ms)
        if ctx.decisions is not None and decision.action != "send":
            ctx.decisions.guarded(cid, name, step, due, expires_at, decision, c, self.guards)
        if decision.action == "defer":
            inst.d = decision.at
            return []
        inst.d = None
        self.advance(c, inst, key)
        if decision.action == "drop":
            ctx.dropped(cid, name, step, decision.reason)
            return []
        exp = experiment_for(self.experiments, name, step) if self.experiments else None
        variant = assign(cid, exp) if exp else "control"
        if variant == HOLDOUT:  # the control group: recorded as a command the sink never sends
            ctx.count(f"holdout:{name}")
            return [self.step_command(cid, c, inst, step, due, expires_at, variant, key)]
        c.mk = due
        self.sent(c, due)
        return [self.step_command(cid, c, inst, step, due, expires_at, variant, key)]

    def skip_instance(self, cid: str, c: Customer, inst: Instance, key: str = "") -> None:
        step = inst.next
        inst.d = None
        self.advance(c, inst, key)
        self.ctx.dropped(cid, self.name, step, "late_start")


@dataclass(frozen=True)
class Exit:
    """A settled fact that ends a flow's instance: a record of ``topic`` whose ``type`` is one of ``types``
    (with ``with_items``: only one that has line items) and whose time is at or after the instance's
    ``started`` time. A flow with one instance per key (``KeyedFlow``) names the record field holding the
    key it ends in ``key`` (``"sku"``: every line's SKU)."""

    topic: str
    types: frozenset[str]
    with_items: bool = False
    key: str = ""

    def matches(self, topic: str, r: dict[str, Any]) -> bool:
        return topic == self.topic and r["type"] in self.types and (not self.with_items or bool(r["items"]))

    def keys(self, r: dict[str, Any]) -> list[str]:
        return [it["sku"] for it in r["items"]] if self.key == "sku" else [r[self.key]]


class SingleInstanceFlow(MarketingFlow):
    """A marketing flow with at most one running instance per customer (``instance``): firing, skipping,
    a suppression and the declared ``exits`` act on it here."""

    exits: ClassVar[tuple[Exit, ...]] = ()

    @abstractmethod
    def instance(self, c: Customer) -> Instance | None:
        """The customer's running instance of this flow (None: none)."""

    @abstractmethod
    def end(self, c: Customer) -> None:
        """The instance is over: forget it."""

    def started(self, inst: Any) -> int:
        """The time an exit counts from: a fact at or after it ends the instance."""
        return 0

    def exited(self, c: Customer, topic: str, r: dict[str, Any]) -> bool:
        """Whether ``r`` is one of the ``exits`` (then the running instance, if any, has ended)."""
        for e in self.exits:  # Exit.matches, inlined (every settled record of the flow's topics)
            if topic == e.topic and r["type"] in e.types and (not e.with_items or r["items"]):
                inst = self.instance(c)
                if inst is not None and self.started(inst) <= r["occurred_at"]:
                    self.end(c)
                return True
        return False

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        inst = self.instance(c)
        assert inst is not None
        return self.fire_instance(cid, c, inst, due)

    def skip(self, cid: str, c: Customer, due: int) -> None:
        inst = self.instance(c)
        assert inst is not None
        self.skip_instance(cid, c, inst)

    def suppressed(self, c: Customer) -> None:
        self.end(c)


class KeyedFlow(MarketingFlow):
    """A marketing flow with one pending mail per key (an order, a SKU) in a dict of its state (``timers``):
    the earliest due time, which key is due, firing, skipping and the declared ``exits`` live here once.
    A mail is due at its deferral ``d`` or else at ``due`` (None: not due yet)."""

    exits: ClassVar[tuple[Exit, ...]] = ()

    @abstractmethod
    def timers(self, c: Customer) -> dict[str, Any]:
        """The customer's instances of this flow by key (each with ``due`` and ``d``)."""

    def started(self, inst: Any) -> int:
        """The time an exit counts from: a fact at or after it ends the instance."""
        return 0

    def apply_exits(self, c: Customer, topic: str, r: dict[str, Any]) -> bool:
        """End the instances ``r`` is an exit for; whether it is one of the ``exits`` at all."""
        for e in self.exits:  # Exit.matches, inlined
            if topic == e.topic and r["type"] in e.types and (not e.with_items or r["items"]):
                timers = self.timers(c)
                if timers:
                    at = r["occurred_at"]
                    for key in e.keys(r):
                        inst = timers.get(key)
                        if inst is not None and self.started(inst) <= at:
                            del timers[key]
                    if not timers:
                        self.emptied(c)
                return True
        return False

    def emptied(self, c: Customer) -> None:
        """The customer has no instance of this flow left (a flow whose dict sits in a struct of its own
        drops that struct here)."""
        return None

    def next_due(self, c: Customer) -> int | None:
        best: int | None = None
        for inst in self.timers(c).values():
            if inst.due is not None:
                t = inst.d or inst.due
                if best is None or t < best:
                    best = t
        return best

    def due_key(self, c: Customer, due: int) -> str:
        """The key whose mail is due at ``due`` (the smallest key on a tie)."""
        return min(k for k, inst in self.timers(c).items() if inst.due is not None and (inst.d or inst.due) == due)

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        key = self.due_key(c, due)
        return self.fire_instance(cid, c, self.timers(c)[key], due, key)

    def skip(self, cid: str, c: Customer, due: int) -> None:
        key = self.due_key(c, due)
        self.skip_instance(cid, c, self.timers(c)[key], key)

    def original_due(self, inst: Any) -> int:
        return inst.due or 0  # type: ignore[no-any-return]

    def advance(self, c: Customer, inst: Any, key: str) -> None:
        timers = self.timers(c)
        timers.pop(key, None)  # one mail per key
        if not timers:
            self.emptied(c)


class SeriesFlow(SingleInstanceFlow):
    """A marketing series of one instance: step n is due ``delays[n-1]`` after the instance's anchor ``a``
    (or at its deferral ``d``)."""

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self.delays: list[int] = list(self.options.delays_ms)

    def series_due(self, inst: Any) -> int | None:
        n = inst.next
        delays = self.delays
        if n <= len(delays):
            return inst.d or inst.a + delays[n - 1]  # type: ignore[no-any-return]
        return None

    def original_due(self, inst: Any) -> int:
        return inst.a + self.delays[inst.next - 1]  # type: ignore[no-any-return]

    def advance(self, c: Customer, inst: Any, key: str) -> None:
        inst.next += 1


def with_opt_out(cmd: Command) -> Command:
    """A goodbye step also links the opt-out explicitly (``opt_out_url`` = the unsubscribe link)."""
    full = orjson.loads(cmd["context"])
    full["opt_out_url"] = full["unsubscribe_url"]
    cmd["context"] = canonical_json(full)
    return cmd
