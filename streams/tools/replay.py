"""Replay: re-run the processors over a time range of the input topics into a separate topic set.

1. Copy every input topic's records whose event time falls in ``[from, to)`` (``occurred_at``; clock
   ticks by ``tick_at``) — Tansu's ``offsets_for_times`` always answers 0, so the range is a filter on
   the records, optionally narrowed by explicit start/end offsets — into the same topics under the
   replay prefix, keeping each record's partition (so customers keep their partition and state).
2. Run ``ProcessorRuntime`` on the replay topics with a fresh consumer group, fresh state (a new
   changelog under the prefix) and optionally another config. It writes no clock ticks of its own:
   the production ticks were copied, so timers fire exactly as they did in production. The copied
   records are merged in event-time order (``order="arrival"``: in the order they reached production's
   topics, their Kafka timestamps kept by the copy, so a fact a caught-up production applied late is
   applied late again). Production's order is not in the log: a worker that kept up took records as
   they arrived, one with a backlog in event-time order.
3. Stop when every replay input partition is consumed to its end, read the replay commands and diff
   them against what production emitted for the same range (by ``command_id``: added, removed,
   changed fields).

It never writes to production output topics (the prefix must differ from production's) and never
makes the sink send (no sink consumes the replay prefix unless someone points one at it).
"""

from __future__ import annotations

import copy
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import Consumer, Producer, TopicPartition

from schemas import serde
from streams.runtime import background
from streams.config import KafkaSettings, Settings
from streams.core.timetext import iso
from streams.kafka.partitioning import partition_for
from streams.kafka.io import TopicReadTimeout, client_config, holds_records, producer_config, read_topic
from streams.runtime.merge import event_time_of
from streams.runtime.worker import ProcessorRuntime
from streams.tools.arrival import Arrived, LateArrival, arrival, late_arrivals, late_words
from streams.kafka.log_reader import ONE_OFF_READ_CONFIG, read_to_end
from streams.kafka.topics import (GLOBAL_INPUT_TOPICS, INPUT_TOPICS, VALUE_SCHEMA, delete_topics, ensure_topics,
                                  topic_specs)


UTC = ZoneInfo("UTC")


class ReplayError(RuntimeError):
    pass


class EmptyRange(ReplayError):
    """No input record falls in the replay's range (times and offsets): nothing to replay."""


@dataclass(frozen=True)
class TimeRange:
    start_ms: int | None = None  # inclusive
    end_ms: int | None = None  # exclusive

    def contains(self, at: int) -> bool:
        return (self.start_ms is None or at >= self.start_ms) and (self.end_ms is None or at < self.end_ms)

    def words(self) -> str:
        """``from 2026-01-01T00:00:00+00:00 to 2026-02-01T00:00:00+00:00`` (UTC; open ends named)."""
        return (f"from {iso(self.start_ms) if self.start_ms is not None else 'the beginning'} "
                f"to {iso(self.end_ms) if self.end_ms is not None else 'the end'}")


@dataclass
class CommandDiff:
    added: list[dict[str, Any]] = field(default_factory=list)  # in the replay only
    removed: list[dict[str, Any]] = field(default_factory=list)  # in production only
    changed: list[tuple[dict[str, Any], dict[str, Any], list[str]]] = field(default_factory=list)
    unchanged: int = 0

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def differing(self) -> list[dict[str, Any]]:
        """Every command that differs: the added and removed ones, and the replay's side of each change."""
        return [*self.added, *self.removed, *(new for _, new, _ in self.changed)]

    def summary(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed),
                "unchanged": self.unchanged}


