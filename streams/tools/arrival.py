"""When an input record reached its topic, and which facts reached it after their partition's clock had
passed them (a worker that kept up applied those late, after timers the clock had already fired).

The log does not say in which order production applied its records: a worker that kept up took them
as they arrived, one working through a backlog in event-time order. What the log does say is when each
record arrived (its Kafka timestamp, for records whose producer did not stamp them with their event
time) and how far the partition's clock records had got by then. ``explain`` and ``replay`` use this to
name the likely cause of a difference from production.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from streams.core.timetext import duration, iso, when_exact

__all__ = ["Arrived", "LateArrival", "arrival", "late_arrivals", "late_words"]


@dataclass(frozen=True, slots=True)
class Arrived:
    """What the lateness rule needs of one input record."""

    logical: str  # the input topic's logical name ("clock" for clock records)
    partition: int
    offset: int
    customer_id: str | None
    event_time: int  # occurred_at, or tick_at for a clock record (ms)
    timestamp: int | None  # the Kafka record's timestamp (ms); None where there is none (a file)
    kind: str = ""  # the record's type (``placed``, ``item_added``…)
    topic: str = ""  # the topic's name

    @property
    def where(self) -> str:
        """``topic[partition] offset n`` (or the logical name where the topic is not known)."""
        return f"{self.topic or self.logical}[{self.partition}] offset {self.offset}"

    def as_dict(self) -> dict[str, object]:
        return {"topic": self.topic or self.logical, "partition": self.partition, "offset": self.offset,
                "type": self.kind, "event_time": iso(self.event_time), "event_time_ms": self.event_time,
                "timestamp_ms": self.timestamp}


def arrival(logical: str, event_time: int, timestamp: int | None) -> int | None:
    """When the record reached its topic, as far as the log tells: its Kafka timestamp, which a producer
    that does not set one gets as the time it produced the record (the worker's clock ticks are produced
    that way). A record whose timestamp equals its event time was stamped with the event time (a replay
    copies timestamps; some producers set them): when it arrived is not known (None)."""
    if timestamp is None or timestamp < 0:
        return None
    if logical != "clock" and timestamp == event_time:
        return None
    return timestamp


@dataclass(frozen=True)
class LateArrival:
    """A fact that reached its topic when the partition's clock records already stood past it."""

    record: Arrived
    arrived_at: int  # its Kafka timestamp
    clock: int  # the highest tick of the partition's clock records produced by then
    by: str = "clock records"  # what the clock was: the partition's clock records, or every record of it ("partition's records")

    @property
    def behind_ms(self) -> int:
        return self.clock - self.record.event_time

    def as_dict(self) -> dict[str, object]:
        """For JSON: where the fact is, its event time, when it arrived and the clock then (ISO, UTC,
        with the epoch milliseconds beside them)."""
        return {**self.record.as_dict(), "arrived_at": iso(self.arrived_at), "arrived_at_ms": self.arrived_at,
                "clock": iso(self.clock), "clock_ms": self.clock, "late_by_ms": self.behind_ms}


def late_arrivals(records: Iterable[Arrived], grace_ms: int, every_record: bool = False) -> list[LateArrival]:
    """The non-clock ``records`` that arrived when their partition's clock records (of ``records``) had
    already passed their event time by more than ``grace_ms``, in the order given.

    ``every_record``: the clock is every record of the partition that arrived before (by Kafka timestamp),
    facts as well as clock records — what a run that merges by Kafka timestamp (``--order arrival``) has
    seen when it reaches the record, so a fact produced after later facts (a backlog written topic by topic)
    is late there though a worker merging by event time applied it on time."""
    records = list(records)
    ticks: dict[int, list[tuple[int, int]]] = {}
    for r in records:
        if (every_record or r.logical == "clock") and r.timestamp is not None and r.timestamp >= 0:
            ticks.setdefault(r.partition, []).append((r.timestamp, r.event_time))
    clocks: dict[int, tuple[list[int], list[int]]] = {}
    for p, series in ticks.items():
        series.sort()
        clocks[p] = ([ts for ts, _ in series], list(itertools.accumulate((t for _, t in series), max)))
    late: list[LateArrival] = []
    for r in records:
        if r.logical == "clock" or r.partition not in clocks:
            continue
        at = r.timestamp if every_record else arrival(r.logical, r.event_time, r.timestamp)
        if at is None or at < 0:
            continue
        produced, stood = clocks[r.partition]
        # the records produced by ``at`` (strictly before it when every record counts: not the record itself)
        n = bisect.bisect_left(produced, at) if every_record else bisect.bisect_right(produced, at)
        if n and r.event_time < stood[n - 1] - grace_ms:
            late.append(LateArrival(r, at, stood[n - 1], "partition's records" if every_record else "clock records"))
    return late


def late_words(late: LateArrival, tz: ZoneInfo) -> str:
    """``orders placed at … was produced at …, when the clock records stood at … (late by 1 min 28 s)
    (shop.orders[0] offset 7)``, times in ``tz``."""
    r = late.record
    return (f"{r.logical} {r.kind} at {when_exact(r.event_time, tz)} was produced at {when_exact(late.arrived_at, tz)}, "
            f"when the {late.by} stood at {when_exact(late.clock, tz)} (late by {duration(late.behind_ms, signed=False)}) "
            f"({r.where})")
