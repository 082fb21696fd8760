"""A new assignment is restored in the loop's own turn, not inside the rebalance callback, with its
partitions paused: records that arrive meanwhile wait and are processed once the state is there.
Through the real broker, with the real worker runtime."""

from __future__ import annotations

import sys
import threading
import traceback

import pytest

from streams.config import Settings
from streams.core.engine import PartitionEngine
from streams.kafka.io import produce_records, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from streams.runtime import background
from streams.runtime.metrics import health, readiness
from streams.runtime.worker import ProcessorRuntime
from tests.test_processor_skeleton import order

pytestmark = pytest.mark.integration


def test_a_new_assignment_is_restored_in_the_loops_turn_with_its_partitions_paused_and_nothing_is_lost(
        kafka, settings):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    entered, release = threading.Event(), threading.Event()

    def slow_engine(s: Settings, p: int) -> PartitionEngine:  # the restore builds the engines: it waits here
        entered.set()
        assert release.wait(60)
        return PartitionEngine(s, p)

    runtime = ProcessorRuntime(settings, kafka, instance_id="restore-loop", engine_factory=slow_engine)
    bg = background.start(runtime.run, "processor")
    try:
        assert entered.wait(30), bg.errors
        assert bg.thread.ident is not None
        stack = [frame.name for frame in traceback.extract_stack(sys._current_frames()[bg.thread.ident])]
        assert "_restore_assigned" in stack and "_on_assign" not in stack, stack
        assert runtime.restoring == [0, 1] and runtime.tasks == {}
        assert health(runtime)[0] and readiness(runtime)[1]["problems"] == ["restoring"]
        produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("while-restoring")])
        release.set()
        got = read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=30)
        assert [c.decoded().record["trigger_event_id"] for c in got] == ["while-restoring"]
        assert runtime.restoring == [] and sorted(runtime.tasks) == [0, 1] and readiness(runtime)[0]
    finally:
        release.set()
        bg.finish()