@dataclass
class ReplayResult:
    copied: dict[str, int]
    commands: list[dict[str, Any]]
    diff: CommandDiff
    replay_prefix: str
    order: str = "event_time"
    late: dict[str, list[LateArrival]] = field(default_factory=dict)  # customer → their facts that came late
    unknown_arrival: dict[str, int] = field(default_factory=dict)  # customer → records stamped with event time
    other_config: bool = False  # replayed with another config (``--with-config``)
    window: TimeRange = field(default_factory=lambda: TimeRange())
    before: dict[str, int] = field(default_factory=dict)  # customer → their records before the range (not copied)
    reach: dict[int, int] = field(default_factory=dict)  # partition → the latest event time copied into it
    grace_ms: int = 0  # production's worker.late_grace_ms: a timer fires once the clock passes it by this
    partitions: int = 1

    @cached_property
    def _removed_ids(self) -> frozenset[str]:
        return frozenset(c["command_id"] for c in self.diff.removed)

    def beyond_reach(self, command: dict[str, Any]) -> int | None:
        """A removed command (production's only) that fired on a clock later than anything the replay copied
        into its partition (a timer production's clock records after the range fired): the replay's clock
        stops at that partition's latest copied event time, so it cannot fire it. Returns that time (-1: the
        partition got nothing), or None."""
        if not self.reach or command.get("command_id") not in self._removed_ids:
            return None
        p = partition_for(str(command.get("customer_id")), self.partitions)
        latest = self.reach.get(p)
        if latest is None or int(command.get("created_at") or 0) > latest - self.grace_ms:
            return latest if latest is not None else -1
        return None

    def causes(self, command: dict[str, Any]) -> dict[str, Any]:
        """What, besides a config, can make this customer's commands differ from production's: their
        facts that reached production after its clock had passed them, and their records whose arrival
        is unknown (stamped with their event time). Empty when neither."""
        cid = str(command.get("customer_id"))
        late, unknown = self.late.get(cid, []), self.unknown_arrival.get(cid, 0)
        out: dict[str, Any] = {}
        if late:
            out["late_facts"] = [self.late_fact_doc(x) for x in late]
        if unknown:
            out["arrival_unknown"] = unknown
        if self.before.get(cid):
            out["records_before_range"] = self.before[cid]
        if self.beyond_reach(command) is not None:
            out["fired_past_replay_clock"] = True
        return out

    def late_fact_doc(self, late: LateArrival) -> dict[str, Any]:
        """A late fact for JSON, with whether the clock that made it late lies past the range."""
        return {**late.as_dict(), "clock_past_range": self.past_range(late)}

    def past_range(self, late: LateArrival) -> bool:
        """The clock records that made the fact late lie past the range's end: the replay's clock never gets
        there, so the replay cannot apply it late in either order."""
        return self.window.end_ms is not None and late.clock >= self.window.end_ms

    def likely_cause(self, command: dict[str, Any], tz: ZoneInfo = UTC) -> str:
        """The same in words ("" when neither). With the production config the difference comes from
        the order the records were applied in; with another config it may come from that order, the
        config, or both — the words say so instead of explaining the config's effect away."""
        cid = str(command.get("customer_id"))
        late, unknown, before = self.late.get(cid, []), self.unknown_arrival.get(cid, 0), self.before.get(cid, 0)
        reach = self.beyond_reach(command)
        if not late and not unknown and not before and reach is None:
            return ""
        parts = []
        if reach is not None:
            until = f"stops at {iso(reach - self.grace_ms)}" if reach >= 0 else "never moves"
            parts.append(f"range end: production fired it on clock records the replay does not have (the replay's "
                         f"clock on this partition {until}: the latest copied event time less "
                         f"worker.late_grace_ms); extend --to")
        if before:
            parts.append(f"range start: {before} earlier record(s) of the customer lie before --from; the replay "
                         f"starts without the state they built")
        if late:
            more = f"; and {len(late) - 2} more" if len(late) > 2 else ""
            if any(self.past_range(x) for x in late):
                how = ("the clock records that made it late lie past --to, so the replay's clock stops before them "
                       "in either order: extend --to")
            elif self.order == "event_time":
                how = "this replay applied it in event-time order, production (keeping up) as it arrived"
            elif any(x.by != "clock records" for x in late):
                how = ("this replay applied it as it arrived, behind later facts that arrived first; production "
                       "merges what it has buffered by event time, so a backlog it read at once it applied in order")
            else:
                how = "this replay applied it as it arrived; production, if it had a backlog then, in event-time order"
            parts.append(f"late fact: {'; '.join(late_words(x, tz) for x in late[:2])}{more} — {how}")
        if unknown:
            parts.append(f"arrival unknown: {unknown} record(s) of the customer carry their event time as their "
                         f"Kafka timestamp; production may have applied them after clock records that had passed them")
        text = "; ".join(parts)
        return f"may not come from the config — {text}" if self.other_config else text

    def remedies(self, commands: list[dict[str, Any]]) -> list[str]:
        """What would take the labelled causes of ``commands`` out of the comparison."""
        out = []
        late = [x for c in commands for x in self.late.get(str(c.get("customer_id")), [])]
        if any(not self.past_range(x) for x in late) or any(self.unknown_arrival.get(str(c.get("customer_id")))
                                                             for c in commands):
            out.append(f"--order {'arrival' if self.order == 'event_time' else 'event-time'} applies the late "
                       f"facts the other way")
        if any(self.past_range(x) for x in late) or any(self.beyond_reach(c) is not None for c in commands):
            out.append("a later --to gives the replay the clock records production had")
        if any(self.before.get(str(c.get("customer_id"))) for c in commands):
            out.append("an earlier --from gives it the customers' history")
        return out


