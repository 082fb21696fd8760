"""A worker killed with SIGKILL mid-stream comes back with its state: no command twice, none lost."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from schemas import serde
from streams.kafka.io import produce_records, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.procs import CliProcess, high_watermark_total, read_until_settled, settings_env, wait_for

pytestmark = pytest.mark.integration


def _orders(n: int, start_ms: int) -> list[dict]:
    return [serde.from_json("OrderEvent", {
        "event_id": f"order-ev-{i}", "customer_id": f"cust-{i % 97}", "occurred_at": start_ms + i,
        "type": "placed", "order_id": f"o-{i}", "email": f"c{i % 97}@example.com", "total": "10.00",
        "items": [{"sku": f"S{i % 13}", "name": "Thing", "price": "10.00", "quantity": 1}]}) for i in range(n)]


def test_worker_killed_with_sigkill_restarts_without_duplicates_or_losses(kafka, settings, tmp_path):
    settings.worker.tick_interval_s = 0  # no ticks: the command count is exact
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    n = 20000
    orders_topic, commands_topic = settings.topics.name("orders"), settings.topics.name("commands")
    env = settings_env(settings, kafka, SHOPMAIL_WORKER__BATCH_SIZE="50")
    worker = CliProcess(["worker", "--instance-id", "w0"], env, tmp_path / "worker.log")
    produce_records(settings, kafka, orders_topic, "OrderEvent", _orders(n, int(time.time() * 1000)))
    # kill it once some — but not all — commands are committed
    wait_for(lambda: high_watermark_total(kafka, commands_topic) >= 500, 60, interval_s=0.05, what="first commands")
    worker.kill9()
    partial = len(read_topic(kafka, commands_topic, idle_s=0.3, timeout_s=10))
    assert 0 < partial < n, f"kill landed outside the stream ({partial} of {n}); log: {worker.log()}"
    restarted = CliProcess(["worker", "--instance-id", "w0"], env, tmp_path / "worker2.log")
    try:
        got = read_until_settled(kafka, commands_topic, n, 90, what="all commands after restart")
    finally:
        assert restarted.terminate() == 0, restarted.log()
    ids = Counter(r.decoded().record["trigger_event_id"] for r in got)
    assert [i for i, c in ids.items() if c > 1] == []
    assert set(ids) == {f"order-ev-{i}" for i in range(n)}
