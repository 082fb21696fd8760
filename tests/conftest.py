"""Shared fixtures: a real Kafka-protocol broker, a real HTTP SES emulator, isolated settings."""

from __future__ import annotations

import itertools
import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from streams.compiled import stale, stale_message
from streams.config import Settings, load_settings


def pytest_sessionstart(session: pytest.Session) -> None:
    """A compiled module older than its source would be imported instead of it: the tests would run old code."""
    old = stale()
    if old:
        pytest.exit(stale_message(old), returncode=4)


def _container_bootstrap() -> Iterator[str]:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception as exc:  # no engine here: skip, never fail
        pytest.skip(f"SHOPMAIL_TEST_BROKER=container but no Docker engine answers ({type(exc).__name__}: {exc})")
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap servers of a real broker: KAFKA_BOOTSTRAP_SERVERS, testcontainers, or embedded Tansu."""
    if os.environ.get("SHOPMAIL_TEST_BROKER") == "container":
        yield from _container_bootstrap()
        return
    from streams.kafka.embedded_broker import kafka_bootstrap

    with kafka_bootstrap() as bootstrap:
        yield bootstrap


@dataclass
class MotoSes:
    endpoint_url: str
    region: str = "eu-west-1"

    def sent_messages(self) -> list[dict[str, Any]]:
        """Every message moto stored (Simple and Raw), read back through moto's own HTTP API."""
        with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=10) as resp:
            data = json.load(resp)
        ses = data.get("ses", {})
        out: list[dict[str, Any]] = []
        for kind in ("RawMessage", "Message"):
            for msg in ses.get(kind, []) or []:
                out.append(dict(msg, kind=kind))
        return out

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()


@pytest.fixture(scope="session")
def moto_ses() -> Iterator[MotoSes]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        yield MotoSes(f"http://{host}:{port}")
    finally:
        server.stop()


_counter = itertools.count()


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """Settings isolated per test: a unique topic prefix and app id, memory store, small partitions.

    Under pytest-xdist each worker process counts on its own: the worker id keeps names unique when the
    workers share one cluster (KAFKA_BOOTSTRAP_SERVERS); otherwise each worker has its own broker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    n = f"{worker}x{next(_counter)}" if worker else str(next(_counter))
    name = request.node.name[:40].replace("[", "-").replace("]", "").replace("/", "-")
    s = load_settings(env={})
    s.topics.prefix = f"t{n}-{name}."
    s.topics.partitions = 2
    s.worker.app_id = f"shopmail-t{n}"
    s.sink.group_id = f"shopmail-sink-t{n}"
    s.worker.store = "memory://"
    s.worker.tick_interval_s = 0.5
    return s


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that needs the broker or the SES emulator is an integration test, whether or not it says so:
    `make test-fast` (``-m "not integration and not slow"``) runs the rest."""
    for item in items:
        if {"kafka", "moto_ses"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    items.sort(key=_run_order)


# The files that take longest (`pytest --durations=120`, 2026-12-03: 40–105 s each), started first so that
# `-n 4 --dist loadfile --no-loadscope-reorder` (the Makefile's) ends with short files filling every worker
# instead of one worker finishing a long file alone.
LONGEST_FIRST = ("test_bench_and_traffic.py", "test_sink_crash.py", "test_sink.py", "test_flows_live.py",
                 "test_fail_fast.py", "test_demo_and_ops.py", "test_simulate.py", "test_data_tools.py",
                 "test_http_fuzz.py", "test_replay.py", "test_worker_rebalance.py", "test_sink_resilience.py",
                 "test_chaos.py", "test_bench_instructions.py", "test_processor_crash.py")


def _run_order(item: pytest.Item) -> tuple[int, int]:
    """Longest files first, then the other integration files, then the rest; collection order within each."""
    name = item.path.name
    if name in LONGEST_FIRST:
        return (0, LONGEST_FIRST.index(name))
    return (1 if item.get_closest_marker("integration") else 2, 0)
