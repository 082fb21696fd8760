"""`shopmail explain CUSTOMER_ID`: why a customer got (or did not get) each mail, in words.

The customer's facts are read from their partition only (the partition the producers' murmur2
partitioner puts the customer id in) — from a JSONL file like ``simulate --input`` (in line order), or
from the topics (in the order a caught-up worker took them, rebuilt from the Kafka timestamps:
``arrival_order``; a record stamped with its event time has an unknown arrival and is never called
"on time") — and run through the same ``TaskManager`` / ``PartitionTask`` / ``PartitionEngine`` that
``simulate`` and the worker use, with a ``DecisionLog`` (streams/core/decisions.py) attached for
this one customer. Every other customer of the partition is processed too (they share the
partition's clock), but only this customer's decisions are recorded.

The timeline holds, in event-time order and in the customer's time zone:
- every fact of the customer that reached the engine (topic, partition, offset — a line number for a
  file —, event time, on time / late by how much / duplicate);
- every decision: a step scheduled (for when), fired, deferred or dropped with the guard and its
  figures, an instance ended by a fact;
- what the sink did: outcomes (sent / suppressed / failed with the SES message id) and the feedback
  (delivered, opened, clicked, bounced…), and orders that a click converted;
- from the topics, the commands production emitted (``email.commands``) as facts, and one ``differs``
  row per command the rebuilt run and production disagree on, with the likely cause.

Sunset is put in words (the day the customer leaves marketing unless they order or click, that they
left, that they came back) and its timer is kept apart from the mail steps still due. Rows that say
exactly the same at the same moment are one row with ``×N``. Sentences read times as ``when``; JSON
as ISO 8601 (``streams/core/timetext.py``).

``compare`` pairs the decisions of two runs over the same facts (another configuration) per flow
instance and step: what would change for this customer, one row per decision, a moved time included,
"not sent" for a step only one run reached.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from schemas import serde
from streams.config import Settings
from streams.core.guards import zone
from streams.core.decisions import (DecisionLog, Entry, PendingStep, leaves_marketing, left_marketing, pending_steps,
                                    sunset_of, sunset_words)
from streams.core.flows.sunset import Sunset
from streams.core.timetext import day, duration, iso, when, zone_words
from streams.core.engine import PartitionEngine
from streams.core.variants import experiment_for
from streams.kafka.partitioning import partition_for
from streams.kafka.topics import GLOBAL_INPUT_TOPICS, VALUE_SCHEMA
from streams.runtime.task import TaskOutput
from streams.runtime.tasks import TaskManager
from streams.tools.arrival import Arrived, late_arrivals, late_words
from streams.tools.arrival import arrival as arrival_of
from streams.tools.readable import progress
from streams.tools.simulate import _Router, parse_object, record_size, topic_lookup

__all__ = ["Change", "Explanation", "ExplainError", "Fact", "Row", "compare", "explain_file", "explain_records",
           "explain_topics", "iso", "when", "duration"]

ARRIVAL_UNKNOWN = "arrival order unknown"  # a topic record whose Kafka timestamp is its event time

FIXED_REASONS = {"no_email": "no email address known", "cart_series": "the abandoned-cart series is running"}


class ExplainError(Exception):
    """Nothing to explain: the input is missing or holds no fact of the customer."""


@dataclass(frozen=True)
class Fact:
    """One input record as the driver read it: where it came from, and the decoded record."""

    logical: str
    topic: str
    partition: int
    offset: int  # the record's offset; for a file, its line number
    record: dict[str, Any]
    size: int = 0
    from_file: bool = False  # ``offset`` is a line number
    timestamp: int | None = None  # the Kafka record's timestamp (ms); None for a file

    def where(self) -> str:
        return f"{self.topic}[{self.partition}] " + (f"line {self.offset}" if self.from_file else f"offset {self.offset}")


@dataclass
class Row:
    at: int  # event time (ms)
    kind: str  # fact | scheduled | ended | deferred | dropped | fired | sink | converted | production | differs
    text: str  # in words, times in the customer's zone
    data: dict[str, Any] = field(default_factory=dict)
    # where the row stands in the timeline: for the engine's rows, the latest time the engine had reached
    # when it took the row (so a fact applied late stands after what the engine did before it arrived,
    # and its consequences with it); for the sink's and production's rows, their own time
    place: int | None = field(default=None, repr=False, compare=False)

    @property
    def position(self) -> int:
        return self.at if self.place is None else self.place

    def as_dict(self, tz: ZoneInfo) -> dict[str, Any]:
        """For JSON: times as ISO-8601 with seconds and offset in the customer's zone, the epoch
        milliseconds beside them (``at_ms``, ``due_ms``, ``until_ms``); ``figures`` as the engine had them
        (epoch milliseconds)."""
        out: dict[str, Any] = {"at": iso(self.at, tz), "at_ms": self.at, "kind": self.kind, "text": self.text}
        for k, v in self.data.items():
            if k in TIME_KEYS and isinstance(v, int):
                out[k], out[f"{k}_ms"] = iso(v, tz), v
            else:
                out[k] = v
        return out


TIME_KEYS = frozenset({"due", "until"})  # epoch-ms fields of a row's data shown as ISO in JSON


@dataclass
class Explanation:
    customer_id: str
    partition: int
    timezone: str
    rows: list[Row]
    pending: list[PendingStep]  # what is still due after the last fact
    facts_read: int  # records of the partition run through the engine
    source: str
    sunset: tuple[str, int] | None = None  # sunset in words and its time, as the customer stands at the end

    @property
    def zone_words(self) -> str:
        """The zone the times are in; an unknown zone name is said to be unknown (times in UTC)."""
        return zone_words(self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def decisions(self) -> list[Row]:
        return [r for r in self.rows if r.kind in DECISION_KINDS]

    @property
    def mail_steps(self) -> list[PendingStep]:
        """The pending steps that are mails (sunset's timer sends none: it is ``sunset``)."""
        return [s for s in self.pending if s.flow != Sunset.name]

    def as_json(self) -> dict[str, Any]:
        tz = self.zone
        doc: dict[str, Any] = {
            "customer_id": self.customer_id, "partition": self.partition, "timezone": self.zone.key,
            **({"timezone_unknown": self.timezone} if self.zone.key != self.timezone else {}),
            "source": self.source, "facts_read": self.facts_read,
            "timeline": [r.as_dict(tz) for r in self.rows],
            "pending": [{"flow": s.flow, "step": s.step, "due": iso(s.due, tz), "due_ms": s.due,
                         "deferred": s.deferred, **({"key": s.key} if s.key else {})} for s in self.mail_steps]}
        if self.sunset is not None:
            doc["sunset"] = {"text": self.sunset[0], "at": iso(self.sunset[1], tz), "at_ms": self.sunset[1]}
        return doc


DECISION_KINDS = frozenset({"scheduled", "ended", "deferred", "dropped", "fired"})


# ---- words ----------------------------------------------------------------------------------------

def _step(flow: str, step: int | None) -> str:
    return f"{flow} start" if step == 0 else f"{flow} step {step}"


def _reason_words(e: Entry, tz: ZoneInfo, sunset: "_SunsetWords") -> str:
    f = e.figures
    r = e.reason
    if r.startswith("expired_by_"):  # the guard would hold it past the step's expiry
        return f"expired at {when(f.get('expires_at'), tz)} while held by the " + \
            _guard_words(r[len("expired_by_"):], e, tz, sunset)
    return _guard_words(r, e, tz, sunset)


def _guard_words(r: str, e: Entry, tz: ZoneInfo, sunset: "_SunsetWords") -> str:
    f = e.figures
    if r == "sunset":
        return sunset.left_words(sunset.due)
    if r.endswith("frequency_cap"):
        cap = duration(int(f.get("cap_ms", 0)), signed=False)
        last = f.get("last_marketing_at")
        since = f" ({duration(e.at - last, signed=False)} before)" if last is not None else ""
        return f"frequency cap: a marketing mail went out at {when(last, tz)}{since}; at most 1 per {cap}"
    if r.endswith("quiet_hours"):
        start, end = f.get("quiet", [22, 8])
        return f"quiet hours {start:02d}:00–{end:02d}:00 {zone_words(f.get('tz'))}"
    if r == "no_consent":
        at = f.get("consent_at")
        return "no marketing consent given" if at is None else f"consent withdrawn at {when(at, tz)}"
    if r in ("unsubscribed", "hard_bounced", "complained"):
        return f"{r.replace('_', ' ')} at {when(f.get('since'), tz)}"
    if r == "after_goodbye":
        return f"the win-back goodbye went out at {when(f.get('goodbye_at'), tz)}; no marketing until the customer stays"
    if r == "late_start":
        return f"a late fact put it in the past (the clock had passed it; watermark {when(f.get('watermark'), tz)})"
    if r == "weekly_cap":
        return f"one browse mail a week: the last was due {when(f.get('last_due'), tz)}"
    if r in ("provider_paused", "provider_pause") and f.get("provider"):
        cr, br = f.get("complaint_rate"), f.get("bounce_rate")
        rates = (f"complaints {cr:.2%} (stop at {f.get('complaint_stop', 0):.2%}), hard bounces {br:.2%} "
                 f"(stop at {f.get('bounce_stop', 0):.2%}) over {f.get('volume', 0):,} mails"
                 if cr is not None and br is not None else
                 f"too few mails counted since ({f.get('volume', 0):,}) to resume")
        return f"{f['provider']} paused since {when(f.get('stopped_at'), tz)}: {rates}"
    return FIXED_REASONS.get(r, r.replace("_", " "))


CAUSE_WORDS = {"feedback:clicked": "clicked", "orders:placed": "ordered",
               "feedback:resubscribed": "asked to stay subscribed", "customers:upserted": "marketing consent given"}


@dataclass
class _SunsetWords:
    """Sunset in plain words along the timeline: when the customer leaves marketing (the timer's due
    time), that they left, and that a click or an order brought them back."""

    days: int  # flows.sunset.after_days
    tz: ZoneInfo
    due: int | None = None  # when the customer leaves marketing as last scheduled
    left: bool = False

    def left_words(self, at: int | None) -> str:
        return left_marketing(at, self.days, self.tz)

    def row(self, e: Entry, data: dict[str, Any], sources: dict[str, Fact]) -> Row:
        if e.kind == "scheduled":
            leaves = leaves_marketing(e.due, self.tz)
            what = CAUSE_WORDS.get(e.cause, e.cause.replace(":", " "))
            if self.left and e.cause != "timer":
                text = f"sunset: back in marketing: {what} on {day(e.at, self.tz)}; {leaves}"
            elif self.due is not None and e.cause != "timer":
                text = f"sunset: {leaves} ({what} on {day(e.at, self.tz)})"
            else:
                text = f"sunset: {leaves}"
            self.due, self.left = e.due, False
            return Row(e.at, e.kind, text, data)
        # ended: the timer fired (or a late fact put it in the past), or consent went away
        src = sources.get(str(e.figures.get("event_id")))
        if e.cause.startswith("customers:") and src is not None and not src.record.get("marketing_opt_in"):
            self.due = None
            return Row(e.at, e.kind, f"sunset: no longer counted — marketing consent withdrawn at "
                                     f"{when(e.figures.get('fact_at'), self.tz)} (no marketing mail at all)", data)
        self.left = True
        return Row(e.at, e.kind, "sunset: " + self.left_words(e.due), data)


def _entry_row(e: Entry, tz: ZoneInfo, sources: dict[str, Fact], settings: Settings, sunset: _SunsetWords,
               unknown_arrival: frozenset[str] = frozenset(), origin: Fact | None = None) -> Row:
    data: dict[str, Any] = {k: v for k, v in e.as_dict().items() if k not in ("at", "kind", "customer_id", "figures")}
    if e.figures:
        data["figures"] = e.figures
    if e.kind == "fact":
        first = sources.get(e.event_id)
        src = origin or first  # the record this entry was logged for; its event id may have come before
        where = src.where() if src is not None else e.topic
        if src is not None:
            data.update({"source_topic": src.topic, "partition": src.partition,
                         "line" if src.from_file else "offset": src.offset})
        status = {"on_time": "on time", "duplicate": "duplicate: ignored",
                  "future": "ahead of the clock ticks: applied, the clock stays"}.get(e.status, "")
        if e.status == "late":
            status = f"late by {duration(e.behind_ms, signed=False)}: applied at once"
        elif e.status == "on_time" and e.event_id in unknown_arrival:
            status = ARRIVAL_UNKNOWN
            data["status"] = "arrival_unknown"  # the JSON says what the table says
        if first is not None and src is not first:
            data["first_seen"] = first.where()
            status = (f"duplicate of {first.where()}: ignored" if e.status == "duplicate" else
                      f"{status}; its event id came before at {first.where()}, no longer remembered: applied again")
        detail = _fact_words(e.topic, src.record if src is not None else {})
        return Row(e.at, "fact", f"{e.topic} {e.event_type}{detail} ({where}; {status})", data)
    if e.flow == Sunset.name and e.kind in ("scheduled", "ended"):
        return sunset.row(e, data, sources)
    if e.kind == "scheduled":
        cause = "" if e.cause == "timer" else f" after {e.cause.replace(':', ' ')}"
        return Row(e.at, e.kind, f"{_step(e.flow, e.step)} scheduled for {when(e.due, tz)} "
                                 f"({_in((e.due or e.at) - e.at)}){cause}", data)
    if e.kind == "ended":
        if e.cause == "series_done":
            return Row(e.at, e.kind, f"{e.flow}: series finished", data)
        return Row(e.at, e.kind, f"{e.flow}: ended before {_step(e.flow, e.step)} (due {when(e.due, tz)}) — "
                                 f"{e.cause.replace(':', ' ')} at {when(e.figures.get('fact_at'), tz)}", data)
    if e.kind == "deferred":
        return Row(e.at, e.kind, f"{_step(e.flow, e.step)} deferred to {when(e.until, tz)} — "
                                 f"{_reason_words(e, tz, sunset)}", data)
    if e.kind == "dropped" and e.reason == "no_respam":
        window = duration(settings.flows.abandoned_cart.no_respam_ms, signed=False)
        last = e.figures.get("last_sent")
        since = f" ({duration(e.at - last, signed=False)} before)" if last is not None else ""
        which = f"cart {e.figures['cart_id']}" if e.figures.get("cart_id") else "this cart activity"
        return Row(e.at, e.kind, f"{e.flow}: {which} starts no series — every step of the last series went out, "
                                 f"the last at {when(last, tz)}{since}; cart activity within {window} of the last "
                                 f"cart mail starts none", data)
    if e.kind == "dropped":
        return Row(e.at, e.kind, f"{_step(e.flow, e.step)} not sent — {_reason_words(e, tz, sunset)}", data)
    if e.variant == "holdout":
        exp = experiment_for(settings.flows.experiments, e.flow, e.step or 0)
        name = f"experiment {exp.name}, {exp.holdout:.0%} held out" if exp is not None else "experiment"
        return Row(e.at, e.kind, f"{_step(e.flow, e.step)} held out — control group of the {name}: recorded, "
                                 f"never sent [{e.command_id}]", data)
    variant = "" if e.variant in ("control", "") else f", variant {e.variant}"
    return Row(e.at, e.kind, f"{_step(e.flow, e.step)} fired ({e.category}{variant}) [{e.command_id}]", data)


def _in(ms: int) -> str:
    return "due at once" if ms <= 0 else f"in {duration(ms, signed=False)}"


def _fact_words(topic: str, r: dict[str, Any]) -> str:
    if topic == "carts" and r.get("items"):
        return f" ({sum(int(it.get('quantity') or 1) for it in r['items'])} item(s) in cart {r.get('cart_id')})"
    if topic == "orders":
        return f" (order {r.get('order_id')}, {r.get('total')} {r.get('currency')})"
    if topic == "customers":
        return f" (consent {'yes' if r.get('marketing_opt_in') else 'no'}, {r.get('timezone') or 'UTC'})"
    if topic == "feedback":
        link = f" {r['link']}" if r.get("link") else ""
        return f"{link} [{r.get('command_id')}, message {r.get('message_id')}]"
    if topic == "shipments":
        return f" (shipment {r.get('shipment_id')} of order {r.get('order_id')})"
    return ""


# ---- running the partition ------------------------------------------------------------------------

PROGRESS_EVERY = 1000  # facts between two updates of the progress bar


def explain_records(settings: Settings, customer_id: str, facts: Iterable[Fact], *,
                    outcomes: Iterable[Fact] = (), source: str = "",
                    on_progress: Callable[[int], None] | None = None,
                    unknown_arrival: frozenset[str] = frozenset()) -> Explanation:
    """Run the partition's ``facts`` (in the order given: a file's order, as ``simulate`` applies it)
    through a task manager with a decision log for ``customer_id``. ``on_progress(facts run)`` every
    ``PROGRESS_EVERY`` facts (a progress bar). Facts whose event id is in ``unknown_arrival`` were put
    in that order by their event time alone: none of them is called "on time"."""
    partition = partition_for(customer_id, settings.topics.partitions)
    engine = PartitionEngine(settings, partition)
    decisions = DecisionLog({customer_id})
    engine.explain(decisions)
    manager: TaskManager[Fact] = TaskManager(settings)
    manager.assign(partition, engine)
    out: TaskOutput[Fact] = TaskOutput()
    sources: dict[str, Fact] = {}  # event id → the first record that carried it
    origin: dict[int, Fact] = {}  # id(fact entry) → the record it was logged for (a duplicate: its own line)
    entries: list[Entry] = []
    read = 0
    for fact in facts:
        read += 1
        eid = str(fact.record.get("event_id"))
        if fact.record.get("customer_id") == customer_id:
            sources.setdefault(eid, fact)
        out.clear()
        if fact.logical in GLOBAL_INPUT_TOPICS:
            manager.apply_global(fact.logical, lambda p, f=fact: f, fact.record, out, size=fact.size)
        else:
            manager.apply(partition, fact.logical, fact, fact.record, out, size=fact.size)
        new = decisions.drain()
        for e in new:
            if e.kind == "fact" and e.event_id == eid:
                origin[id(e)] = fact
        entries.extend(new)
        if on_progress is not None and read % PROGRESS_EVERY == 0:
            on_progress(read)
    if not sources:
        raise ExplainError(f"no fact of customer {customer_id!r} in partition {partition} of {source or 'the input'}")
    c = engine.customers.get(customer_id)
    tz_name = (c.p.tz if c is not None else None) or "UTC"
    tz = zone(tz_name)
    sunset = _SunsetWords(settings.flows.sunset.after_days, tz)
    _tie_to_cart(entries, sources)
    rows = [_entry_row(e, tz, sources, settings, sunset, unknown_arrival, origin.get(id(e))) for e in entries]
    reached = -(1 << 62)
    for r in rows:  # in the order the engine took them
        reached = max(reached, r.at)
        r.place = reached
    rows.extend(_sink_rows(customer_id, outcomes, [s for s in sources.values()], settings, tz))
    rows.sort(key=lambda r: r.position)  # stable: the engine's rows stay in the order they were taken
    pending = pending_steps(engine.flows, c) if c is not None else []
    now = sunset_words(c, sunset_of(engine.flows), tz) if c is not None else None
    return Explanation(customer_id, partition, tz_name, collapse(rows), pending, read, source, now)


def _tie_to_cart(entries: list[Entry], sources: dict[str, Fact]) -> None:
    """A cart activity that starts no series (``no_respam``) is decided when the fact settles, at the
    watermark: the entry is put at the time of the cart fact it follows, and names that cart."""
    last_cart: Entry | None = None
    for e in entries:
        if e.kind == "fact" and e.topic == "carts" and e.status != "duplicate":
            last_cart = e
        elif e.kind == "dropped" and e.reason == "no_respam" and last_cart is not None:
            src = sources.get(last_cart.event_id)
            e.at = last_cart.at
            e.figures = {**e.figures, "cart_id": src.record.get("cart_id") if src is not None else None}


def collapse(rows: list[Row]) -> list[Row]:
    """Exact duplicates (the same time, kind and words: e.g. one drop for each of several keys) as one
    row that says ``×N`` (``count`` in its data), where the first of them was."""
    first: dict[tuple[int, str, str], Row] = {}
    counts: dict[tuple[int, str, str], int] = {}
    for r in rows:
        k = (r.at, r.kind, r.text)
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, r)
    out = []
    for k, r in first.items():
        n = counts[k]
        out.append(r if n == 1 else Row(r.at, r.kind, f"{r.text} ×{n}", {**r.data, "count": n}, r.place))
    return out


