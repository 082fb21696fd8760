"""faust-streaming adapter for the same domain core (``shopmail worker --runtime faust``).

The engine is the one the transactional runtime drives; here it runs inside a faust agent subscribed
to every input topic, with its state in a faust Table (changelog topic
``<app_id>-faust-engine-changelog``; ``rocksdb://`` store — backed by rocksdict — or ``memory://``).
Table keys are ``"<partition>|<engine key>"`` so the engine of partition *p* can be rebuilt from the
table after a rebalance.

Guarantee: **at-least-once**. faust's ``exactly_once`` cannot start on the embedded Tansu broker
(aiokafka InitProducerId → UnknownError) and after a SIGKILL at-least-once re-emits the commands of
records processed since the last offset commit (the sink dedupes them by ``command_id``). That is why
``--runtime txn`` (streams/runtime/worker.py) is the default; see docs/runtime.md.

Security: faust talks to Kafka through aiokafka, not librdkafka, so ``kafka.security`` and the
librdkafka pass-through do not apply; the adapter refuses to start unless the protocol is PLAINTEXT
(secured clusters run the default ``--runtime txn``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from schemas import serde
from streams.config import ConfigError, Settings
from streams.core.audiences import membership_key
from streams.core.engine import PartitionEngine
from streams.runtime.dead_letters import dead_letter as build_dead_letter
from streams.kafka.topics import INPUT_TOPICS, VALUE_SCHEMA

log = logging.getLogger("shopmail.faust")


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    if settings.kafka.security.protocol.upper() != "PLAINTEXT":
        raise ConfigError(f"--runtime faust connects in plaintext only (kafka.security.protocol is "
                          f"{settings.kafka.security.protocol}): run the default --runtime txn on a secured cluster")
    store = "rocksdb://" if settings.worker.store.startswith("rocksdict://") else "memory://"
    n = settings.topics.partitions
    app = faust.App(
        f"{settings.worker.app_id}-faust", broker=f"kafka://{bootstrap}", store=store,
        datadir=settings.worker.data_dir, processing_guarantee="at_least_once",
        topic_partitions=n, topic_allow_declare=True, topic_disable_leader=True,
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest", web_enabled=False,
        key_serializer="raw", value_serializer="raw",
    )
    t = settings.topics
    logical_by_name = {t.name(lt): lt for lt in INPUT_TOPICS}
    inputs = app.topic(*logical_by_name, key_type=bytes, value_type=bytes, value_serializer="raw")
    commands = app.topic(t.name("commands"), key_type=bytes, value_type=bytes, value_serializer="raw")
    audiences = app.topic(t.name("audiences"), key_type=bytes, value_type=bytes, value_serializer="raw")
    clock = app.topic(t.name("clock"), key_type=bytes, value_type=bytes, value_serializer="raw")
    table = app.Table("faust-engine", default=None, partitions=n, key_type=bytes, value_type=bytes)
    engines: dict[int, PartitionEngine] = {}

    def engine_for(p: int) -> PartitionEngine:
        engine = engines.get(p)
        if engine is None:
            engine = PartitionEngine(settings, p)
            prefix = f"{p}|"
            for key, value in table.items():
                k = key.decode() if isinstance(key, bytes) else key
                if k.startswith(prefix) and value is not None:
                    engine.restore(k[len(prefix):], value)
            engine.restored()
            engines[p] = engine
        return engine

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: Any, **_: Any) -> None:  # noqa: ARG001
        engines.clear()  # rebuilt from the (recovered) table on the next event

    async def dead_letter(event: Any, reason: str, detail: str) -> None:
        msg = event.message
        dl = build_dead_letter(settings.limits, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                               key=msg.key, value=msg.value, reason=reason, detail=detail, component="processor-faust")
        await app.topic(msg.topic + ".dlq", value_serializer="raw").send(
            key=msg.key, value=serde.encode("DeadLetter", dl, msg.topic + ".dlq"))

    @app.agent(inputs)
    async def process(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            logical = logical_by_name[msg.topic]
            try:
                record = serde.decode(msg.value, VALUE_SCHEMA[logical], msg.topic).record
            except serde.SerdeError as exc:
                await dead_letter(event, exc.reason, exc.detail)
                continue
            engine = engine_for(msg.partition)
            result = engine.process(logical, record)
            for rej in result.rejections:
                await dead_letter(event, rej.reason, rej.detail)
            for cmd in result.commands:
                await commands.send(key=cmd["customer_id"].encode(), value=serde.encode("EmailCommand", cmd, t.name("commands")),
                                    partition=msg.partition)
            for m in engine.drain_memberships():
                await audiences.send(key=membership_key(m["audience"], m["customer_id"]).encode(),
                                     value=serde.encode("AudienceMembership", m, t.name("audiences")))
            for key, value in engine.drain_changes().items():
                full = f"{msg.partition}|{key}".encode()
                if value is None:
                    table.pop(full, None)
                else:
                    table[full] = value

    if settings.worker.tick_interval_s > 0:
        @app.timer(settings.worker.tick_interval_s)
        async def tick() -> None:
            now = int(time.time() * 1000)
            for tp in app.assignment.assigned_active():
                if tp.topic == t.name("clock"):
                    await clock.send(key=f"clock-{tp.partition}".encode(), partition=tp.partition,
                                     value=serde.encode("ClockTick", {"partition": tp.partition, "tick_at": now,
                                                                      "source": "faust"}, tp.topic))

    return app


def run_faust_worker(settings: Settings, bootstrap: str) -> None:
    app = build_app(settings, bootstrap)
    worker = faust.Worker(app, loglevel="WARN", quiet=True)
    worker.execute_from_commandline()
