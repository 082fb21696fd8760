"""Sunset (streams/core/sunset.py): no mail of its own — it keeps each consented customer's engaged time,
fires once when they are sunset, and defines the audience ``sunset`` (ad platforms exclude it).

- ``settle``: consent given (a customer record with consent while none was anchored) anchors the engaged
  time; consent withdrawn forgets it (a later consent starts afresh); an order placed, a human click and
  a "keep me subscribed" click move it forward and bring a sunset customer back (``sunset:returned``).
- a click counts only if it is a person's by the report's rules (``EngagementRules``, one code for both):
  no scanner agent, later than ``metrics.bot_click_within_ms`` after ITS message's delivery (the last
  ``RECENT_DELIVERIES`` messages delivered are remembered with their delivery time; a click on an older
  one is judged without timing, as the report judges a message whose delivery it does not hold), and not
  part of a link burst (``bot_burst_links`` distinct links of the message within ``bot_burst_window_ms``).
  A burst is only known once that window has passed: such a click waits (``recent_clicks``, with the
  clicks of its message around it) and is decided when the partition's watermark (its clock less the
  late grace; the clock moves with records and ticks) passes its time + ``bot_burst_window_ms``. It then
  counts at its own time. A sunset that falls while a click before it waits is decided after the click.
  A verdict is final: a burst click arriving later than the late grace does not undo a return.
- kept clicks: only what can still change a verdict — the waiting clicks and the clicks of their message
  within the burst window of one. A click judged a bot's outright (scanner agent, too soon after its
  delivery) near no waiting click is not kept, and once no click waits the list is empty.
- the timer: the earlier of the sunset (``after_days`` after the engaged time) and the next waiting
  click's verdict. Firing (or being skipped by a late fact) decides the clicks whose window has passed,
  then marks the customer sunset if they still are (``sunset:entered``). A marketing step the sunset
  would drop while a click at or before its time waits is decided again 1 ms after that click's verdict
  (``click_verdict_after`` in streams/core/sunset.py), so a person's click sends it.
"""

from __future__ import annotations

from bisect import insort
from typing import Any

from streams.config import FlowSettings, SunsetSettings
from streams.core.context import FlowContext
from streams.core.engagement import EngagementRules, message_key
from streams.core.flows.base import Command, Flow
from streams.core.state import Customer
from streams.core.sunset import legacy_anchor, sunset_after_ms

AUDIENCE = "sunset"
RECENT_DELIVERIES = 8  # messages whose delivery time a customer's record keeps (a click is judged against its own)
MAX_KEPT_CLICKS = 32  # clicks kept around waiting ones (a scanner clicking more links is a burst anyway)