def _sink_rows(cid: str, outcomes: Iterable[Fact], facts: list[Fact], settings: Settings, tz: ZoneInfo) -> list[Row]:
    """Outcomes of the sink, and orders a click (within the attribution window) converted."""
    rows: list[Row] = []
    for o in outcomes:
        r = o.record
        if r.get("customer_id") != cid:
            continue
        what = r["outcome"]
        detail = f"message {r.get('message_id')}" if r.get("message_id") else (r.get("reason") or "")
        rows.append(Row(int(r["occurred_at"]), "sink",
                        f"sink: {_step(r['flow'], r['step'])} {what} ({detail}) [{r['command_id']}] "
                        f"({o.where()})",
                        {"outcome": what, "command_id": r["command_id"], "message_id": r.get("message_id"),
                         "reason": r.get("reason")}))
    window = settings.metrics.click_window_ms
    clicks = sorted((f.record for f in facts if f.logical == "feedback" and f.record.get("type") == "clicked"),
                    key=lambda r: r["occurred_at"])
    for f in facts:
        r = f.record
        if f.logical != "orders" or r.get("type") != "placed":
            continue
        at = int(r["occurred_at"])
        by = r.get("attributed_command_id")
        if not by:
            touched = [k for k in clicks if at - window <= k["occurred_at"] <= at]
            by = touched[-1].get("command_id") if touched else None
        if by:
            rows.append(Row(at, "converted", f"converted: order {r.get('order_id')} ({r.get('total')} "
                                             f"{r.get('currency')}) after a click on [{by}]",
                            {"order_id": r.get("order_id"), "command_id": by}))
    return rows