def diff_commands(production: list[dict[str, Any]], replay: list[dict[str, Any]]) -> CommandDiff:
    prod = {c["command_id"]: c for c in production}
    new = {c["command_id"]: c for c in replay}
    diff = CommandDiff()
    for cid, cmd in new.items():
        if cid not in prod:
            diff.added.append(cmd)
        else:
            fields = sorted(k for k in cmd if cmd[k] != prod[cid].get(k))
            if fields:
                diff.changed.append((prod[cid], cmd, fields))
            else:
                diff.unchanged += 1
    diff.removed = [c for cid, c in prod.items() if cid not in new]
    return diff


def replay_settings(production: Settings, replay_prefix: str, config: Settings | None = None,
                    order: str = "event_time") -> Settings:
    """Settings of the replay: the (optionally other) config, the replay prefix, a fresh app id, and
    the merge ``order``: ``event_time`` (default) applies the copied records in event-time order, as a
    worker does with what it has buffered (production after a stop, with a backlog); ``arrival`` in the
    order they reached production's topics (their Kafka timestamps, which the copy keeps), as a worker
    that kept up did, so a fact that arrived after the clock had passed it is applied late again."""
    if replay_prefix == production.topics.prefix:
        raise ReplayError("the replay prefix must differ from production's: a replay never writes to production topics")
    why = prefix_refusal(production, replay_prefix)
    if why:
        raise ReplayError(f"refusing replay prefix {replay_prefix!r}: {why}")
    s = copy.deepcopy(config or production)
    s.topics = copy.deepcopy(production.topics)
    s.topics.prefix = replay_prefix
    s.worker.app_id = f"{production.worker.app_id}-replay-{replay_prefix.strip('.') or 'x'}-{int(time.time() * 1000)}"
    s.worker.tick_interval_s = 0  # ticks come from the copied log
    s.worker.instance_id = "replay"
    s.worker.merge_order = order
    return s


Progress = Callable[[str, int, int | None], None]  # (what, done, total): for a progress bar


