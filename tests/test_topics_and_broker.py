"""Embedded broker lifecycle and `shopmail topics` (create/verify, idempotent, mismatches)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient

from streams.kafka.embedded_broker import EmbeddedBroker, BrokerError, wait_until_ready
from streams.kafka.partitioning import partition_for
from streams.kafka.topics import ensure_topics, topic_specs


def test_embedded_broker_starts_on_a_free_loopback_port_and_stops_cleanly():
    with EmbeddedBroker() as broker:
        assert broker.bootstrap.startswith("127.0.0.1:") and broker.running
        assert AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5).brokers
    assert not broker.running


def test_waiting_for_a_broker_that_is_not_there_fails_with_a_clear_error():
    with pytest.raises(BrokerError, match="did not answer metadata"):
        wait_until_ready("127.0.0.1:1", timeout_s=0.5)


def test_input_topics_share_one_partition_count_and_tables_are_compacted(settings):
    specs = {s.logical: s for s in topic_specs(settings)}
    inputs = [s for s in specs.values() if s.role == "input"]
    assert len({s.partitions for s in inputs}) == 1
    assert specs["customers"].config["cleanup.policy"] == "compact"
    assert specs["sink_ledger"].config["cleanup.policy"] == "compact"
    assert all(s.config["cleanup.policy"] == "compact" for s in specs.values() if s.role == "changelog")
    assert specs["carts.dlq"].name == settings.topics.name("carts") + ".dlq"


@pytest.mark.integration
def test_topics_command_is_idempotent_and_reports_mismatches(kafka, settings):
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka, SHOPMAIL_TOPICS__PREFIX=settings.topics.prefix,
               SHOPMAIL_TOPICS__PARTITIONS="2", SHOPMAIL_WORKER__APP_ID=settings.worker.app_id)
    cmd = [sys.executable, "-m", "streams.cli", "topics"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    second = subprocess.run(cmd + ["--verify"], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "created" not in second.stdout
    env["SHOPMAIL_TOPICS__PARTITIONS"] = "3"
    third = subprocess.run(cmd + ["--verify"], env=env, capture_output=True, text=True, timeout=60)
    assert third.returncode == 1 and "partitions 2 != 3" in third.stdout
    report = ensure_topics(kafka, topic_specs(settings))
    assert report.healthy and not report.created


@pytest.mark.integration
def test_simulate_partitioning_matches_the_producers_partitioner(kafka, settings):
    """`simulate` assigns customers to partitions exactly as librdkafka's murmur2_random does."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    topic = settings.topics.prefix + "partitioning"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, 7, 1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": kafka, "partitioner": "murmur2_random"})
    placed: list[tuple[str, int]] = []
    for i in range(300):
        key = f"customer-{i}"
        producer.produce(topic, key=key.encode(), value=b"v",
                         on_delivery=lambda err, msg, key=key: placed.append((key, msg.partition())))
    producer.flush(10)
    assert len(placed) == 300
    assert all(partition_for(key, 7) == p for key, p in placed)


@pytest.mark.slow  # waits for the Docker client to give up
def test_container_broker_path_skips_with_a_reason_when_no_docker_engine_answers(tmp_path):
    """SHOPMAIL_TEST_BROKER=container uses testcontainers; without a Docker engine it skips, never fails."""
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        pytest.skip("a Docker engine answers here: the container path runs for real")
    except Exception:
        pass
    env = dict(os.environ, SHOPMAIL_TEST_BROKER="container")
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "tests/test_schemas.py::test_every_schema_round_trips_through_a_real_topic"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout and "no Docker engine answers" in run.stdout
