"""Prometheus metrics of the processors (per worker): events, commands by flow, DLQ records,
consumer lag per assigned partition (removed on revoke: alerts read the cluster's own
``kafka_consumergroup_lag``), restore time, clock skew (wall clock − partition event-time clock), and the domain
core's own counters (``PartitionEngine.stats``): late events applied by topic and how late, events
too far ahead of the clock, superseded facts, duplicates, clock repairs, steps dropped by reason,
audience joins and leaves.

``health`` (liveness, /healthz) and ``readiness`` (/readyz) are the processors' honest answers: not
live when the loop has not turned for ``worker.health_stall_s`` (or a restore has run past
``worker.restore_timeout_s``); not ready without an assigned partition or while restoring."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from streams.shared_metrics import DLQ

if TYPE_CHECKING:
    from streams.runtime.worker import ProcessorRuntime

EVENTS = Counter("shopmail_processor_events_total", "Input records processed", ["topic"])
COMMANDS = Counter("shopmail_processor_commands_total", "Email commands emitted", ["flow"])
LAG = Gauge("shopmail_consumer_lag", "High watermark minus position", ["topic", "partition"])
SKEW = Gauge("shopmail_processor_clock_skew_seconds", "Wall clock minus the partition's event-time clock",
             ["partition"])
TRANSACTIONS = Counter("shopmail_processor_transactions_total", "Committed transactions")
ABORTED = Counter("shopmail_processor_aborted_transactions_total", "Aborted transactions")
LATE = Counter("shopmail_processor_late_events_total",
               "Events behind the watermark (beyond the grace), applied all the same, by how far they were "
               "behind the partition clock (le_1h, le_1d, le_7d, gt_7d)", ["topic", "lateness"])
FUTURE = Counter("shopmail_processor_future_events_total",
                 "Events more than worker.max_future_skew_ms ahead of the last clock tick: applied without "
                 "moving the clock", ["topic"])
STALE = Counter("shopmail_processor_stale_facts_total",
                "Late facts that a newer fact of their kind already superseded (consent, cart contents)", ["topic"])
DUPLICATES = Counter("shopmail_processor_duplicate_events_total", "Redelivered events (known event id), ignored")
CLOCK_REPAIRS = Counter("shopmail_processor_clock_repairs_total",
                        "Partition clocks set back after running more than the skew ahead of a clock tick or, "
                        "on restore, of every settled fact")
DROPPED = Counter("shopmail_processor_steps_dropped_total", "Flow steps not sent, by flow and reason",
                  ["flow", "reason"])
AUDIENCE = Counter("shopmail_processor_audience_changes_total",
                   "Retargeting audience joins and leaves written (change: join, leave)", ["audience", "change"])
RESTORE = Histogram("shopmail_processor_restore_seconds",
                    "Wall time to restore the partitions of one assignment (or after an aborted transaction)",
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
RESTORED_PARTITIONS = Counter("shopmail_processor_restored_partitions_total", "Partitions restored")
DELIVERABILITY = Gauge("shopmail_deliverability_status",
                       "Complaint and bounce guard per mailbox provider and partition: 0 ok, 1 warn, 2 stop "
                       "(marketing to the provider paused); decided at the last bucket boundary",
                       ["provider", "partition"])
DELIVERABILITY_RATE = Gauge("shopmail_deliverability_rate",
                            "Rate over the guard's window at the last bucket boundary (kind: complaint, bounce); "
                            "absent under deliverability.min_volume", ["provider", "partition", "kind"])
DELIVERABILITY_VOLUME = Gauge("shopmail_deliverability_volume",
                              "Deliveries + hard bounces per provider in the guard's window at the last boundary",
                              ["provider", "partition"])
DELIVERABILITY_CHANGES = Counter("shopmail_deliverability_changes_total",
                                 "Guard status changes (status: ok, warn, stop) and marketing steps held while a "
                                 "provider is stopped (status: held)", ["provider", "status"])
ENFORCED = Counter("shopmail_processor_enforced_processing_total",
                   "Records processed while a co-partitioned topic of their partition had none")


class ProcessorMetrics:
    """Observer the runtime calls after each committed batch."""

    def __init__(self, lag_interval_s: float = 5.0) -> None:
        self._seen_flows: dict[str, int] = {}
        self._seen_events = 0
        self._seen_aborted = 0
        self._seen_enforced = 0
        self._engine_seen: dict[int, tuple[int, dict[str, int]]] = {}  # partition → (id(engine), stats exported)
        self._lag_at = 0.0
        self.lag_interval_s = lag_interval_s

    def on_batch(self, runtime: ProcessorRuntime, by_topic: dict[str, int] | None = None) -> None:
        s = runtime.stats
        for topic, n in (by_topic or {}).items():
            EVENTS.labels(topic).inc(n)
        for flow, n in s.by_flow.items():
            delta = n - self._seen_flows.get(flow, 0)
            if delta:
                COMMANDS.labels(flow).inc(delta)
                self._seen_flows[flow] = n
        TRANSACTIONS.inc()
        if s.aborted > self._seen_aborted:
            ABORTED.inc(s.aborted - self._seen_aborted)
            self._seen_aborted = s.aborted
        if s.enforced > self._seen_enforced:
            ENFORCED.inc(s.enforced - self._seen_enforced)
            self._seen_enforced = s.enforced
        for p, engine in list(runtime.engines.items()):
            self._export_engine_counters(p, engine)
            export_deliverability(p, engine)
        now = time.time()
        for p, engine in list(runtime.engines.items()):
            if engine.clock_ms:
                SKEW.labels(str(p)).set(now - engine.clock_ms / 1000)
        if now - self._lag_at >= self.lag_interval_s:
            self._lag_at = now
            for topic, partition, lag in runtime.lag():
                LAG.labels(topic, str(partition)).set(lag)

    def _export_engine_counters(self, partition: int, engine: Any) -> None:
        """Increments of the engine's counters since the last batch. A rebuilt engine (restore after
        a rebalance or an aborted transaction) starts its counters from zero, and so does its baseline."""
        key, seen = self._engine_seen.get(partition, (0, {}))
        if key != id(engine):
            seen = {}
        for name, n in engine.stats.items():
            delta = n - seen.get(name, 0)
            if delta <= 0:
                continue
            kind, _, rest = name.partition(":")
            if kind == "lateness":
                topic, _, bucket = rest.rpartition(":")
                LATE.labels(topic, bucket).inc(delta)
            elif kind == "future":
                FUTURE.labels(rest).inc(delta)
            elif kind == "stale":
                STALE.labels(rest).inc(delta)
            elif kind == "dropped":
                flow, _, reason = rest.partition(":")
                DROPPED.labels(flow, reason).inc(delta)
            elif kind == "deliverability" and ":" in rest:
                provider, _, status = rest.partition(":")
                DELIVERABILITY_CHANGES.labels(provider, status).inc(delta)
            elif kind == "audience":
                audience, _, change = rest.rpartition(":")
                AUDIENCE.labels(audience, change).inc(delta)
            elif name == "duplicate":
                DUPLICATES.inc(delta)
            elif name == "clock_repaired":
                CLOCK_REPAIRS.inc(delta)
        self._engine_seen[partition] = (id(engine), dict(engine.stats))

    def on_dead_letter(self, topic: str) -> None:
        DLQ.labels(topic).inc()

    def on_restore(self, partitions: int, seconds: float) -> None:
        RESTORE.observe(seconds)
        RESTORED_PARTITIONS.inc(partitions)

    def on_revoke(self, topic_partitions: list[tuple[str, int]], partitions: set[int]) -> None:
        """Drop the gauges of what this worker no longer owns (a stale lag would read as lag forever)."""
        for topic, partition in topic_partitions:
            LAG.remove(topic, str(partition))
        for partition in partitions:
            SKEW.remove(str(partition))
            _forget_deliverability(str(partition))
            self._engine_seen.pop(partition, None)


_deliverability_labels: dict[str, set[str]] = {}  # partition → providers with gauges


def export_deliverability(partition: int, engine: Any) -> None:
    """The guard's status, rates and volume per provider of one partition (streams/core/deliverability.py)."""
    p = str(partition)
    seen = _deliverability_labels.setdefault(p, set())
    for provider, view in engine.ctx.deliverability.snapshot().items():
        seen.add(provider)
        DELIVERABILITY.labels(provider, p).set(view["level"])
        DELIVERABILITY_VOLUME.labels(provider, p).set(view["volume"])
        for kind in ("complaint", "bounce"):
            rate = view[f"{kind}_rate"]
            if rate is None:
                try:
                    DELIVERABILITY_RATE.remove(provider, p, kind)
                except KeyError:
                    pass
            else:
                DELIVERABILITY_RATE.labels(provider, p, kind).set(rate)


