"""The compiled batch engine on the live path: a confluent-kafka consumer → the compiled engine → a
transactional producer, exactly-once, one transaction per batch of up to 500 records (like the worker).

Reads the four input topics of ``--prefix`` (carts, orders, shipments, customers) from the start with its
own consumer group; writes EmailCommand Avro bytes to ``<prefix>proto.commands``, each changed customer's
state to ``<prefix>proto.changelog`` (compacted) and unreadable records to ``<prefix>proto.dead``
(``proto-timers.*`` with ``--timers``), with the
input offsets, in one transaction per batch. Stops once ``--expect`` records are processed and committed,
and prints one JSON line: events, commands (per step), changelog records, dead letters, transactions, the
wall seconds from the first record fetched to the last commit, and the CPU seconds of this process
(/proc/self/stat: every thread, librdkafka's included) from before the clients are made to the last commit.

    python -m prototypes.compiled_engine.live --bootstrap HOST:PORT --prefix PREFIX --group GROUP --expect N

It does not restore state from its changelog, handle a rebalance or a fenced producer, or retry a failed
commit: a prototype measuring the cost of the work, not a worker (README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from prototypes.compiled_engine.layout import KINDS, build_engine
from streams.config import load_settings
from streams.kafka.io import client_config, consumer_config, producer_config


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def output_topics(prefix: str, timers: bool) -> tuple[str, str, str]:
    """The commands, changelog and dead-letter topics of the prototype (one set per rule)."""
    base = f"{prefix}proto{'-timers' if timers else ''}"
    return f"{base}.commands", f"{base}.changelog", f"{base}.dead"


def ensure_outputs(conf: dict[str, object], names: tuple[str, str, str], partitions: int) -> tuple[str, str, str]:
    admin = AdminClient(conf)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(n, partitions, 1, config={"cleanup.policy": "compact"} if n.endswith("changelog") else {})
              for n in names if n not in existing]
    for topic, future in admin.create_topics(wanted).items() if wanted else ():
        try:
            future.result(30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return names


def fetching(consumer: Consumer, cached: bool) -> dict[tuple[str, int], bool]:
    """(topic, partition) → whether records remain to be fetched there (unknown: yes). ``cached``: the
    high watermarks the last fetches brought, else asked of the broker."""
    tps = consumer.assignment()
    positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(tps)}
    out = {}
    for tp in tps:
        _, high = consumer.get_watermark_offsets(tp, cached=cached)
        pos = positions[(tp.topic, tp.partition)]
        out[(tp.topic, tp.partition)] = high < 0 or (high > 0 and pos < high)
    return out


def run(bootstrap: str, prefix: str, group: str, expect: int, batch: int, partitions: int,
        timers: bool = False) -> dict[str, object]:
    cpu0 = cpu_s()
    settings = load_settings(env={})
    settings.topics.prefix = prefix
    engine = build_engine(settings, timers)
    commands_topic, changelog_topic, dead_topic = ensure_outputs(client_config(settings.kafka, bootstrap),
                                                                 output_topics(prefix, timers), partitions)
    consumer = Consumer(consumer_config(settings, bootstrap, group))
    producer = Producer(producer_config(settings, bootstrap, **{"transactional.id": f"{group}-proto",
                                                                "linger.ms": 2}))
    producer.init_transactions(30)
    consumer.subscribe([settings.topics.name(k) for k in KINDS])
    metadata = None
    first = 0.0
    transactions = 0
    deadline = time.monotonic() + 600
    produce = producer.produce
    while engine.events < expect and time.monotonic() < deadline:
        msgs = consumer.consume(batch, 0.05)
        if not msgs and not engine.held_records:
            continue
        if not first:
            first = time.perf_counter()
            metadata = consumer.consumer_group_metadata()
        producer.begin_transaction()
        # the records of each partition's topics merged by event time, as the worker does (and Quix's
        # concatenated streams, aligned by timestamp)
        commands, changelog, dead, held = engine.process_merged(msgs, fetching(consumer, cached=bool(msgs)))
        for key, value in commands:
            produce(commands_topic, value, key)
        for key, value in changelog:
            produce(changelog_topic, value, key)
        for value, reason in dead:
            produce(dead_topic, value, headers={"reason": reason})
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        for tp in positions:  # a held record's offset is not committed: it is processed later
            tp.offset = held.get((tp.topic, tp.partition), tp.offset)
        producer.send_offsets_to_transaction(positions, metadata, 30)
        producer.commit_transaction(60)
        transactions += 1
    end = time.perf_counter()
    cpu = cpu_s() - cpu0
    consumer.close()
    return {"timers": engine.timers, "events": engine.events, "commands": sum(engine.commands_by_step),
            "commands_by_step": list(engine.commands_by_step), "changelog_records": engine.changelog_records,
            "dead_letters": engine.dead_letters, "transactions": transactions,
            "seconds": round(end - first, 3) if first else None, "cpu_s": round(cpu, 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", required=True, help="the topic prefix of the input topics (shopmail's topics.prefix)")
    ap.add_argument("--group", required=True, help="consumer group (a new one reads from the start)")
    ap.add_argument("--expect", type=int, required=True, help="stop after this many input records")
    ap.add_argument("--batch", type=int, default=500, help="records per transaction (the worker's batch_size)")
    ap.add_argument("--partitions", type=int, default=2, help="partitions of the output topics it creates")
    ap.add_argument("--timers", action="store_true",
                    help="steps fire on the partition's clock (the worker's rule), not at the customer's next event")
    args = ap.parse_args(argv)
    out = run(args.bootstrap, args.prefix, args.group, args.expect, args.batch, args.partitions, args.timers)
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