def copy_inputs(production: Settings, replay: Settings, bootstrap: str, window: TimeRange,
                offsets: dict[str, tuple[int | None, int | None]] | None = None,
                progress: Progress | None = None, seen: list[Arrived] | None = None,
                before: dict[str, int] | None = None, reach: dict[int, int] | None = None) -> dict[str, int]:
    """Copy the inputs in ``window`` into the replay topics, partition for partition (``progress``:
    ``copying <topic>``, records read of the topic; ``seen`` receives every copied record's arrival,
    for :func:`streams.tools.arrival.late_arrivals`)."""
    producer = Producer(producer_config(replay, bootstrap, **{"enable.idempotence": True}))
    copied: dict[str, int] = {}
    for logical in INPUT_TOPICS + GLOBAL_INPUT_TOPICS:
        src, dst = production.topics.name(logical), replay.topics.name(logical)
        lo_hi = (offsets or {}).get(logical, (None, None))
        n = 0
        read = (lambda done, total, src=src: progress(f"copying {src}", done, total)) if progress else None
        for rec in read_topic(bootstrap, src, idle_s=0, timeout_s=600, kafka=production.kafka, progress=read):
            if (lo_hi[0] is not None and rec.offset < lo_hi[0]) or (lo_hi[1] is not None and rec.offset >= lo_hi[1]):
                continue
            try:
                record = serde.decode(rec.value, VALUE_SCHEMA[logical], rec.topic).record
            except serde.SerdeError:
                continue  # production already dead-lettered it
            at = event_time_of(logical, record)
            inside = window.contains(at)
            if seen is not None and (inside or logical == "clock"):  # every clock record: one after the
                # range's end may have arrived before a fact inside it, and made that fact late
                seen.append(Arrived(logical, rec.partition, rec.offset, record.get("customer_id"), at,
                                    rec.timestamp_ms, sys.intern(str(record.get("type", ""))), src))
            if inside and reach is not None and at > reach.get(rec.partition, at - 1):
                reach[rec.partition] = at
            if not inside:
                cid = record.get("customer_id")
                if before is not None and cid is not None and window.start_ms is not None and at < window.start_ms:
                    before[cid] = before.get(cid, 0) + 1
                continue
            producer.produce(dst, partition=rec.partition, key=rec.key, value=rec.value, timestamp=rec.timestamp_ms)
            n += 1
            if n % 10000 == 0:
                producer.poll(0)
        copied[logical] = n
    if producer.flush(60):
        raise ReplayError("could not write every record to the replay topics")
    return copied


def _records_left(replay: Settings, bootstrap: str, group: str, topics: list[str]) -> int:
    """The records the group has not committed past: those between its committed offsets and the end
    the fetch reports (a ListOffsets high watermark can under-report that end); 0 when caught up."""
    c = Consumer(client_config(replay.kafka, bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                                           "isolation.level": "read_committed", **ONE_OFF_READ_CONFIG}))
    left = 0

    def count(_: object) -> None:
        nonlocal left
        left += 1

    try:
        md = c.list_topics(timeout=10)
        tps = [TopicPartition(t, p) for t in topics for p in md.topics[t].partitions]
        committed = [TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)) for tp in c.committed(tps, timeout=10)]
        read_to_end(c, committed, count, 30, "replay progress")
        return left
    finally:
        c.close()