def read_jsonl(path: Path, settings: Settings, customer_id: str,
               on_progress: Callable[[int], None] | None = None) -> tuple[list[Fact], list[Fact]]:
    """The facts of the customer's partition in a ``simulate``-style JSONL file (with their line
    numbers) and any outcome lines of the customer (``email.outcomes``); other partitions' lines are
    not decoded. ``on_progress(bytes read)`` every ``PROGRESS_EVERY`` lines (a progress bar)."""
    partitions = settings.topics.partitions
    partition = partition_for(customer_id, partitions)
    lookup = topic_lookup(settings)
    outcomes_topic = settings.topics.name("outcomes")
    limit = settings.limits.max_record_bytes
    router = _Router(partitions)  # the partition of a raw line, without decoding it
    facts: list[Fact] = []
    outcomes: list[Fact] = []
    if not path.exists():
        raise ExplainError(f"{path}: no such file")
    with path.open("rb") as src:
        for n, line in enumerate(src, start=1):
            if on_progress is not None and n % PROGRESS_EVERY == 0:
                on_progress(src.tell())
            if not line.strip():
                continue
            p = router(line)
            if p is not None and p != partition:
                continue
            try:
                obj = orjson.loads(line)
            except ValueError:
                continue  # ``simulate`` reports bad lines; they reach no customer's state
            obj_topic = obj.get("topic") if isinstance(obj, dict) else None
            if obj_topic in (outcomes_topic, settings.topics.outcomes):
                outcomes.append(Fact("outcomes", obj_topic, partition, n,
                                     serde.from_json(VALUE_SCHEMA["outcomes"], obj["value"]), from_file=True))
                continue
            logical, record, bad = parse_object(n, obj, lookup)
            if bad is not None or logical is None or record is None:
                continue  # ``simulate`` reports bad lines; they reach no customer's state
            facts.append(Fact(logical, str(obj_topic), partition, n, record,
                              record_size(logical, record, len(line), limit), from_file=True))
    return facts, outcomes


