"""Prometheus metrics of the processors (per worker): events, commands by flow, DLQ records,
consumer lag per partition, clock skew (wall clock − partition event-time clock)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from streams.shared_metrics import DLQ

if TYPE_CHECKING:
    from streams.processor import ProcessorRuntime

EVENTS = Counter("shopmail_processor_events_total", "Input records processed", ["topic"])
COMMANDS = Counter("shopmail_processor_commands_total", "Email commands emitted", ["flow"])
LAG = Gauge("shopmail_consumer_lag", "High watermark minus position", ["topic", "partition"])
SKEW = Gauge("shopmail_processor_clock_skew_seconds", "Wall clock minus the partition's event-time clock",
             ["partition"])
TRANSACTIONS = Counter("shopmail_processor_transactions_total", "Committed transactions")
ABORTED = Counter("shopmail_processor_aborted_transactions_total", "Aborted transactions")
ENFORCED = Counter("shopmail_processor_enforced_processing_total",
                   "Records processed while a co-partitioned topic of their partition had none")


class ProcessorMetrics:
    """Observer the runtime calls after each committed batch."""

    def __init__(self, lag_interval_s: float = 5.0) -> None:
        self._seen_flows: dict[str, int] = {}
        self._seen_events = 0
        self._seen_aborted = 0
        self._seen_enforced = 0
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
        now = time.time()
        for p, engine in list(runtime.engines.items()):
            if engine.clock_ms:
                SKEW.labels(str(p)).set(now - engine.clock_ms / 1000)
        if now - self._lag_at >= self.lag_interval_s:
            self._lag_at = now
            for topic, partition, lag in runtime.lag():
                LAG.labels(topic, str(partition)).set(lag)

    def on_dead_letter(self, topic: str) -> None:
        DLQ.labels(topic).inc()


def health(runtime: Any) -> tuple[bool, dict[str, Any]]:
    return True, {"assigned_partitions": sorted(runtime.engines), "events": runtime.stats.events,
                  "commands": runtime.stats.commands, "ready": runtime.ready.is_set()}