def run_replay(production: Settings, bootstrap: str, replay_prefix: str, window: TimeRange,
               config: Settings | None = None, timeout_s: float = 600.0,
               offsets: dict[str, tuple[int | None, int | None]] | None = None,
               created: list[str] | None = None, progress: Progress | None = None,
               order: str = "event_time") -> ReplayResult:
    """``created``, when given, receives the names of the topics this run created as soon as it may
    use them (also when it fails later): the only topics ``--cleanup`` deletes. A replay refused at
    start (its prefix already holds data) creates none and hands over none. ``progress``: the copy
    per input topic, then ``replaying``: copied records the processors are past, of all copied.
    ``order``: see :func:`replay_settings`."""
    replay = replay_settings(production, replay_prefix, config, order)
    existing = set(topics_with_prefix(bootstrap, replay_prefix, replay.kafka))
    if any(holds_records(bootstrap, replay.topics.name(lt), replay.kafka)
           for lt in INPUT_TOPICS if replay.topics.name(lt) in existing):  # checked before creating anything
        raise ReplayError(f"replay prefix {replay_prefix!r} already holds data: choose a new prefix")
    report = ensure_topics(bootstrap, topic_specs(replay), kafka=replay.kafka)
    if not report.healthy:
        raise ReplayError("replay topics do not match: " + "; ".join(report.mismatches))
    own = created if created is not None else []
    own.extend(sorted(report.created))
    seen: list[Arrived] = []
    try:
        before: dict[str, int] = {}
        reach: dict[int, int] = {}
        copied = copy_inputs(production, replay, bootstrap, window, offsets, progress, seen, before, reach)
    except TopicReadTimeout as exc:
        raise ReplayError(str(exc)) from exc
    late: dict[str, list[LateArrival]] = {}
    for x in late_arrivals(seen, production.worker.late_grace_ms):
        late.setdefault(str(x.record.customer_id), []).append(x)
    if order == "arrival":  # late here too: behind the partition's facts that came before it, not only its ticks
        known = {(x.record.partition, x.record.logical, x.record.offset) for xs in late.values() for x in xs}
        for x in late_arrivals(seen, production.worker.late_grace_ms, every_record=True):
            if (x.record.partition, x.record.logical, x.record.offset) not in known:
                late.setdefault(str(x.record.customer_id), []).append(x)
    unknown: dict[str, int] = {}
    for r in seen:
        if r.logical != "clock" and r.customer_id is not None and arrival(r.logical, r.event_time, r.timestamp) is None:
            unknown[r.customer_id] = unknown.get(r.customer_id, 0) + 1
    del seen
    if not any(copied.values()):  # nothing to run: the topics this run created hold nothing, so they go
        delete_topics(bootstrap, sorted(report.created), replay.kafka)
        own.clear()
        bounds = "".join(f"; {lt} offsets {lo if lo is not None else 'start'}–{hi if hi is not None else 'end'}"
                         for lt, (lo, hi) in sorted((offsets or {}).items()))
        raise EmptyRange(f"the range is empty: no input record {window.words()}{bounds}")
    runtime = ProcessorRuntime(replay, bootstrap, instance_id="replay", write_ticks=False)
    bg = background.start(runtime.run, "replay-processor")
    inputs = [replay.topics.name(lt) for lt in INPUT_TOPICS]
    deadline = time.monotonic() + timeout_s
    total = sum(copied[lt] for lt in INPUT_TOPICS)
    try:
        while True:
            if bg.errors:
                raise ReplayError(f"replay processor failed: {bg.errors[0]}") from bg.errors[0]
            left = _records_left(replay, bootstrap, replay.worker.app_id, inputs) if runtime.ready.is_set() else total
            if progress:
                progress("replaying", max(0, min(total, total - left)), total)
            if runtime.ready.is_set() and left == 0:
                break
            if time.monotonic() > deadline:
                raise ReplayError(f"replay did not catch up within {timeout_s}s")
            time.sleep(0.3)
    finally:
        bg.stop.set()
        bg.thread.join(60)
    try:
        replay_cmds = [r.decoded().record for r in read_topic(bootstrap, replay.topics.name("commands"), idle_s=0,
                                                              timeout_s=600, kafka=replay.kafka)]
        prod_cmds = [c for c in (r.decoded().record for r in
                                 read_topic(bootstrap, production.topics.name("commands"), idle_s=0,
                                            timeout_s=600, kafka=production.kafka))
                     if window.contains(c["created_at"])]
    except TopicReadTimeout as exc:
        raise ReplayError(str(exc)) from exc
    return ReplayResult(copied, replay_cmds, diff_commands(prod_cmds, replay_cmds), replay_prefix, order, late,
                        unknown, config is not None, window, before, reach, production.worker.late_grace_ms,
                        production.topics.partitions)


# ---- cleanup: the prefixed topics a replay leaves behind ------------------------------------------

def cleanup_refusal(production: Settings, prefix: str) -> str | None:
    """Why deleting every topic that starts with ``prefix`` is refused, or None: an empty prefix, the
    production prefix, a prefix of any production topic (inputs, outputs, ledgers, changelogs, dead
    letters) or of the broker's internal topics would delete what is not a replay's."""
    if not prefix.strip():
        return "an empty prefix would match every topic on the cluster"
    if prefix == production.topics.prefix:
        return f"{prefix!r} is the production prefix"
    if prefix.startswith("_"):
        return f"{prefix!r} matches the broker's internal topics"
    hits = [n for n in production_names(production) if n.startswith(prefix)]
    if hits:
        more = f" and {len(hits) - 3} more" if len(hits) > 3 else ""
        return f"{prefix!r} matches production topics ({', '.join(hits[:3])}{more})"
    return None