def explain_file(settings: Settings, customer_id: str, path: Path, quiet: bool = False) -> Explanation:
    """Explain ``customer_id`` from a JSONL file; progress bars on stderr (reading the file, running the
    partition) when it is a terminal and not ``quiet``."""
    if not path.is_file():
        raise ExplainError(f"{path}: " + ("is a directory" if path.is_dir() else "no such file"))
    with progress(f"reading {path.name}", total=path.stat().st_size, quiet=quiet, unit="bytes") as bar:
        facts, outcomes = read_jsonl(path, settings, customer_id, bar.to if bar.shown else None)
    return _run_with_bar(settings, customer_id, facts, outcomes, str(path), quiet)


def _run_with_bar(settings: Settings, customer_id: str, facts: list[Fact] | Iterator[Fact], outcomes: list[Fact],
                  source: str, quiet: bool, total: int | None = None,
                  unknown_arrival: frozenset[str] = frozenset()) -> Explanation:
    total = len(facts) if isinstance(facts, list) else total
    with progress(f"explaining {customer_id}", total=total, quiet=quiet) as bar:
        return explain_records(settings, customer_id, facts, outcomes=outcomes, source=source,
                               on_progress=bar.to if bar.shown else None, unknown_arrival=unknown_arrival)


@dataclass
class TopicRead:
    """What ``read_topics`` found: the partition's input records, and the customer's outcomes and the
    commands production emitted (``commands`` is None when the commands topic does not exist)."""

    facts: list[Fact]
    outcomes: list[Fact]
    commands: list[Fact] | None


