"""Guards for marketing mail: consent, suppression, frequency cap, quiet hours, expiry (pure).

``decide(...)`` answers, for a marketing step due at ``at``: send now, defer until a later time (cap or
quiet hours), or drop with a reason (no consent / suppressed / no email / past expiry).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.config import DAY_MS, HOUR_MS, GuardSettings
from streams.core.state import Profile, Suppression


class ProviderPause(Protocol):
    """The complaint and bounce guard as the decision sees it (streams/core/deliverability.py)."""

    drop_on_stop: bool

    def paused(self, email: str | None, at: int) -> int | None:
        """None: marketing to this address may go at ``at``; else when to ask again."""

    def held_between(self, email: str | None, start: int, end: int) -> bool:
        """Was marketing to this address paused at some time from ``start`` to ``end``?"""

    def release_offset(self, email: str | None) -> int:
        """The offset after a boundary at which a step held for this address asks again."""


class Decision(NamedTuple):
    action: str  # "send" | "defer" | "drop"
    at: int = 0  # when to send (send) or retry (defer)
    reason: str = ""


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` (UTC when unknown or empty)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


_SLOT_MS = 15 * 60 * 1000  # every UTC offset in use is a multiple of 15 minutes, so is every transition
_EXACT = -1  # cached for a slot whose local hour is not uniform: compute per instant
_release_cache: dict[tuple[str | None, int, int, int], int | None] = {}


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_day_offsets: dict[tuple[str | None, int], int | None] = {}


def quiet_hours_release(at_ms: int, tz: str | None, start_hour: int, end_hour: int) -> int:
    """``at_ms`` if outside quiet hours in ``tz``, else the next ``end_hour``:00 local (DST-correct).

    On a UTC day through which ``tz`` keeps one UTC offset (all but the few days of a transition) the local
    hour is plain arithmetic, and the release of a quiet night is cached per local date; on a transition
    day each 15-minute UTC slot is converted (``_slot_release``)."""
    if start_hour == end_hour:
        return at_ms  # quiet hours disabled
    utc_day = at_ms // DAY_MS
    try:
        offset = _day_offsets[(tz, utc_day)]
    except KeyError:
        offset = _day_offset(tz, utc_day)
        if len(_day_offsets) > 200_000:
            _day_offsets.clear()
        _day_offsets[(tz, utc_day)] = offset
    if offset is not None:
        local = at_ms + offset
        h = local // HOUR_MS % 24
        if start_hour > end_hour:  # wraps midnight, e.g. 22:00–08:00
            if h >= start_hour:
                return _night_release(tz, local // DAY_MS + 1, end_hour)
            return _night_release(tz, local // DAY_MS, end_hour) if h < end_hour else at_ms
        return _night_release(tz, local // DAY_MS, end_hour) if start_hour <= h < end_hour else at_ms
    slot = at_ms // _SLOT_MS  # the answer is the same for every instant of a 15-minute UTC slot
    key = (tz, start_hour, end_hour, slot)
    try:
        release = _release_cache[key]
    except KeyError:
        release = _slot_release(slot * _SLOT_MS, tz, start_hour, end_hour)
        if len(_release_cache) > 200_000:
            _release_cache.clear()
        _release_cache[key] = release
    if release is None:
        return at_ms
    if release == _EXACT:
        return _release(at_ms, tz, start_hour, end_hour) or at_ms
    return release


def _day_offset(tz: str | None, utc_day: int) -> int | None:
    """The UTC offset of ``tz`` in ms through the whole UTC day ``utc_day`` (days since the epoch), or None
    when it changes during that day (no zone changes its offset twice within a day)."""
    local_zone = zone(tz)
    first = datetime.fromtimestamp(utc_day * DAY_MS / 1000, tz=timezone.utc).astimezone(local_zone).utcoffset()
    last = datetime.fromtimestamp(((utc_day + 1) * DAY_MS - 1) / 1000, tz=timezone.utc).astimezone(local_zone).utcoffset()
    if first is None or first != last:
        return None
    return first // timedelta(milliseconds=1)


@lru_cache(maxsize=4096)
def _night_release(tz: str | None, local_day: int, end_hour: int) -> int:
    """``end_hour``:00 local in ``tz`` on the local date ``local_day`` (days since the epoch), in ms."""
    day = date.fromordinal(_EPOCH_ORDINAL + local_day)
    return int(datetime(day.year, day.month, day.day, end_hour, 0, tzinfo=zone(tz)).timestamp() * 1000)


def _slot_release(slot_start: int, tz: str | None, start_hour: int, end_hour: int) -> int | None:
    local_zone = zone(tz)
    first = datetime.fromtimestamp(slot_start / 1000, tz=timezone.utc).astimezone(local_zone)
    last = datetime.fromtimestamp((slot_start + _SLOT_MS - 1) / 1000, tz=timezone.utc).astimezone(local_zone)
    if first.utcoffset() != last.utcoffset() or first.hour != last.hour:
        return _EXACT  # an offset that is not a multiple of 15 minutes (none in use today)
    return _local_release(first, local_zone, start_hour, end_hour)


def _release(at_ms: int, tz: str | None, start_hour: int, end_hour: int) -> int | None:
    """``None`` outside quiet hours, else the next ``end_hour``:00 local."""
    local_zone = zone(tz)
    return _local_release(datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).astimezone(local_zone), local_zone,
                          start_hour, end_hour)


def _local_release(local: datetime, zone: ZoneInfo, start_hour: int, end_hour: int) -> int | None:
    """``_release`` for an instant already converted to local time in ``zone``."""
    h = local.hour
    quiet = (h >= start_hour or h < end_hour) if start_hour > end_hour else (start_hour <= h < end_hour)
    if not quiet:
        return None
    if start_hour > end_hour:  # wraps midnight, e.g. 22:00–08:00
        day = local.date() + timedelta(days=1) if h >= start_hour else local.date()
    else:
        day = local.date()
    release = datetime(day.year, day.month, day.day, end_hour, 0, tzinfo=zone)
    return int(release.timestamp() * 1000)


def decide(profile: Profile, suppression: Suppression | None, last_marketing_at: int | None, at: int,
           expires_at: int, guards: GuardSettings, goodbye_at: int | None = None, sunset_at: int | None = None,
           provider: ProviderPause | None = None, first_due: int | None = None) -> Decision:
    """``goodbye_at``: when the win-back goodbye went out (no marketing after it until the customer
    clicks "keep me subscribed"). ``sunset_at``: when the customer is sunset (no human click and no order
    for ``flows.sunset.after_days``; streams/core/sunset.py). ``provider``: the complaint and bounce guard —
    marketing to a paused mailbox provider is deferred to when the guard asks to be asked again (dropped
    once that is past ``expires_at``), or dropped when the guard drops on stop. ``first_due``: when the step
    was first due; a step the pause held since then that quiet hours now move keeps its release offset (the
    held mail stays spread), and dropped past its expiry it is ``expired_by_provider_pause`` when the pause
    held it longer than quiet hours or the cap would."""
    if not profile.email:
        return Decision("drop", reason="no_email")
    if not profile.opt:
        return Decision("drop", reason="no_consent")
    if goodbye_at is not None and goodbye_at <= at:
        return Decision("drop", reason="after_goodbye")
    if suppression is not None:
        for since, reason in ((suppression.u, "unsubscribed"), (suppression.b, "hard_bounced"),
                              (suppression.c, "complained")):
            if since is not None and since <= at:
                return Decision("drop", reason=reason)
    if sunset_at is not None and sunset_at <= at:
        return Decision("drop", reason="sunset")
    if provider is not None:
        retry = provider.paused(profile.email, at)
        if retry is not None:
            if provider.drop_on_stop:
                return Decision("drop", reason="provider_paused")
            if retry > expires_at:
                return Decision("drop", reason="expired_by_provider_pause")
            return Decision("defer", at=retry, reason="provider_paused")
    when = at
    if last_marketing_at is not None and when < last_marketing_at + guards.frequency_cap_ms:
        when = last_marketing_at + guards.frequency_cap_ms
    capped = when
    when = quiet_hours_release(when, profile.tz, guards.quiet_start_hour, guards.quiet_end_hour)
    held = (when > at and provider is not None and first_due is not None and first_due < at
            and provider.held_between(profile.email, first_due, at))
    if held and when > capped:  # quiet hours move mail the pause held: released over the same spread
        when += provider.release_offset(profile.email)  # type: ignore[union-attr]
    if when > expires_at:
        if held and at - first_due >= when - at:  # type: ignore[operator]
            return Decision("drop", reason="expired_by_provider_pause")  # the pause held it longest
        return Decision("drop", reason="expired_by_frequency_cap" if last_marketing_at is not None
                        and at < last_marketing_at + guards.frequency_cap_ms else "expired_by_quiet_hours")
    if when > at:
        return Decision("defer", at=when, reason="frequency_cap" if last_marketing_at is not None
                        and at < last_marketing_at + guards.frequency_cap_ms else "quiet_hours")
    return Decision("send", at=at)
