"""faust-streaming adapter for the same domain core (``shopmail worker --runtime faust``).

The partition tasks are the ones the transactional runtime drives, in a ``TaskManager``
(streams/runtime/tasks.py): a faust agent subscribed to every input topic and to the global inventory
topic hands each record to it — admission, the size rule, engine errors as dead letters, the global
fan-out — and writes what comes out: commands to the commands partition of their task, dead letters
to ``<topic>.dlq``, memberships to the audiences topic, state to a faust Table (changelog topic
``<app_id>-faust-engine-changelog``; ``rocksdb://`` store — backed by rocksdict — or ``memory://``).
Table keys are ``"<partition>|<engine key>"`` so the engine of partition *p* can be rebuilt from the
table after a rebalance. Records are applied in arrival order (faust has no event-time merge across
topics).

Global topic: faust reads the inventory topic in the consumer group, so a restock reaches the
partitions of the worker that owns its inventory partition. With one faust worker (all partitions)
that is every partition; with several, run the default ``--runtime txn``, whose global reader gives
every worker all of it.

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
from dataclasses import dataclass
from typing import Any

import faust

from schemas import serde
from streams.config import ConfigError, Settings
from streams.core.audiences import membership_key
from streams.core.engine import PartitionEngine
from streams.kafka.topics import GLOBAL_INPUT_TOPICS, INPUT_TOPICS
from streams.runtime.dead_letters import dead_letter as build_dead_letter
from streams.runtime.intake import Decoder
from streams.runtime.task import TaskOutput
from streams.runtime.tasks import TaskManager

log = logging.getLogger("shopmail.faust")


@dataclass(frozen=True)
class FaustRecord:
    """A faust message as applied to one partition task (a global record: to each of them)."""

    message: Any  # faust.types.Message: topic, partition, offset, key, value
    partition: int


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
    global_by_name = {t.name(lt): lt for lt in GLOBAL_INPUT_TOPICS}
    inputs = app.topic(*logical_by_name, *global_by_name, key_type=bytes, value_type=bytes, value_serializer="raw")
    commands = app.topic(t.name("commands"), key_type=bytes, value_type=bytes, value_serializer="raw")
    audiences = app.topic(t.name("audiences"), key_type=bytes, value_type=bytes, value_serializer="raw")
    clock = app.topic(t.name("clock"), key_type=bytes, value_type=bytes, value_serializer="raw")
    table = app.Table("faust-engine", default=None, partitions=n, key_type=bytes, value_type=bytes)
    manager: TaskManager[FaustRecord] = TaskManager(settings, INPUT_TOPICS)
    decode = Decoder(settings, 0)

    def assign(p: int) -> None:
        """Partition p's task, its engine rebuilt from the table, unless it runs here already."""
        if p in manager:
            return
        engine = PartitionEngine(settings, p)
        prefix = f"{p}|"
        for key, value in table.items():
            k = key.decode() if isinstance(key, bytes) else key
            if k.startswith(prefix) and value is not None:
                engine.restore(k[len(prefix):], value)
        engine.restored()
        manager.assign(p, engine)

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: Any, **_: Any) -> None:  # noqa: ARG001
        for p in list(manager):
            manager.revoke(p)  # rebuilt from the (recovered) table on the next event

    async def write(out: TaskOutput[FaustRecord]) -> None:
        for ref, cmd in out.commands:
            assert ref is not None
            await commands.send(key=cmd["customer_id"].encode(), partition=ref.partition,
                                value=serde.encode("EmailCommand", cmd, t.name("commands")))
        for d in out.dead_letters:
            msg = d.ref.message
            dl = build_dead_letter(settings.limits, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                   key=msg.key, value=msg.value, reason=d.reason, detail=d.detail,
                                   component="processor-faust")
            await app.topic(msg.topic + ".dlq", value_serializer="raw").send(
                key=dl["original_key"], value=serde.encode("DeadLetter", dl, msg.topic + ".dlq"))
        for m in out.memberships:
            await audiences.send(key=membership_key(m["audience"], m["customer_id"]).encode(),
                                 value=serde.encode("AudienceMembership", m, t.name("audiences")))
        for p, changed in manager.changes(out.touched).items():
            for key, value in changed.items():
                full = f"{p}|{key}".encode()
                if value is None:
                    table.pop(full, None)
                else:
                    table[full] = value

    @app.agent(inputs)
    async def process(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            value = msg.value
            size = len(value) if value else 0
            out: TaskOutput[FaustRecord] = TaskOutput()
            if msg.topic in global_by_name:
                logical = global_by_name[msg.topic]
                for tp in app.assignor.assigned_actives():
                    if tp.topic in logical_by_name:
                        assign(tp.partition)
                record, refusal = decode.value(value, logical, msg.topic, size)
                manager.apply_global(logical, lambda p, msg=msg: FaustRecord(msg, p), record, out,
                                     size=size, refusal=refusal)
            else:
                logical = logical_by_name[msg.topic]
                assign(msg.partition)
                record, refusal = decode.value(value, logical, msg.topic, size)
                manager.apply(msg.partition, logical, FaustRecord(msg, msg.partition), record, out,
                              key=msg.key, size=size, refusal=refusal)
            await write(out)

    if settings.worker.tick_interval_s > 0:
        @app.timer(settings.worker.tick_interval_s)
        async def tick() -> None:
            now = int(time.time() * 1000)
            for tp in app.assignor.assigned_actives():
                if tp.topic == t.name("clock"):
                    await clock.send(key=f"clock-{tp.partition}".encode(), partition=tp.partition,
                                     value=serde.encode("ClockTick", {"partition": tp.partition, "tick_at": now,
                                                                      "source": "faust"}, tp.topic))

    return app


def run_faust_worker(settings: Settings, bootstrap: str) -> None:
    app = build_app(settings, bootstrap)
    worker = faust.Worker(app, loglevel="WARN", quiet=True)
    worker.execute_from_commandline()