def read_topics(settings: Settings, bootstrap: str, customer_id: str, timeout_s: float = 60.0,
                on_record: Callable[[], None] | None = None) -> TopicRead:
    """Every record of the customer's partition of each input topic, of the outcomes topic and of the
    commands topic (where the worker puts the customer's commands), read to the end by a consumer
    outside any group, plus the global topics in full; each with its Kafka timestamp. ``on_record()``
    after each record (a progress bar)."""
    from confluent_kafka import Consumer, Message, TopicPartition

    from streams.kafka.io import consumer_config
    from streams.kafka.log_reader import EOF_CONFIG, read_to_end
    from streams.kafka.topics import INPUT_TOPICS

    t = settings.topics
    partition = partition_for(customer_id, t.partitions)
    logical_of = {t.name(lt): lt for lt in INPUT_TOPICS + GLOBAL_INPUT_TOPICS + ("outcomes", "commands")}
    consumer = Consumer(consumer_config(settings, bootstrap, f"shopmail-explain-{customer_id}", **EOF_CONFIG))
    read = TopicRead([], [], None)
    try:
        existing = consumer.list_topics(timeout=10).topics
        tps: list[TopicPartition] = []
        for name, lt in logical_of.items():
            meta = existing.get(name)
            if meta is None or meta.error is not None:
                continue
            if lt in GLOBAL_INPUT_TOPICS:
                tps.extend(TopicPartition(name, p, 0) for p in sorted(meta.partitions))
            else:
                tps.append(TopicPartition(name, partition, 0))
            if lt == "commands":
                read.commands = []
        if not any(tp.topic != t.name("commands") for tp in tps):
            raise ExplainError(f"none of the input topics exists on {bootstrap}")

        def handle(m: Message) -> None:
            lt = logical_of[m.topic()]
            value = m.value()
            try:
                record = serde.decode(value, VALUE_SCHEMA[lt], m.topic()).record
            except Exception:  # noqa: BLE001 - an unreadable record reached no state (the worker dead-letters it)
                return
            kind, ts = m.timestamp()
            fact = Fact(lt, m.topic(), m.partition(), m.offset(), record, len(value) if value else 0,
                        timestamp=ts if kind != 0 else None)  # 0: TIMESTAMP_NOT_AVAILABLE
            if lt == "commands":
                if record.get("customer_id") == customer_id and read.commands is not None:
                    read.commands.append(fact)
            else:
                (read.outcomes if lt == "outcomes" else read.facts).append(fact)
            if on_record is not None:
                on_record()

        read_to_end(consumer, tps, handle, timeout_s, f"explain {customer_id}")
    finally:
        consumer.close()
    return read


