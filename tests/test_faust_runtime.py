"""The faust-streaming adapter runs the same domain core through the real broker (at-least-once)."""

from __future__ import annotations

import pytest

from streams.kafka.io import produce_records, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.procs import CliProcess, settings_env
from tests.test_processor_skeleton import order

pytestmark = pytest.mark.integration


def test_faust_runtime_turns_an_order_into_the_same_command_as_the_transactional_runtime(kafka, settings, tmp_path):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    placed = order("faust-1", customer="cust-f")
    produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [placed])
    env = settings_env(settings, kafka, SHOPMAIL_WORKER__DATA_DIR=str(tmp_path / "faust"))
    worker = CliProcess(["worker", "--runtime", "faust"], env, tmp_path / "faust.log")
    try:
        got = read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=60)
    finally:
        worker.terminate()
    assert len(got) == 1, worker.log()
    from streams.core.engine import PartitionEngine

    expected = PartitionEngine(settings, got[0].partition).process("orders", placed).commands
    assert [got[0].decoded().record] == expected
