"""Times and durations as people read them (pure): one implementation for the decision log's words,
the worker's customer query, ``explain`` and the data-team tools (``streams/tools/readable.py``).

- ``iso``: ISO-8601 with seconds and the offset, ``2026-01-14T13:15:30+01:00`` (milliseconds only when
  they are not zero) — for JSON and the data-team tables;
- ``when``: the short form used inside sentences, ``2026-01-14 13:15 +01:00``;
- ``day``: the date alone, ``2026-01-14``;
- ``duration``: ``+1 h``, ``+1 h 30 min``, ``−2 d 3 h`` (the two largest units, rounded down).

Every time is shown in an IANA zone (the customer's, UTC when none or an unknown one).
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from streams.core.guards import zone as zone_named

__all__ = ["MINUS", "UNITS", "day", "duration", "iso", "local", "when", "zone_words"]

UNITS = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000), ("ms", 1))
MINUS = "−"  # U+2212: a duration's sign reads as a sign, not a hyphen
NONE = "—"  # no time


def local(ms: int, tz: ZoneInfo | str | None = None) -> datetime:
    """Epoch milliseconds as an aware datetime in ``tz`` (a zone, an IANA name, or None: UTC)."""
    zone = tz if isinstance(tz, ZoneInfo) else zone_named(tz)
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).astimezone(zone)


def zone_words(name: str | None) -> str:
    """The zone times are shown in, as a reader should see it: ``Europe/Warsaw``; ``UTC`` for none; for
    a name that is no IANA zone, ``UTC (time zone 'Mars/Phobos' unknown)`` — never the unknown name alone."""
    used = zone_named(name).key
    return used if not name or used == name else f"{used} (time zone {name!r} unknown)"


def iso(ms: int, tz: ZoneInfo | str | None = None) -> str:
    """``2026-01-14T13:15:30+00:00`` (``…30.768+00:00`` when the milliseconds are not zero)."""
    return local(ms, tz).isoformat(timespec="seconds" if ms % 1000 == 0 else "milliseconds")


def when(ms: int | None, tz: ZoneInfo | str | None = None) -> str:
    """``2026-01-05 14:03 +01:00`` in ``tz`` (``—`` for none): a time inside a sentence."""
    return _stamp(ms, tz, "%Y-%m-%d %H:%M ")


def when_exact(ms: int | None, tz: ZoneInfo | str | None = None) -> str:
    """``2026-01-05 14:03:27 +01:00``: :func:`when` to the second, where seconds decide (lateness)."""
    return _stamp(ms, tz, "%Y-%m-%d %H:%M:%S ")


def _stamp(ms: int | None, tz: ZoneInfo | str | None, fmt: str) -> str:
    if ms is None:
        return NONE
    at = local(ms, tz)
    offset = at.strftime("%z")
    return at.strftime(fmt) + offset[:3] + ":" + offset[3:]


def day(ms: int | None, tz: ZoneInfo | str | None = None) -> str:
    """``2026-06-30`` in ``tz`` (``—`` for none)."""
    return NONE if ms is None else local(ms, tz).strftime("%Y-%m-%d")


def duration(ms: int, signed: bool = True) -> str:
    """Milliseconds → ``+1 h``, ``+1 h 30 min``, ``−2 d 3 h``, ``+250 ms``: the two largest units, rounded
    down; ``0`` for none. ``signed=False`` leaves the ``+`` off a positive duration."""
    if ms == 0:
        return "0"
    sign = MINUS if ms < 0 else ("+" if signed else "")
    rest = abs(int(ms))
    parts: list[str] = []
    for unit, size in UNITS:
        if rest >= size:
            parts.append(f"{rest // size} {unit}")
            rest %= size
        elif parts:
            parts.append("")  # a skipped unit still counts as one of the two
        if len(parts) == 2:
            break
    return sign + " ".join(p for p in parts if p)
