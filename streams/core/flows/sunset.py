"""Sunset (streams/core/sunset.py): no mail of its own — it keeps each consented customer's engaged time,
fires once when they are sunset, and defines the audience ``sunset`` (ad platforms exclude it).

- ``settle``: consent given (a customer record with consent while none was anchored) anchors the engaged
  time; consent withdrawn forgets it (a later consent starts afresh); an order placed, a human click and
  a "keep me subscribed" click move it forward and bring a sunset customer back (``sunset:returned``).
  The latest delivery is remembered (message and time) so a click within seconds of its message's
  delivery is judged a bot's, as the report judges it.
- the timer: due ``after_days`` after the engaged time; firing (or being skipped by a late fact) marks the
  customer sunset (``sunset:entered``). Every consented customer has it, so the engine reads it from the
  customer's ``sunset_pending_from`` (the engaged time while not sunset, kept here with ``engaged_at`` and
  ``sunset_since``) plus ``after_days`` (``timer_after_ms``), without asking ``next_due``. Marketing
  decisions do not wait for it: they compare times (``streams/core/guards.py``), so a step due at the same
  moment is dropped whatever fires first.
"""

from __future__ import annotations

from typing import Any

from streams.config import FlowSettings, SunsetSettings
from streams.core.context import FlowContext
from streams.core.engagement import EngagementRules, message_key
from streams.core.flows.base import Command, Flow
from streams.core.state import Customer
from streams.core.sunset import sunset_after_ms

AUDIENCE = "sunset"


class Sunset(Flow):
    name = "sunset"
    category = "marketing"  # it decides about marketing mail; it sends none (``steps = 0``)
    priority = 8
    steps = 0
    settle_topics = frozenset({"customers", "orders", "feedback"})
    has_timers = True
    timer_key = "sunset_pending_from"  # the time the timer counts from (``timer_after_ms`` after it)
    audiences = (AUDIENCE,)
    audience_key = "sunset_since"  # empty: in none of them (not asked)

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self.after_ms = sunset_after_ms(self.options)
        self.timer_after_ms = self.after_ms
        self.timers_on = self.after_ms > 0  # sunset switched off: the engine never asks for its timer
        self.rules = EngagementRules(ctx.settings.metrics)

    @staticmethod
    def settings_of(flows: FlowSettings) -> SunsetSettings:
        return flows.sunset

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        kind = r["type"]
        at = r["occurred_at"]
        if topic == "customers":
            if not c.p.opt:
                c.engaged_at = c.sunset_since = c.sunset_pending_from = None  # no consent: nothing to anchor
            elif c.engaged_at is None:
                c.engaged_at = c.sunset_pending_from = at  # consent given
            return
        if topic == "orders":
            if kind == "placed":
                self._engaged(c, at)
            return
        if kind == "delivered":
            c.last_delivery = (message_key(r), at)
        elif kind == "clicked":
            last = c.last_delivery
            delivered_at = last[1] if last is not None and last[0] == message_key(r) else None
            if self.rules.classify_click(r, delivered_at, False).human:
                self._engaged(c, at)
        elif kind == "resubscribed":
            self._engaged(c, at)

    def _engaged(self, c: Customer, at: int) -> None:
        if not c.p.opt:
            return  # consent, when it comes, anchors the time
        if c.engaged_at is None or at > c.engaged_at:
            c.engaged_at = c.sunset_pending_from = at
            if c.sunset_since is not None:
                c.sunset_since = None
                self.ctx.count("sunset:returned")

    def next_due(self, c: Customer) -> int | None:
        """What the engine reads without asking (``timer_key`` + ``timer_after_ms``); asked by explain."""
        at = c.sunset_pending_from
        if at is None or not self.after_ms:
            return None
        return at + self.after_ms

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        c.sunset_since = due
        c.sunset_pending_from = None
        self.ctx.count("sunset:entered")
        return []

    def skip(self, cid: str, c: Customer, due: int) -> None:
        self.fire(cid, c, due)

    def audience_of(self, c: Customer) -> tuple[str, ...]:
        return (AUDIENCE,) if c.sunset_since is not None else ()

    def settled_until(self, c: Customer) -> int:
        return c.engaged_at or 0
