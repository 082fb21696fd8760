"""Scale-out: a second worker joins the group mid-stream and the first one leaves later; every order is
confirmed exactly once across both rebalances (partitions move with their state)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from schemas import serde
from streams.kafka.io import produce_records
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.procs import CliProcess, high_watermark_total, read_until_settled, settings_env, wait_for

pytestmark = pytest.mark.integration


def _orders(n: int, start_ms: int) -> list[dict]:
    return [serde.from_json("OrderEvent", {
        "event_id": f"rb-{i}", "customer_id": f"rb-cust-{i % 500}", "occurred_at": start_ms + i, "type": "placed",
        "order_id": f"rb-o-{i}", "email": f"c{i % 500}@example.com", "total": "10.00",
        "items": [{"sku": f"S{i % 13}", "name": "Thing", "price": "10.00", "quantity": 1}]}) for i in range(n)]


def test_a_worker_joining_and_another_leaving_mid_stream_lose_and_duplicate_nothing(kafka, settings, tmp_path):
    settings.worker.tick_interval_s = 0  # no ticks: the command count is exact
    settings.topics.partitions = 4
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    n = 12_000
    commands_topic = settings.topics.name("commands")
    env = settings_env(settings, kafka, SHOPMAIL_WORKER__BATCH_SIZE="100")
    first = CliProcess(["worker", "--instance-id", "w0"], env, tmp_path / "w0.log")
    second = None
    try:
        produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", _orders(n, int(time.time() * 1000)))
        wait_for(lambda: high_watermark_total(kafka, commands_topic) >= 1_000, 60, interval_s=0.05, what="progress")
        second = CliProcess(["worker", "--instance-id", "w1"], env, tmp_path / "w1.log")  # rebalance 1
        wait_for(lambda: "assigned partitions" in second.log(), 60, what="the second worker's assignment")
        assert first.terminate() == 0, first.log()  # rebalance 2: the first leaves, the second takes all
        got = read_until_settled(kafka, commands_topic, n, 120, what="every order confirmed")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.terminate()
    ids = Counter(r.decoded().record["trigger_event_id"] for r in got)
    assert [i for i, c in ids.items() if c > 1] == []
    assert set(ids) == {f"rb-{i}" for i in range(n)}
