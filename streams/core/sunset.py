"""Sunset: when a customer who neither clicks nor orders stops getting marketing mail (pure rules).

A customer is *engaged* at the latest of: their last human click on a mail (a click the engagement rules
of ``streams/core/engagement.py`` judge human: no scanner agent, not within ``bot_click_within_ms`` of
the message's delivery), their last order placed, a "keep me subscribed" click, and the time they gave
marketing consent. ``flows.sunset.after_days`` (default 180) after that they are *sunset*: marketing
steps are dropped (``dropped:<flow>:sunset``) and the sunset flow (``streams/core/flows/sunset.py``) puts
them in the audience ``sunset`` for ad platforms to exclude. A human click or an order brings them back.

The engaged time lives in the customer record (``engaged_at``), set as the facts settle (event-time
order). A record written before sunset existed has none: its anchor is the later of the last order and
the last consent decision until a newer fact sets it.
"""

from __future__ import annotations

from streams.config import DAY_MS, SunsetSettings
from streams.core.state import Customer

__all__ = ["click_verdict_after", "legacy_anchor", "sunset_after_ms", "sunset_at"]


def sunset_after_ms(settings: SunsetSettings) -> int:
    """How long after the customer's engaged time they are sunset (0: sunset is off)."""
    return settings.after_days * DAY_MS if settings.enabled and settings.after_days > 0 else 0


def sunset_at(c: Customer, after_ms: int) -> int | None:
    """When the customer is (or was) sunset; None when sunset is off or nothing anchors it."""
    if not after_ms:
        return None
    anchor = c.engaged_at if c.engaged_at is not None else legacy_anchor(c)
    return None if anchor is None else anchor + after_ms


def legacy_anchor(c: Customer) -> int | None:
    """The engaged time of a record from before sunset, which has none: its last order or consent decision."""
    last_order = c.ord.last if c.ord is not None else None
    return max((t for t in (last_order, c.p.opt_at) if t is not None), default=None)


def click_verdict_after(c: Customer, at: int, burst_window_ms: int) -> int | None:
    """A marketing step due at ``at`` that the sunset would drop while a click at or before ``at`` waits for
    its burst verdict (``recent_clicks``; streams/core/flows/sunset.py): when to decide the step again — 1 ms
    after the earliest such verdict, so the sunset flow's timer has decided the click (a person's brings the
    customer back before ``at`` and the step goes). None when no click waits."""
    first = next((t for t, _, _, waiting in c.recent_clicks if waiting and t <= at), None)
    return None if first is None else max(first + burst_window_ms + 2, at + 1)
