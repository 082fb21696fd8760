"""Attribution: what each flow, step and variant earned (pure, deterministic, event time).

Inputs are the four streams the pipeline already has — ``email.commands`` (flow/step/variant of each
command id), ``email.outcomes`` (sent/suppressed/failed), ``email.feedback`` (delivered, opened,
clicked, unsubscribed, bounced) and ``shop.orders`` — fed in event-time order (``feed`` sorts them).

- Every open is **human** or **machine** and every click **human** or **bot**
  (``streams.core.engagement``: Apple Mail Privacy Protection, scanner user agents, seconds after
  delivery, a burst of links). Machine opens and bot clicks are counted apart, never dropped, and
  never touch a customer.
- A **touch** is a human click (the attribution model is *last click*); with
  ``metrics.attribute_opens`` a human open is one too. The customer's last touch wins.
- An order **converts** the touched command when it comes within the attribution window after the
  touch (``metrics.click_window_ms``, default 5 days, after a click; ``metrics.open_window_ms``,
  default 1 day, after an open when opens attribute). ``attributed_command_id`` on the order, when
  present, wins over any touch (the shop saw the customer arrive from that email). A command counts
  as converted once; every attributed order adds its total to its revenue.
- **Holdout** customers (commands with variant ``holdout``, never sent) are the control group. The
  comparison with them (``streams.analytics.experiments``) is *intent to treat* with one unit per
  customer: each customer counts once in their arm, from their first (would-be) send in the
  experiment, and ordered when they placed an order after it within the click window, clicked or
  not. The per-command figures here (``assigned``: sent, suppressed or failed alike; ``ordered``;
  ``revenue_in_window``) describe the rows and are not what is set against the holdout. Last-click
  conversions and revenue are a different figure (what the mail is credited with) and never compared
  with the holdout's orders.
- Rates are per recipient: over ``sent`` (for the holdout, the commands held back). **RPR** (revenue
  per recipient) is last-click attributed revenue ÷ sent.
- Money is per **currency** (the order's ``currency``): amounts of different currencies are never
  added. ``table`` gives each (flow, step, variant, day) one row per currency of the input's orders:
  the orders on a row (``converted``, ``ordered``, revenue) are those in the row's currency only; the
  other counts (sent, assigned, opens, clicks, …) are the flow step's, all currencies, repeated on
  each currency's row (sum one currency's rows, never across them).
- Complaints, unsubscribes and bounces count on the flow, step and variant of their command.
- Rows are per (flow, step, variant, UTC day of the send[, currency]).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from streams.config import DAY_MS, HOUR_MS, MetricsSettings
from streams.core.engagement import HUMAN, HUMAN_VERDICT, EngagementRules, Verdict, message_key

HOLDOUT = "holdout"


@dataclass
class Row:
    flow: str
    step: int
    variant: str
    day: str
    currency: str = ""  # ISO 4217 code of every amount of the row ("" when the input has no order)
    sent: int = 0
    delivered: int = 0
    opened: int = 0  # messages opened at all (= human_opened + machine_opened)
    human_opened: int = 0  # …by a person (a human open, or a human click)
    machine_opened: int = 0  # …only by machines (Apple's proxy, scanners, at delivery)
    clicked: int = 0  # messages clicked at all (= human_clicked + bot_clicked)
    human_clicked: int = 0
    bot_clicked: int = 0  # …only by bots
    converted: int = 0  # messages with a placed order attributed by last click (one per message)
    revenue: Decimal = field(default_factory=lambda: Decimal("0"))  # last-click attributed revenue
    revenue_sumsq: float = 0.0  # Σ (attributed revenue of one message)²
    assigned: int = 0  # commands of the variant (intent to treat: sent, suppressed or failed; holdout: held back)
    ordered: int = 0  # …whose customer placed an order within the window after the (would-be) send
    revenue_in_window: Decimal = field(default_factory=lambda: Decimal("0"))  # those orders' revenue
    revenue_in_window_sumsq: float = 0.0  # Σ (revenue in the window of one command)², for the interval
    unsubscribes: int = 0
    bounces: int = 0
    complaints: int = 0
    suppressed: int = 0
    failed: int = 0

    def rate(self, n: int) -> float:
        return n / self.sent if self.sent else 0.0

    @property
    def rpr(self) -> Decimal:
        """Revenue per recipient: last-click attributed revenue ÷ sent."""
        return (self.revenue / self.sent).quantize(Decimal("0.0001")) if self.sent else Decimal("0")

    @property
    def ordered_rate(self) -> float:
        """Share of the assigned commands whose customer ordered within the window (intent to treat)."""
        return self.ordered / self.assigned if self.assigned else 0.0

    @property
    def rpr_in_window(self) -> Decimal:
        """Revenue of every order within the window ÷ assigned commands (intent to treat)."""
        return (self.revenue_in_window / self.assigned).quantize(Decimal("0.0001")) if self.assigned \
            else Decimal("0")

    @property
    def complaint_rate(self) -> float:
        """Complaints ÷ delivered, the rate mailbox providers judge (0 without a delivery)."""
        return self.complaints / self.delivered if self.delivered else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "step": self.step, "variant": self.variant, "day": self.day,
                "currency": self.currency, "sent": self.sent,
                "human_click_rate": round(self.rate(self.human_clicked), 4),
                "placed_order_rate": round(self.rate(self.converted), 4), "rpr": str(self.rpr),
                "revenue": str(self.revenue), "converted": self.converted, "delivered": self.delivered,
                "human_clicked": self.human_clicked, "bot_clicked": self.bot_clicked, "clicked": self.clicked,
                "opened": self.opened, "human_opened": self.human_opened, "machine_opened": self.machine_opened,
                "human_open_rate": round(self.rate(self.human_opened), 4),
                "machine_open_rate": round(self.rate(self.machine_opened), 4),
                "open_rate": round(self.rate(self.opened), 4), "click_rate": round(self.rate(self.clicked), 4),
                "unsubscribes": self.unsubscribes, "bounces": self.bounces, "complaints": self.complaints,
                "complaint_rate": round(self.complaint_rate, 5), "suppressed": self.suppressed,
                "failed": self.failed, "assigned": self.assigned, "ordered": self.ordered,
                "ordered_rate": round(self.ordered_rate, 4), "revenue_in_window": str(self.revenue_in_window),
                "rpr_in_window": str(self.rpr_in_window)}


EVENT_COUNTS = ("delivered", "unsubscribes", "bounces", "complaints", "suppressed", "failed")
DEFAULT_CURRENCY = "USD"  # OrderEvent.currency's schema default


@dataclass
class _Cmd:
    flow: str
    step: int
    variant: str
    customer: str
    send_at: int
    day: str = ""
    sent: bool = False
    converted: bool = False
    ordered: bool = False  # an order by the customer within the window after send_at (intent to treat)
    human_open: bool = False
    machine_open: bool = False
    human_click: bool = False
    bot_click: bool = False
    revenue: dict[str, Decimal] = field(default_factory=dict)  # currency → last-click attributed revenue
    revenue_in_window: dict[str, Decimal] = field(default_factory=dict)  # currency → orders in the window

    def add_to(self, row: Row) -> None:
        """Counts to ``row``; orders (conversions, revenue) only of ``row.currency``."""
        opened = self.human_open or self.machine_open or self.human_click
        human_opened = self.human_open or self.human_click  # a click implies an open (images blocked)
        row.sent += self.sent
        row.opened += opened
        row.human_opened += human_opened
        row.machine_opened += opened and not human_opened
        row.clicked += self.human_click or self.bot_click
        row.human_clicked += self.human_click
        row.bot_clicked += self.bot_click and not self.human_click
        row.converted += row.currency in self.revenue  # orders of the row's currency only
        row.assigned += 1
        row.ordered += row.currency in self.revenue_in_window
        revenue = self.revenue.get(row.currency, Decimal("0"))
        row.revenue += revenue
        row.revenue_sumsq += float(revenue) ** 2
        in_window = self.revenue_in_window.get(row.currency, Decimal("0"))
        row.revenue_in_window += in_window
        row.revenue_in_window_sumsq += float(in_window) ** 2


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal("0")


def _duration(ms: int) -> str:
    if ms % DAY_MS == 0:
        return f"{ms // DAY_MS} day" + ("s" if ms != DAY_MS else "")
    if ms % HOUR_MS == 0:
        return f"{ms // HOUR_MS} h"
    return f"{ms / 1000:g} s"


def window_label(settings: MetricsSettings) -> str:
    """The attribution model and window, as printed with the figures."""
    if settings.attribute_opens:
        return (f"last human touch: click {_duration(settings.click_window_ms)}, "
                f"open {_duration(settings.open_window_ms)}")
    return f"last click, {_duration(settings.click_window_ms)}"


def holdout_rule(settings: MetricsSettings) -> str:
    """How a variant is compared with its holdout, as printed with the figures."""
    return (f"intent to treat, customers from their first send in the experiment: in both groups a customer who "
            f"orders within {_duration(settings.click_window_ms)} after their first (would-be) send counts, "
            "clicked or not")


def currency_of(order: dict[str, Any]) -> str:
    return str(order.get("currency") or DEFAULT_CURRENCY).strip().upper()


def event_time(kind: str, rec: dict[str, Any]) -> int:
    return int(rec["send_at"] if kind == "command" else rec["occurred_at"])


KIND_ORDER = {"command": 0, "outcome": 1, "feedback": 2, "order": 3}


class Attribution:
    def __init__(self, settings: MetricsSettings | None = None) -> None:
        self.settings = settings or MetricsSettings()
        self.rules = EngagementRules(self.settings)
        self.commands: dict[str, _Cmd] = {}
        self.counts: dict[tuple[str, int, str, str], Counter[str]] = {}  # per row: EVENT_COUNTS
        self.last_touch: dict[str, tuple[int, str, str]] = {}  # customer → (time, command id, kind)
        self.by_customer: dict[str, list[str]] = {}  # customer → command ids (every variant and the holdout)
        self.currencies: set[str] = set()  # of the placed orders fed
        self.orders: dict[str, list[tuple[int, str, Decimal]]] = {}  # customer → (time, currency, total) placed
        self.engagement: Counter[tuple[str, str, str]] = Counter()  # (type, signal, reason) → feedback records
        self._seen: dict[str, list[dict[str, Any]]] = {}  # message → its feedback so far (add_feedback alone)

    def _count(self, cmd: _Cmd, name: str = "") -> None:
        counts = self.counts.setdefault((cmd.flow, cmd.step, cmd.variant, cmd.day), Counter())
        if name:
            counts[name] += 1

    # ---- inputs ---------------------------------------------------------------------------------
    def add_command(self, c: dict[str, Any]) -> None:
        if c["command_id"] in self.commands:
            return
        cmd = self.commands[c["command_id"]] = _Cmd(c["flow"], c["step"], c["variant"], c["customer_id"],
                                                    c["send_at"], _day(c["send_at"]))
        self.by_customer.setdefault(cmd.customer, []).append(c["command_id"])
        self._count(cmd)  # assigned: in its group whatever becomes of it (intent to treat)
        if c["variant"] == HOLDOUT:
            cmd.sent = True  # the control group "receives" the would-be email

    def add_outcome(self, o: dict[str, Any]) -> None:
        cmd = self.commands.get(o["command_id"])
        if cmd is None:  # outcome without its command (e.g. a narrower time range): from the outcome
            cmd = self.commands[o["command_id"]] = _Cmd(o["flow"], o["step"], o["variant"], o["customer_id"],
                                                        o["occurred_at"], _day(o["occurred_at"]))
            self.by_customer.setdefault(cmd.customer, []).append(o["command_id"])
        if cmd.variant == HOLDOUT:
            return
        self._count(cmd)
        if o["outcome"] == "sent":
            cmd.sent = True
        elif o["outcome"] == "suppressed":
            self._count(cmd, "suppressed")
        elif o["outcome"] == "failed":
            self._count(cmd, "failed")

    def add_feedback(self, f: dict[str, Any]) -> None:
        """One feedback record, its open or click judged on its message's feedback so far (``feed``
        judges every open and click on all of its message's feedback instead)."""
        seen = self._seen.setdefault(message_key(f), [])
        seen.append(f)
        self._apply_feedback(f, self.rules.classify_all(seen)[-1])

    def _apply_feedback(self, f: dict[str, Any], verdict: Verdict | None) -> None:
        cmd = self.commands.get(f.get("command_id") or "")
        if cmd is None or cmd.variant == HOLDOUT:
            return  # SES timestamps may precede the sink's outcome record: any known command counts
        self._count(cmd)
        kind = f["type"]
        if kind in ("opened", "clicked"):
            verdict = verdict or HUMAN_VERDICT  # classify_all judges every open and click
            self.engagement[(kind, verdict.signal, verdict.reason)] += 1
            human = verdict.signal == HUMAN
            if kind == "opened":
                cmd.human_open |= human
                cmd.machine_open |= not human
                if human and self.settings.attribute_opens:
                    self.last_touch[cmd.customer] = (f["occurred_at"], f["command_id"], "open")
            else:
                cmd.human_click |= human
                cmd.bot_click |= not human
                if human:
                    self.last_touch[cmd.customer] = (f["occurred_at"], f["command_id"], "click")
        elif kind == "delivered":
            self._count(cmd, "delivered")
        elif kind == "unsubscribed":
            self._count(cmd, "unsubscribes")
        elif kind == "bounced":
            self._count(cmd, "bounces")
        elif kind == "complained":
            self._count(cmd, "complaints")

    def add_order(self, o: dict[str, Any]) -> None:
        if o["type"] != "placed":
            return
        at, customer = o["occurred_at"], o["customer_id"]
        currency, total = currency_of(o), _money(o["total"])
        self.currencies.add(currency)
        self.orders.setdefault(customer, []).append((at, currency, total))
        for cid in self.by_customer.get(customer, []):  # intent to treat: every group alike, clicks aside
            cmd = self.commands[cid]
            if 0 < at - cmd.send_at <= self.settings.click_window_ms:  # after: not the order that triggered it
                cmd.ordered = True
                cmd.revenue_in_window[currency] = cmd.revenue_in_window.get(currency, Decimal("0")) + total
        target: str | None = None
        explicit = o.get("attributed_command_id")
        if explicit and explicit in self.commands:
            target = explicit
        else:
            touch = self.last_touch.get(customer)
            if touch is not None:
                t, cid, kind = touch
                window = self.settings.click_window_ms if kind == "click" else self.settings.open_window_ms
                if 0 <= at - t <= window:
                    target = cid
        if target is None or self.commands[target].variant == HOLDOUT:
            return
        cmd = self.commands[target]
        self._count(cmd)
        cmd.converted = True
        cmd.revenue[currency] = cmd.revenue.get(currency, Decimal("0")) + total

    def feed(self, records: Iterable[tuple[str, dict[str, Any]]]) -> "Attribution":
        """Apply (kind, record) pairs — kind ∈ command, outcome, feedback, order — in event-time order.
        Opens and clicks are judged on all of their message's feedback given here."""
        ordered = sorted(records, key=lambda kr: (event_time(*kr), KIND_ORDER[kr[0]]))
        feedback = [rec for kind, rec in ordered if kind == "feedback"]
        verdicts = iter(self.rules.classify_all(feedback))
        for kind, rec in ordered:
            if kind == "feedback":
                self._apply_feedback(rec, next(verdicts))
            else:
                getattr(self, f"add_{kind}")(rec)
        return self

    # ---- outputs --------------------------------------------------------------------------------
    def table(self, by_day: bool = False) -> list[Row]:
        """One row per (flow, step, variant, day or "all") and currency the flow took money in (orders
        attributed to or in the window of its commands); a flow without money gets the input's only
        currency, or "" when its orders have several or none. Counts on each row, money of its currency."""
        rows: dict[tuple[str, int, str, str, str], Row] = {}
        taken: dict[str, set[str]] = {}
        for cmd in self.commands.values():
            taken.setdefault(cmd.flow, set()).update(cmd.revenue, cmd.revenue_in_window)
        fallback = sorted(self.currencies) if len(self.currencies) == 1 else [""]

        def rows_of(key: tuple[str, int, str, str]) -> list[Row]:
            k = key if by_day else (key[0], key[1], key[2], "all")
            out = []
            for currency in sorted(taken.get(key[0]) or ()) or fallback:
                row = rows.get((*k, currency))
                if row is None:
                    row = rows[(*k, currency)] = Row(*k, currency)
                out.append(row)
            return out

        for key, counts in self.counts.items():
            for row in rows_of(key):
                for name in EVENT_COUNTS:
                    setattr(row, name, getattr(row, name) + counts[name])
        for cmd in self.commands.values():
            key = (cmd.flow, cmd.step, cmd.variant, cmd.day)
            if key in self.counts:
                for row in rows_of(key):
                    cmd.add_to(row)
        return sorted(rows.values(), key=lambda r: (r.flow, r.step, r.variant, r.day, r.currency))
