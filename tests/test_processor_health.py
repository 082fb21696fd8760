"""The processors' /healthz and /readyz tell the truth, over a real socket against a real broker: not
ready before an assignment or while restoring, ready once restored, not live while the loop is stuck in
an engine call; a revoked partition's self-reported gauges disappear; restore reads all partitions at
once; a second worker on the same host gets its own state directory."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY

from streams.config import Settings
from streams.core.engine import PartitionEngine
from streams.kafka.io import produce_records
from streams.kafka.topics import ensure_topics, topic_specs
from streams.runtime import background
from streams.runtime.metrics import ProcessorMetrics, health, readiness
from streams.runtime.worker import ProcessorRuntime
from streams.web import OpsServer
from tests.test_processor_skeleton import order

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wait_for_answer(port: int, path: str, want: int, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = get(port, path)
        if code == want:
            return body
        assert time.monotonic() < deadline, f"{path} still answers {code} {body}"
        time.sleep(0.1)


class GatedEngines:
    """Engines whose construction (restore) waits for ``restore_gate``, and whose processing of the
    customer ``stuck`` blocks until ``stall_gate`` opens: a really stalled loop, not a flag."""

    def __init__(self) -> None:
        self.restore_gate = threading.Event()
        self.stall_gate = threading.Event()

    def __call__(self, settings: Settings, partition: int) -> PartitionEngine:
        assert self.restore_gate.wait(60)
        gates = self

        class Engine(PartitionEngine):
            def process(self, topic: str, record: dict[str, Any]) -> Any:  # type: ignore[override]
                if record.get("customer_id") == "stuck":
                    assert gates.stall_gate.wait(60)
                return super().process(topic, record)

        return Engine(settings, partition)


def test_a_processor_is_ready_only_when_assigned_and_restored_and_not_live_when_its_loop_stalls(kafka, settings):
    settings.worker.tick_interval_s = 0
    settings.worker.health_stall_s = 1.5
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    engines = GatedEngines()
    runtime = ProcessorRuntime(settings, kafka, instance_id="health-0", engine_factory=engines)
    ops = OpsServer(0, lambda: health(runtime), ready=lambda: readiness(runtime)).start()
    worker = None
    try:
        code, body = get(ops.port, "/readyz")
        assert code == 503 and body["problems"] == ["no_assignment"]
        worker = background.start(runtime.run, "processor")
        deadline = time.monotonic() + 30
        while "restoring" not in get(ops.port, "/readyz")[1]["problems"]:
            assert time.monotonic() < deadline, "the restore never started"
            time.sleep(0.05)
        assert get(ops.port, "/readyz")[0] == 503
        time.sleep(settings.worker.health_stall_s + 0.5)  # a restore longer than the stall limit is not a stall
        assert get(ops.port, "/healthz")[0] == 200
        engines.restore_gate.set()
        ready = wait_for_answer(ops.port, "/readyz", 200)
        assert ready["assigned_partitions"] == [0, 1] and ready["restoring"] == []

        produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("o-stuck", customer="stuck")])
        stuck_at = time.monotonic()
        stalled = wait_for_answer(ops.port, "/healthz", 503)
        assert time.monotonic() - stuck_at >= settings.worker.health_stall_s - 0.2
        assert stalled["problems"][0].startswith("loop_stalled_")
        assert get(ops.port, "/readyz")[0] == 503
        engines.stall_gate.set()
        wait_for_answer(ops.port, "/healthz", 200)
        assert wait_for_answer(ops.port, "/readyz", 200)["problems"] == []
    finally:
        engines.restore_gate.set()
        engines.stall_gate.set()
        if worker is not None:
            worker.finish()
        ops.shutdown()


def gauge_labels(name: str) -> set[tuple[str, ...]]:
    return {tuple(sorted(s.labels.items())) for m in REGISTRY.collect() if m.name == name for s in m.samples}


def test_a_revoked_partitions_lag_and_skew_gauges_are_removed(kafka, settings):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    metrics = ProcessorMetrics(lag_interval_s=0)
    runtime = ProcessorRuntime(settings, kafka, instance_id="gauges-0", observer=metrics)
    worker = background.start(runtime.run, "processor")
    orders = settings.topics.name("orders")
    try:
        assert runtime.ready.wait(30), worker.errors
        produce_records(settings, kafka, orders, "OrderEvent",
                        [order(f"g-{i}", customer=f"g-cust-{i}") for i in range(20)])
        deadline = time.monotonic() + 30
        while not {labels for labels in gauge_labels("shopmail_consumer_lag") if ("topic", orders) in labels}:
            assert time.monotonic() < deadline, gauge_labels("shopmail_consumer_lag")
            time.sleep(0.1)
    finally:
        worker.finish()  # closing the consumer revokes every partition
    assert {labels for labels in gauge_labels("shopmail_consumer_lag") if ("topic", orders) in labels} == set()


def test_restore_reads_every_partition_at_once_and_an_empty_changelog_costs_next_to_nothing(kafka, settings):
    settings.topics.partitions = 6
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    runtime = ProcessorRuntime(settings, kafka, instance_id="restore-0")
    started = time.monotonic()
    tasks = runtime._restore_partitions(list(range(6)))
    elapsed = time.monotonic() - started
    assert sorted(tasks) == list(range(6)) and runtime.restoring == []
    assert elapsed < 3.0, f"6 empty partitions took {elapsed:.2f}s (one at a time it was ~1.2 s each)"


def test_a_second_worker_on_the_same_host_gets_its_own_state_directory_and_instance_id(kafka, settings, tmp_path):
    settings.worker.store = "rocksdict://"
    settings.worker.data_dir = str(tmp_path)
    settings.worker.instance_id = ""
    host = socket.gethostname()
    first = ProcessorRuntime(settings, kafka)
    second = ProcessorRuntime(settings, kafka)  # same host, same settings, first still running
    try:
        assert (first.instance_id, second.instance_id) == (host, f"{host}-2")  # two transactional.ids
        first.store.apply(0, {"k": b"1"}, 5)
        second.store.apply(0, {"k": b"2"}, 7)  # the same partition, its own database: no lock clash
        assert first.store.load(0) == ({"k": b"1"}, 5) and second.store.load(0) == ({"k": b"2"}, 7)
        assert sorted(p.name for p in tmp_path.iterdir()) == [settings.worker.app_id, f"{settings.worker.app_id}.worker-2"]
    finally:
        first.store.close()
        second.store.close()
    again = ProcessorRuntime(settings, kafka)  # both gone: the first directory is free again, with its state
    try:
        assert again.instance_id == host and again.store.load(0) == ({"k": b"1"}, 5)
    finally:
        again.store.close()
