"""Run a ProcessorRuntime in a background thread for integration tests (real broker)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from streams.runtime import background
from streams.config import Settings
from streams.runtime.worker import ProcessorRuntime
from streams.kafka.topics import ensure_topics, topic_specs


@contextlib.contextmanager
def running_processor(settings: Settings, bootstrap: str, instance_id: str = "test-0",
                      ready_timeout_s: float = 30.0, observer: Any | None = None) -> Iterator[ProcessorRuntime]:
    report = ensure_topics(bootstrap, topic_specs(settings))
    assert report.healthy, report.mismatches
    runtime = ProcessorRuntime(settings, bootstrap, instance_id=instance_id, observer=observer)
    bg = background.start(runtime.run, "processor")
    try:
        if not runtime.ready.wait(ready_timeout_s):
            raise AssertionError(f"processor not ready in {ready_timeout_s}s (errors: {bg.errors})")
        yield runtime
    finally:
        bg.finish()