def explain_topics(settings: Settings, bootstrap: str, customer_id: str, quiet: bool = False,
                   other_config: bool = False) -> Explanation:
    """``other_config``: ``settings`` are not production's (``--with-config``), so a command that differs
    from production's differs first because of the config."""
    with progress("reading the topics", quiet=quiet) as bar:
        read = read_topics(settings, bootstrap, customer_id, on_record=bar.advance if bar.shown else None)
    return _explain_read(settings, customer_id, read.facts, read.outcomes, f"topics on {bootstrap}", quiet,
                         commands=read.commands, other_config=other_config)


def _explain_read(settings: Settings, customer_id: str, facts: list[Fact], outcomes: list[Fact],
                  source: str, quiet: bool = True, commands: list[Fact] | None = None,
                  other_config: bool = False) -> Explanation:
    """Records read from the topics, in the order a caught-up worker took them (``arrival_order``), run
    through the engine; then the commands production emitted for the customer (``commands``) as facts of
    the timeline, and one line for each command the reconstruction and production disagree on."""
    unknown = frozenset(str(f.record.get("event_id")) for f in facts
                        if f.record.get("customer_id") == customer_id and arrival(f) is None)
    ex = _run_with_bar(settings, customer_id, arrival_order(facts), outcomes, source, quiet,
                       total=len(facts), unknown_arrival=unknown)
    if commands is not None:
        ex.rows.extend(production_rows(ex, commands, facts, settings.worker.late_grace_ms, other_config))
        ex.rows.sort(key=lambda r: r.position)
    return ex


def _event_time(f: Fact) -> int:
    r = f.record
    return int(r.get("tick_at") if f.logical == "clock" else r.get("occurred_at", 0))


def arrival(f: Fact) -> int | None:
    """When the record reached its topic (:func:`streams.tools.arrival.arrival`)."""
    return arrival_of(f.logical, _event_time(f), f.timestamp)


def arrived(f: Fact) -> Arrived:
    return Arrived(f.logical, f.partition, f.offset, f.record.get("customer_id"), _event_time(f), f.timestamp,
                   str(f.record.get("type", "")), f.topic)


def arrival_order(facts: list[Fact]) -> Iterator[Fact]:
    """The order a worker that kept up with the topics applied ``facts`` in: each topic partition in
    offset order; of the records that had arrived (``arrival``) by then, the smallest event time first
    (streams/runtime/merge.py with nothing left to fetch). A record whose arrival is unknown is taken
    to have arrived at its event time."""
    queues = [sorted(s, key=lambda f: f.offset) for s in _streams(facts)]
    heads = [0] * len(queues)
    waiting = [(_available(q[0]), i) for i, q in enumerate(queues)]  # heads not yet arrived, by arrival
    heapq.heapify(waiting)
    ready: list[tuple[int, int]] = []  # heads that have arrived, by event time
    now = -(1 << 62)
    while waiting or ready:
        while waiting and waiting[0][0] <= now:
            i = heapq.heappop(waiting)[1]
            heapq.heappush(ready, (_event_time(queues[i][heads[i]]), i))
        if not ready:
            now = waiting[0][0]
            continue
        i = heapq.heappop(ready)[1]
        yield queues[i][heads[i]]
        heads[i] += 1
        if heads[i] < len(queues[i]):
            heapq.heappush(waiting, (_available(queues[i][heads[i]]), i))