class Sunset(Flow):
    name = "sunset"
    category = "marketing"  # it decides about marketing mail; it sends none (``steps = 0``)
    priority = 8
    steps = 0
    settle_topics = frozenset({"customers", "orders", "feedback"})
    has_timers = True
    timer_key = "engaged_at"
    audiences = (AUDIENCE,)
    audience_key = "sunset_since"  # empty: in none of them (not asked)

    def __init__(self, ctx: FlowContext) -> None:
        super().__init__(ctx)
        self.after_ms = sunset_after_ms(self.options)
        self.rules = EngagementRules(ctx.settings.metrics)

    @staticmethod
    def settings_of(flows: FlowSettings) -> SunsetSettings:
        return flows.sunset

    def settle(self, cid: str, c: Customer, topic: str, r: dict[str, Any]) -> None:
        kind = r["type"]
        at = r["occurred_at"]
        if topic == "customers":
            if not c.p.opt:
                c.engaged_at = c.sunset_since = None  # no consent: nothing to anchor
                c.recent_clicks = []
            elif c.engaged_at is None:
                c.engaged_at = at  # consent given
            return
        if topic == "orders":
            if kind == "placed":
                self._engaged(c, at)
            return
        if kind == "delivered":
            self._delivered(c, message_key(r), at)
        elif kind == "clicked":
            self._clicked(c, r, at)
        elif kind == "resubscribed":
            self._engaged(c, at)

    @staticmethod
    def _delivered(c: Customer, key: str, at: int) -> None:
        """Remember the message's first delivery among the last ``RECENT_DELIVERIES`` messages."""
        deliveries = c.recent_deliveries
        if c.last_delivery is not None:  # a record from before recent_deliveries
            deliveries.append(c.last_delivery)
            c.last_delivery = None
        for i, (known, first) in enumerate(deliveries):
            if known == key:
                if at < first:
                    deliveries[i] = (key, at)
                return
        deliveries.append((key, at))
        if len(deliveries) > RECENT_DELIVERIES:
            del deliveries[:-RECENT_DELIVERIES]

    @staticmethod
    def delivered_at(c: Customer, key: str) -> int | None:
        """When the message was delivered, if it is one of the customer's recent messages."""
        for known, first in c.recent_deliveries:
            if known == key:
                return first
        last = c.last_delivery
        return last[1] if last is not None and last[0] == key else None

    def _clicked(self, c: Customer, r: dict[str, Any], at: int) -> None:
        if not c.p.opt:
            return  # no consent: a click moves nothing
        key = message_key(r)
        waiting = self.rules.classify_click(r, self.delivered_at(c, key), False).human  # burst: once its window passed
        if waiting and self.rules.burst_links <= 0:
            self._engaged(c, at)
            return
        clicks = c.recent_clicks
        if not waiting and not self._near_waiting(clicks, key, at):
            return  # a bot's outright (scanner agent, too soon): kept only while it can make a waiting click a burst
        if c.engaged_at is None:  # a record from before sunset: its timer needs the anchor
            anchor = legacy_anchor(c)
            c.engaged_at = at if anchor is None else anchor
        insort(clicks, (at, key, str(r.get("link") or ""), waiting))
        self._forget_clicks(c, at)

    def _near_waiting(self, clicks: list[tuple[int, str, str, bool]], key: str, at: int) -> bool:
        """Is a click of message ``key`` at ``at`` within the burst window of a click of it waiting for its verdict?"""
        window = self.rules.burst_window_ms
        return any(waiting and known == key and abs(t - at) <= window for t, known, _, waiting in clicks)

    def _forget_clicks(self, c: Customer, now: int) -> None:
        """Keep only what can still change a verdict: the waiting clicks and the clicks of their message
        within the burst window of one (at most ``MAX_KEPT_CLICKS``). A decided verdict is final, so once no
        click waits the list is empty: a bot's clicks never stay in the record."""
        clicks = c.recent_clicks
        if not any(waiting for *_, waiting in clicks):
            clicks.clear()
            return
        kept = [k for k in clicks if k[3] or self._near_waiting(clicks, k[1], k[0])]
        if len(kept) != len(clicks):
            clicks[:] = kept
        if len(clicks) > MAX_KEPT_CLICKS:
            del clicks[:-MAX_KEPT_CLICKS]

    def _decide_clicks(self, c: Customer, now: int) -> None:
        """Each waiting click whose burst window the clock has passed: a person's unless it is in a burst."""
        clicks = c.recent_clicks
        window = self.rules.burst_window_ms
        for i, (at, key, link, waiting) in enumerate(clicks):
            if not waiting or at + window >= now:
                continue
            same = [j for j, k in enumerate(clicks) if k[1] == key]
            flags = self.rules.burst_flags([(clicks[j][0], clicks[j][2]) for j in same])
            clicks[i] = (at, key, link, False)
            if not flags[same.index(i)]:
                self._engaged(c, at)
        self._forget_clicks(c, now)

    def _decision_due(self, c: Customer) -> int | None:
        """When the earliest waiting click is decided (its time + the burst window + 1 ms)."""
        first = next((t for t, _, _, waiting in c.recent_clicks if waiting), None)
        return None if first is None else first + self.rules.burst_window_ms + 1

    def _sunset_due(self, c: Customer) -> int | None:
        """When the customer is sunset, unless a click at or before that waits for its verdict."""
        due = self.leaves_at(c)
        if due is None:
            return None
        if any(waiting and t <= due for t, _, _, waiting in c.recent_clicks):
            return None
        return due

    def _engaged(self, c: Customer, at: int) -> None:
        if not c.p.opt:
            return  # consent, when it comes, anchors the time
        if c.engaged_at is None or at > c.engaged_at:
            c.engaged_at = at
            if c.sunset_since is not None:
                c.sunset_since = None
                self.ctx.count("sunset:returned")

    def next_due(self, c: Customer) -> int | None:
        if c.recent_clicks:
            sunset, decision = self._sunset_due(c), self._decision_due(c)
            return decision if sunset is None else sunset if decision is None else min(sunset, decision)
        at = c.engaged_at  # not None: the engine asks only then (``timer_key``)
        if at is None or c.sunset_since is not None or not self.after_ms or not c.p.opt:
            return None
        return at + self.after_ms  # ``sunset_at`` for a customer with an engaged time (hot path)

    def leaves_at(self, c: Customer) -> int | None:
        """When the customer leaves marketing as things stand (None: sunset already, or not counted); a
        waiting click is not a pending step of its own (``explain`` shows this one)."""
        at = c.engaged_at
        if at is None or c.sunset_since is not None or not self.after_ms or not c.p.opt:
            return None
        return at + self.after_ms

    def fire(self, cid: str, c: Customer, due: int) -> list[Command]:
        if c.recent_clicks:
            self._decide_clicks(c, due)
        sunset = self._sunset_due(c)
        if sunset is not None and sunset <= due:
            c.sunset_since = sunset
            self.ctx.count("sunset:entered")
        return []

    def skip(self, cid: str, c: Customer, due: int) -> None:
        self.fire(cid, c, due)

    def audience_of(self, c: Customer) -> tuple[str, ...]:
        return (AUDIENCE,) if c.sunset_since is not None else ()

    def settled_until(self, c: Customer) -> int:
        return c.engaged_at or 0
