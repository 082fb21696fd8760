"""The worker's Prometheus metrics show what the domain core counts: lateness, drop reasons, repairs."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY

from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, load_settings
from streams.core.engine import PartitionEngine
from streams.runtime.worker import RuntimeStats
from streams.runtime.metrics import ProcessorMetrics
from tests.core_events import T0, cart, customer, order, tick


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_late_events_drop_reasons_and_clock_repairs_reach_prometheus_as_counter_increments():
    late = {"topic": "orders", "lateness": "le_1d"}
    dropped = {"flow": "abandoned_cart", "reason": "late_start"}
    before = (sample("shopmail_processor_late_events_total", **late),
              sample("shopmail_processor_steps_dropped_total", **dropped),
              sample("shopmail_processor_future_events_total", topic="carts"),
              sample("shopmail_processor_clock_repairs_total"))
    engine = PartitionEngine(load_settings(env={}), 3)
    runtime = SimpleNamespace(stats=RuntimeStats(), engines={3: engine}, lag=lambda: [])
    metrics = ProcessorMetrics(lag_interval_s=3600)
    for topic, rec in [tick(T0), customer("m", at=T0), tick(T0 + 2 * HOUR_MS), order("m", T0 + 30 * MINUTE_MS),
                       cart("p", T0 + 5 * MINUTE_MS), cart("n", T0 + 30 * DAY_MS)]:
        engine.process(topic, rec)
    metrics.on_batch(runtime)
    metrics.on_batch(runtime)  # nothing new: nothing counted twice
    runtime.engines[3] = fresh = PartitionEngine(load_settings(env={}), 3)  # rebuilt after a rebalance
    fresh.process("customers", customer("x", at=T0 + 300 * DAY_MS)[1])
    fresh.process("clock", tick(T0 + 3 * HOUR_MS)[1])
    metrics.on_batch(runtime)
    after = (sample("shopmail_processor_late_events_total", **late),
             sample("shopmail_processor_steps_dropped_total", **dropped),
             sample("shopmail_processor_future_events_total", topic="carts"),
             sample("shopmail_processor_clock_repairs_total"))
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1, 1]