def _available(f: Fact) -> int:
    at = arrival(f)
    return _event_time(f) if at is None else at


def _streams(facts: list[Fact]) -> list[list[Fact]]:
    streams: dict[tuple[str, int], list[Fact]] = {}
    for f in facts:
        streams.setdefault((f.topic, f.partition), []).append(f)
    return [s for _, s in sorted(streams.items())]


def production_rows(ex: Explanation, commands: list[Fact], facts: list[Fact], grace_ms: int,
                    other_config: bool = False) -> list[Row]:
    """The customer's commands in the commands topic as timeline facts ("production emitted …"), and one
    line per command that fired in the reconstruction but not in production, or the other way round,
    with the likely cause."""
    tz = ex.zone
    rows: list[Row] = []
    emitted: dict[str, Fact] = {}
    fired = {str(r.data.get("command_id")): r for r in ex.rows if r.kind == "fired"}
    for c in commands:
        r = c.record
        emitted.setdefault(str(r["command_id"]), c)
        twin = fired.get(str(r["command_id"]))  # the rebuilt run's row of the same command: stand right after it
        rows.append(Row(int(r["created_at"]), "production",
                        f"production emitted {_step(r['flow'], r['step'])} for {when(r.get('send_at'), tz)} "
                        f"[{r['command_id']}] ({c.where()})",
                        {"flow": r["flow"], "step": r["step"], "command_id": r["command_id"],
                         "source_topic": c.topic, "partition": c.partition, "offset": c.offset},
                        twin.position if twin is not None else None))
    cause = _likely_cause(ex, facts, grace_ms)
    if other_config:  # the config is the first suspect; the order only where the log says it may be
        cause = ("likely cause: this config differs from the one production ran"
                 + ("" if cause.startswith("cause unknown") else f"; the order may add to it — {cause[len('likely cause: '):]}"))
    for cid, r in fired.items():
        if cid not in emitted:
            rows.append(Row(r.at, "differs", f"fired here but not in production: "
                                             f"{_step(r.data.get('flow', ''), r.data.get('step'))} [{cid}] — {cause}",
                            {"command_id": cid, "side": "reconstruction"}))
    for cid, c in emitted.items():
        if cid not in fired:
            rec = c.record
            rows.append(Row(int(rec["created_at"]), "differs", f"in production but not here: "
                                                               f"{_step(rec['flow'], rec['step'])} [{cid}] — {cause}",
                            {"command_id": cid, "side": "production"}))
    return rows


def _likely_cause(ex: Explanation, facts: list[Fact], grace_ms: int) -> str:
    """Why production may have decided otherwise: a record of the customer produced after the partition's
    clock records had passed its event time (by the Kafka timestamps), or records whose arrival is not
    known (stamped with their event time)."""
    tz = ex.zone
    mine = [f for f in facts if f.record.get("customer_id") == ex.customer_id]
    clock = [f for f in facts if f.logical == "clock" and f.partition == ex.partition]
    late = [late_words(x, tz) for x in late_arrivals(map(arrived, clock + mine), grace_ms)]
    unknown = [f for f in mine if arrival(f) is None]
    causes = []  # every candidate the log shows: which of them mattered, it cannot tell
    if late:
        causes.append("a record produced after the clock had passed it: " + "; ".join(late))
    if unknown:
        causes.append(f"the arrival order of {len(unknown)} record(s) of the customer is unknown (their Kafka "
                      f"timestamp is their event time: " + ", ".join(f"{f.logical} {f.record.get('type', '')} "
                                                                     f"({f.where()})" for f in unknown[:3])
                      + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
                      + "): the worker may have applied them after clock records that had passed them")
    if causes:
        return "likely cause: " + "; or ".join(causes)
    return "cause unknown: production may have run another configuration or from an earlier state"


# ---- what would change with another configuration --------------------------------------------------

@dataclass
class Change:
    """One decision under both configurations: a step's outcome (deferrals, then fired, not sent or
    ended) or a schedule, keyed by (flow, step, the instance's key, which of its kind)."""

    key: str
    at: int  # the earlier of the two times
    left: str  # the decision under the first configuration ("" none)
    right: str  # …under the second
    left_at: int | None = None
    right_at: int | None = None

    @property
    def same(self) -> bool:
        return self.left == self.right and self.left_at == self.right_at

    @property
    def moved(self) -> bool:
        """Both runs took the decision, at different times."""
        return self.left_at is not None and self.right_at is not None and self.left_at != self.right_at

    def texts(self, tz: ZoneInfo) -> tuple[str, str]:
        """Both sides in words; when the time moved, each side starts with its time and the right one
        says by how much."""
        if not self.moved:
            return self.left, self.right
        assert self.left_at is not None and self.right_at is not None
        shift = duration(self.right_at - self.left_at)
        return (f"at {when(self.left_at, tz)}: {self.left}",
                f"at {when(self.right_at, tz)} ({shift}): {self.right}")


OUTCOME_KINDS = frozenset({"fired", "dropped", "ended"})


