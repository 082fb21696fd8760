"""Attribution: what each flow, step and variant earned (pure, deterministic, event time).

Inputs are the four streams the pipeline already has — ``email.commands`` (flow/step/variant of each
command id), ``email.outcomes`` (sent/suppressed/failed), ``email.feedback`` (delivered, opened,
clicked, unsubscribed, bounced) and ``shop.orders`` — fed in event-time order (``feed`` sorts them).

- A **touch** is an open or a click of an email. The customer's last touch wins.
- An order **converts** the touched command when it comes within the attribution window after the
  touch (``metrics.click_window_ms``, default 5 days, after a click; ``metrics.open_window_ms``,
  default 1 day, after an open). ``attributed_command_id`` on the order, when present, wins over any
  touch. A command counts as converted once; every attributed order adds its total to recovered revenue.
- **Holdout** customers (commands with variant ``holdout``, never sent) are the control group: their
  "conversion" is an order within the click window after the would-be send time.
- Rows are per (flow, step, variant, UTC day of the send).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from streams.config import MetricsSettings

HOLDOUT = "holdout"


@dataclass
class Row:
    flow: str
    step: int
    variant: str
    day: str
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    revenue: Decimal = field(default_factory=lambda: Decimal("0"))
    unsubscribes: int = 0
    bounces: int = 0
    suppressed: int = 0
    failed: int = 0

    def rate(self, n: int) -> float:
        return n / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "step": self.step, "variant": self.variant, "day": self.day, "sent": self.sent,
                "delivered": self.delivered, "opened": self.opened, "clicked": self.clicked,
                "converted": self.converted, "revenue": str(self.revenue), "unsubscribes": self.unsubscribes,
                "bounces": self.bounces, "suppressed": self.suppressed, "failed": self.failed,
                "open_rate": round(self.rate(self.opened), 4), "click_rate": round(self.rate(self.clicked), 4),
                "conversion_rate": round(self.rate(self.converted), 4)}


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
    opened: bool = False
    clicked: bool = False


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal("0")


def event_time(kind: str, rec: dict[str, Any]) -> int:
    return int(rec["send_at"] if kind == "command" else rec["occurred_at"])


KIND_ORDER = {"command": 0, "outcome": 1, "feedback": 2, "order": 3}


class Attribution:
    def __init__(self, settings: MetricsSettings | None = None) -> None:
        self.settings = settings or MetricsSettings()
        self.commands: dict[str, _Cmd] = {}
        self.rows: dict[tuple[str, int, str, str], Row] = {}
        self.last_touch: dict[str, tuple[int, str, str]] = {}  # customer → (time, command id, kind)
        self.holdouts: dict[str, list[str]] = {}  # customer → holdout command ids (control)

    def _row(self, cmd: _Cmd) -> Row:
        key = (cmd.flow, cmd.step, cmd.variant, cmd.day)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(cmd.flow, cmd.step, cmd.variant, cmd.day)
        return row

    # ---- inputs ---------------------------------------------------------------------------------
    def add_command(self, c: dict[str, Any]) -> None:
        cmd = _Cmd(c["flow"], c["step"], c["variant"], c["customer_id"], c["send_at"], _day(c["send_at"]))
        self.commands.setdefault(c["command_id"], cmd)
        if c["variant"] == HOLDOUT:
            self.holdouts.setdefault(c["customer_id"], []).append(c["command_id"])
            cmd.sent = True  # the control group "receives" the would-be email
            self._row(cmd).sent += 1

    def add_outcome(self, o: dict[str, Any]) -> None:
        cmd = self.commands.get(o["command_id"])
        if cmd is None:  # outcome without its command (e.g. a narrower time range): from the outcome
            cmd = self.commands[o["command_id"]] = _Cmd(o["flow"], o["step"], o["variant"], o["customer_id"],
                                                        o["occurred_at"], _day(o["occurred_at"]))
        if cmd.variant == HOLDOUT:
            return
        row = self._row(cmd)
        if o["outcome"] == "sent" and not cmd.sent:
            cmd.sent = True
            row.sent += 1
        elif o["outcome"] == "suppressed":
            row.suppressed += 1
        elif o["outcome"] == "failed":
            row.failed += 1

    def add_feedback(self, f: dict[str, Any]) -> None:
        cmd = self.commands.get(f.get("command_id") or "")
        if cmd is None or cmd.variant == HOLDOUT:
            return  # SES timestamps may precede the sink's outcome record: any known command counts
        row = self._row(cmd)
        kind = f["type"]
        if kind == "delivered":
            row.delivered += 1
        elif kind == "opened":
            if not cmd.opened:
                cmd.opened = True
                row.opened += 1
            self.last_touch[cmd.customer] = (f["occurred_at"], f["command_id"], "open")
        elif kind == "clicked":
            if not cmd.clicked:
                cmd.clicked = True
                row.clicked += 1
            if not cmd.opened:  # a click implies an open (image blocking hides many opens)
                cmd.opened = True
                row.opened += 1
            self.last_touch[cmd.customer] = (f["occurred_at"], f["command_id"], "click")
        elif kind == "unsubscribed":
            row.unsubscribes += 1
        elif kind == "bounced":
            row.bounces += 1

    def add_order(self, o: dict[str, Any]) -> None:
        if o["type"] != "placed":
            return
        at, customer = o["occurred_at"], o["customer_id"]
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
        if target is None:
            for cid in reversed(self.holdouts.get(customer, [])):
                cmd = self.commands[cid]
                if 0 <= at - cmd.send_at <= self.settings.click_window_ms:
                    target = cid
                    break
        if target is None:
            return
        cmd = self.commands[target]
        row = self._row(cmd)
        if not cmd.converted:
            cmd.converted = True
            row.converted += 1
        row.revenue += _money(o["total"])

    def feed(self, records: Iterable[tuple[str, dict[str, Any]]]) -> "Attribution":
        """Apply (kind, record) pairs — kind ∈ command, outcome, feedback, order — in event-time order."""
        ordered = sorted(records, key=lambda kr: (event_time(*kr), KIND_ORDER[kr[0]]))
        for kind, rec in ordered:
            getattr(self, f"add_{kind}")(rec)
        return self

    # ---- outputs --------------------------------------------------------------------------------
    def table(self, by_day: bool = False) -> list[Row]:
        if by_day:
            return sorted(self.rows.values(), key=lambda r: (r.flow, r.step, r.variant, r.day))
        merged: dict[tuple[str, int, str], Row] = {}
        for r in self.rows.values():
            m = merged.setdefault((r.flow, r.step, r.variant), Row(r.flow, r.step, r.variant, "all"))
            for name in ("sent", "delivered", "opened", "clicked", "converted", "unsubscribes", "bounces",
                         "suppressed", "failed"):
                setattr(m, name, getattr(m, name) + getattr(r, name))
            m.revenue += r.revenue
        return sorted(merged.values(), key=lambda r: (r.flow, r.step, r.variant))
