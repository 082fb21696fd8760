"""A worker killed with SIGKILL mid-stream comes back with its state: no command twice, none lost.

Nothing assumes a quiet machine: the kill waits for commands to appear, and the commands are read
only once the restarted worker has committed every order's offset and stopped, up to the topic's end."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from schemas import serde
from streams.kafka.io import produce_records
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.procs import CliProcess, high_watermark_total, settings_env, wait_for
from tests.support.sink import read_to_end, settled_to_end, topic_ends

pytestmark = pytest.mark.integration


def _orders(n: int, start_ms: int) -> list[dict]:
    return [serde.from_json("OrderEvent", {
        "event_id": f"order-ev-{i}", "customer_id": f"cust-{i % 97}", "occurred_at": start_ms + i,
        "type": "placed", "order_id": f"o-{i}", "email": f"c{i % 97}@example.com", "total": "10.00",
        "items": [{"sku": f"S{i % 13}", "name": "Thing", "price": "10.00", "quantity": 1}]}) for i in range(n)]


def test_worker_killed_with_sigkill_restarts_without_duplicates_or_losses(kafka, settings, tmp_path):
    settings.worker.tick_interval_s = 0  # no ticks: the command count is exact
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    n = 5000
    orders_topic, commands_topic = settings.topics.name("orders"), settings.topics.name("commands")
    env = settings_env(settings, kafka, SHOPMAIL_WORKER__BATCH_SIZE="50")
    worker = CliProcess(["worker", "--instance-id", "w0"], env, tmp_path / "worker.log")
    produce_records(settings, kafka, orders_topic, "OrderEvent", _orders(n, int(time.time() * 1000)))
    ends = topic_ends(kafka, orders_topic)
    # kill it once some — but not all — commands are written (waiting as long as a loaded machine needs)
    wait_for(lambda: high_watermark_total(kafka, commands_topic) >= 500 or not worker.alive(), 600, interval_s=0.05,
             what="first commands")
    assert worker.alive(), worker.log()
    worker.kill9()
    assert not settled_to_end(kafka, settings.worker.app_id, orders_topic, ends), \
        f"kill landed after the whole stream; log: {worker.log()}"
    restarted = CliProcess(["worker", "--instance-id", "w0"], env, tmp_path / "worker2.log")
    try:  # every order processed and its offset committed with its commands: nothing more can come
        wait_for(lambda: settled_to_end(kafka, settings.worker.app_id, orders_topic, ends) or not restarted.alive(),
                 600, interval_s=0.5, what="every order committed after the restart")
    finally:
        assert restarted.terminate() == 0, restarted.log()
    ids = Counter(c["trigger_event_id"] for c in read_to_end(kafka, commands_topic))
    assert [i for i, c in ids.items() if c > 1] == [], "one command per order"
    assert set(ids) == {f"order-ev-{i}" for i in range(n)}