def production_names(production: Settings) -> list[str]:
    """Every topic name production uses: inputs, outputs, ledgers, changelogs, dead letters."""
    names = [s.name for s in topic_specs(production)]
    names += [production.topics.dlq(lt) for lt in INPUT_TOPICS + GLOBAL_INPUT_TOPICS + ("commands", "outcomes",
                                                                                       "feedback")]
    names += [production.topics.name("feedback")]
    return sorted(set(names))


def production_namespaces(production: Settings) -> list[str]:
    """The dotted namespaces production's topics live in (``shop.``, ``email.``, ``audience.`` after
    the production prefix); an undotted name is its own namespace."""
    p = production.topics.prefix
    spaces = set()
    for name in production_names(production):
        head, dot, _ = name[len(p):].partition(".") if name.startswith(p) else name.partition(".")
        spaces.add((p if name.startswith(p) else "") + head + dot)
    return sorted(spaces)


def prefix_refusal(production: Settings, prefix: str) -> str | None:
    """Why a replay may not use ``prefix``, or None: every refusal of :func:`cleanup_refusal`, and a
    prefix that lies inside a production namespace (``shop.x.`` puts ``shop.x.shop.carts`` among
    production's ``shop.`` topics, where production's ACLs, retention rules and clean-ups reach it)."""
    why = cleanup_refusal(production, prefix)
    if why:
        return why
    inside = [ns for ns in production_namespaces(production) if ns.endswith(".") and prefix.startswith(ns)]
    if inside:
        return (f"its topics ({prefix}{production.topics.carts}, …) would nest inside production's "
                f"{inside[0]!r} topics: choose a prefix of its own, e.g. 'replay-2026-11.'")
    return None


def replay_topic_names(production: Settings, prefix: str) -> list[str]:
    """The fixed names a replay with ``prefix`` creates (its state changelog is named by its run: see
    :func:`is_replay_topic`)."""
    replay = copy.deepcopy(production)
    replay.topics.prefix = prefix
    return sorted(s.name for s in topic_specs(replay) if not s.logical.startswith("changelog."))


def is_replay_topic(production: Settings, prefix: str, name: str) -> bool:
    """Whether a replay with ``prefix`` would create ``name``: one of :func:`replay_topic_names`, or a
    run's state changelog ``<prefix><app_id>-replay-<prefix>-<ms>-<table>-changelog`` (any app id, which
    does not start with a dot: ``atk1`` and ``atk1.`` share the slug, and ``atk1``'s names never continue
    with the dot that ``atk1.``'s do)."""
    if name in replay_topic_names(production, prefix):
        return True
    slug = re.escape(f"-replay-{prefix.strip('.') or 'x'}-")  # any app id: the replay may have run with another config
    return re.fullmatch(re.escape(prefix) + r"[A-Za-z0-9_-][A-Za-z0-9._-]*" + slug + r"\d+-[A-Za-z0-9_]+-changelog",
                        name) is not None


def replay_topics(bootstrap: str, production: Settings, prefix: str) -> tuple[list[str], list[str]]:
    """The cluster's topics starting with ``prefix``: (those a replay with it creates, the others)."""
    names = topics_with_prefix(bootstrap, prefix, production.kafka)
    ours = [n for n in names if is_replay_topic(production, prefix, n)]
    return ours, [n for n in names if n not in ours]


def topics_with_prefix(bootstrap: str, prefix: str, kafka: KafkaSettings | None = None) -> list[str]:
    """The cluster's topics whose names start with ``prefix``, sorted."""
    from streams.kafka.topics import admin_client

    return sorted(t for t in admin_client(bootstrap, kafka).list_topics(timeout=15).topics if t.startswith(prefix))


