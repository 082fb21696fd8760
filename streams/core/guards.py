"""Guards for marketing mail: consent, suppression, frequency cap, quiet hours, expiry (pure).

``decide(...)`` answers, for a marketing step due at ``at``: send now, defer until a later time (cap or
quiet hours), or drop with a reason (no consent / suppressed / no email / past expiry).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.config import GuardSettings


@dataclass(frozen=True)
class Decision:
    action: str  # "send" | "defer" | "drop"
    at: int = 0  # when to send (send) or retry (defer)
    reason: str = ""


@lru_cache(maxsize=512)
def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_hours_release(at_ms: int, tz: str | None, start_hour: int, end_hour: int) -> int:
    """``at_ms`` if outside quiet hours in ``tz``, else the next ``end_hour``:00 local (DST-correct)."""
    if start_hour == end_hour:
        return at_ms  # quiet hours disabled
    zone = _zone(tz)
    local = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).astimezone(zone)
    h = local.hour
    quiet = (h >= start_hour or h < end_hour) if start_hour > end_hour else (start_hour <= h < end_hour)
    if not quiet:
        return at_ms
    if start_hour > end_hour:  # wraps midnight, e.g. 22:00–08:00
        day = local.date() + timedelta(days=1) if h >= start_hour else local.date()
    else:
        day = local.date()
    release = datetime(day.year, day.month, day.day, end_hour, 0, tzinfo=zone)
    return int(release.timestamp() * 1000)


def decide(profile: dict[str, Any], suppression: dict[str, int], last_marketing_at: int | None, at: int,
           expires_at: int, guards: GuardSettings) -> Decision:
    if not profile.get("email"):
        return Decision("drop", reason="no_email")
    if not profile.get("opt"):
        return Decision("drop", reason="no_consent")
    for key, reason in (("u", "unsubscribed"), ("b", "hard_bounced"), ("c", "complained")):
        if key in suppression and suppression[key] <= at:
            return Decision("drop", reason=reason)
    when = at
    if last_marketing_at is not None and when < last_marketing_at + guards.frequency_cap_ms:
        when = last_marketing_at + guards.frequency_cap_ms
    when = quiet_hours_release(when, profile.get("tz"), guards.quiet_start_hour, guards.quiet_end_hour)
    if when > expires_at:
        return Decision("drop", reason="expired_by_frequency_cap" if last_marketing_at is not None
                        and at < last_marketing_at + guards.frequency_cap_ms else "expired_by_quiet_hours")
    if when > at:
        return Decision("defer", at=when, reason="frequency_cap" if last_marketing_at is not None
                        and at < last_marketing_at + guards.frequency_cap_ms else "quiet_hours")
    return Decision("send", at=at)