@dataclass
class _Instance:
    """One run of a flow in ``step_decisions``: its name in the keys and the last step it reached."""

    name: str
    finished_after: int | None = None  # the series ended by itself (``series_done``) after this step


def step_decisions(ex: Explanation) -> tuple[dict[str, tuple[int, str]], dict[str, _Instance]]:
    """Each decision of ``ex`` under its key ``flow#i/step/slot`` (``flow/KEY#i/step/slot`` for a keyed
    flow: the order id or SKU), ``#n`` appended to the second and later of the same key: ``i`` counts
    the flow's instances (a run from its first schedule to its end: a cart, an order…), ``slot`` is
    ``schedule`` (a step scheduled) or ``outcome`` (what became of a due step: its deferrals and then
    fired, not sent or ended, as one text). A series that ended because its last step went out is no
    step's outcome: it closes the instance (``finished_after``). Also returns the instances by name."""
    instance: dict[tuple[str, Any, Any], str] = {}  # (flow, step, due) → instance key
    held: dict[tuple[str, Any, str], list[Row]] = {}  # deferrals waiting for their outcome
    current: dict[tuple[str, str], _Instance] = {}  # (flow, key) → the open instance
    runs: dict[tuple[str, str], int] = {}
    instances: dict[str, _Instance] = {}
    seen: dict[str, int] = {}
    out: dict[str, tuple[int, str]] = {}

    def run_of(flow: str, key: str) -> _Instance:
        inst = current.get((flow, key))
        if inst is None:
            n = runs[(flow, key)] = runs.get((flow, key), 0) + 1
            inst = current[(flow, key)] = _Instance(f"{flow}/{key}#{n}" if key else f"{flow}#{n}")
            instances[inst.name] = inst
        return inst

    def put(flow: str, step: Any, key: str, slot: str, at: int, text: str) -> None:
        base = f"{run_of(flow, key).name}/{step}/{slot}"
        n = seen[base] = seen.get(base, 0) + 1
        out[base if n == 1 else f"{base}#{n}"] = (at, text)

    for r in ex.decisions():
        flow, step, due = r.data.get("flow", ""), r.data.get("step"), r.data.get("due")
        if r.kind == "scheduled":
            key = str(r.data.get("figures", {}).get("key", ""))
            instance[(flow, step, due)] = key
            put(flow, step, key, "schedule", r.at, r.text)
            continue
        key = instance.get((flow, step, due), "")
        if r.kind == "deferred":
            instance[(flow, step, r.data.get("until"))] = key
            held.setdefault((flow, step, key), []).append(r)
            continue
        if r.kind == "ended" and r.data.get("cause") == "series_done":
            run_of(flow, key).finished_after = step
            current.pop((flow, key), None)
            continue
        if r.kind in OUTCOME_KINDS:
            before = held.pop((flow, step, key), [])
            put(flow, step, key, "outcome", r.at, "; ".join([d.text for d in before] + [r.text]))
            if r.kind == "ended":
                current.pop((flow, key), None)
    for (flow, step, key), rows in held.items():  # deferred and still waiting at the end
        put(flow, step, key, "outcome", rows[-1].at, "; ".join(d.text for d in rows))
    return out, instances


def compare(a: Explanation, b: Explanation) -> list[Change]:
    """The decisions of two runs over the same facts, paired by flow instance, step and slot
    (``step_decisions``): a step fired under one and dropped under the other is one change, and so is a
    step that went out at another time. A step that only one run reached is one change that says "not
    sent" for the other (and why, when that run's series had finished: fewer steps), not a schedule
    row and an outcome row."""
    (left, left_runs), (right, right_runs) = step_decisions(a), step_decisions(b)
    changes = []
    for key in sorted(set(left) | set(right)):
        lr, rr = left.get(key), right.get(key)
        if lr is None or rr is None:
            instance, step, slot = _parts(key)
            if slot == "schedule" and (f"{instance}/{step}/outcome" in left) != (f"{instance}/{step}/outcome" in right):
                continue  # the outcome row says it
            if slot == "outcome":  # only one run reached the step: the other did not send it
                present = lr if lr is not None else rr
                assert present is not None
                missing = _not_sent(instance, step, (right_runs if rr is None else left_runs).get(instance))
                changes.append(Change(key, present[0], lr[1] if lr else missing, rr[1] if rr else missing,
                                      lr[0] if lr else None, rr[0] if rr else None))
                continue
        at = min(d[0] for d in (lr, rr) if d is not None)
        changes.append(Change(key, at, lr[1] if lr else "", rr[1] if rr else "",
                              lr[0] if lr else None, rr[0] if rr else None))
    changes.sort(key=lambda c: (c.at, c.key))
    return changes


def _parts(key: str) -> tuple[str, str, str]:
    """``flow#1/3/outcome#2`` → (``flow#1``, ``3``, ``outcome``)."""
    instance, step, slot = key.rsplit("/", 2)
    return instance, step, slot.split("#")[0]


def _not_sent(instance: str, step: str, run: _Instance | None) -> str:
    flow = instance.split("/")[0].split("#")[0]
    words = f"{_step(flow, int(step) if step.isdigit() else None)} not sent"
    if run is not None and run.finished_after is not None:
        return f"{words} — the series finished after step {run.finished_after}"
    if run is None:
        return f"{words} — no such {flow} run with this configuration"
    return words
