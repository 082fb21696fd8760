"""Start shopmail CLI commands as real subprocesses for crash/restart tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.config import Settings


def settings_env(settings: Settings, bootstrap: str, **extra: str) -> dict[str, str]:
    """Environment that makes a subprocess use the same settings as the test."""
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SHOPMAIL_TOPICS__PREFIX": settings.topics.prefix,
        "SHOPMAIL_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "SHOPMAIL_WORKER__APP_ID": settings.worker.app_id,
        "SHOPMAIL_WORKER__STORE": settings.worker.store,
        "SHOPMAIL_WORKER__TICK_INTERVAL_S": str(settings.worker.tick_interval_s),
        "SHOPMAIL_WORKER__WEB_PORT": "0",
        "SHOPMAIL_SINK__GROUP_ID": settings.sink.group_id,
        "SHOPMAIL_SINK__WEB_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class CliProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait/kill
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def wait_for(predicate, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def high_watermark_total(bootstrap: str, topic: str) -> int:
    """Sum of high watermarks (records written, committed or not) — a cheap progress probe."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "shopmail-probe"})
    try:
        md = c.list_topics(topic, timeout=5)
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in md.topics[topic].partitions)
    finally:
        c.close()