def _forget_deliverability(partition: str) -> None:
    for provider in _deliverability_labels.pop(partition, set()):
        for gauge in (DELIVERABILITY, DELIVERABILITY_VOLUME):
            try:
                gauge.remove(provider, partition)
            except KeyError:
                pass
        for kind in ("complaint", "bounce"):
            try:
                DELIVERABILITY_RATE.remove(provider, partition, kind)
            except KeyError:
                pass


def _liveness_problems(runtime: Any, now: float) -> list[str]:
    worker = runtime.settings.worker
    if runtime.restoring:  # restoring inside the loop's turn: alive until the restore's own timeout
        if now - runtime.restore_started > worker.restore_timeout_s:
            return [f"restore_stalled_{now - runtime.restore_started:.0f}s"]
        return []
    if now - runtime.beat_at > worker.health_stall_s:
        return [f"loop_stalled_{now - runtime.beat_at:.0f}s"]
    return []


def _details(runtime: Any, problems: list[str]) -> dict[str, Any]:
    return {"problems": problems, "assigned_partitions": sorted(list(runtime.tasks)),
            "restoring": list(runtime.restoring), "events": runtime.stats.events,
            "commands": runtime.stats.commands}


def health(runtime: Any) -> tuple[bool, dict[str, Any]]:
    """Liveness: the loop turned within ``worker.health_stall_s``."""
    problems = _liveness_problems(runtime, time.monotonic())
    return not problems, _details(runtime, problems)


def readiness(runtime: Any) -> tuple[bool, dict[str, Any]]:
    """Readiness: live, with at least one assigned partition, and not restoring."""
    problems = _liveness_problems(runtime, time.monotonic())
    if runtime.restoring:
        problems.append("restoring")
    elif not runtime.tasks:
        problems.append("no_assignment")
    return not problems, _details(runtime, problems)
