"""Run a ProcessorRuntime in a background thread for integration tests (real broker)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from streams.config import Settings
from streams.processor import ProcessorRuntime
from streams.topics import ensure_topics, topic_specs


@contextlib.contextmanager
def running_processor(settings: Settings, bootstrap: str, instance_id: str = "test-0",
                      ready_timeout_s: float = 30.0) -> Iterator[ProcessorRuntime]:
    report = ensure_topics(bootstrap, topic_specs(settings))
    assert report.healthy, report.mismatches
    runtime = ProcessorRuntime(settings, bootstrap, instance_id=instance_id)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runtime.run(stop)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="processor", daemon=True)
    thread.start()
    try:
        if not runtime.ready.wait(ready_timeout_s):
            raise AssertionError(f"processor not ready in {ready_timeout_s}s (errors: {errors})")
        yield runtime
    finally:
        stop.set()
        thread.join(30)
    if errors:
        raise errors[0]
