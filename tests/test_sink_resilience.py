"""The sink keeps sending whatever one command does to it, parks held commands durably, bounds its
ledger and reports its health honestly — through the real broker and the moto SES server."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas import serde
from sinks.stores import Ledger
from streams.runtime import background
from streams.kafka.io import produce_records, read_topic
from streams.kafka.topics import ensure_topics, topic_specs
from tests.support.procs import wait_for
from tests.support.sink import command, delivered, now, outcomes, proxy, running_sink, sink_settings  # noqa: F401

pytestmark = pytest.mark.integration


def dead_letters(kafka: str, settings, expect: int | None = None) -> list[dict]:  # type: ignore[no-untyped-def]
    return [r.decoded().record for r in read_topic(kafka, settings.topics.dlq("commands"), expect=expect,
                                                    idle_s=0.5, timeout_s=15)]


def test_hostile_commands_fail_with_a_reason_and_the_sink_keeps_sending_across_a_restart(kafka, moto_ses, sink_settings):
    topic = sink_settings.topics.name("commands")
    good = [command(1, "p"), command(2, "p")]
    xx_a, xx_b = command(3, "p", locale="xx"), command(4, "p", locale="xx")  # babel UnknownLocaleError today
    crlf = command(5, "p", to="crlf@example.com\r\nBcc: evil@x.com")  # build_mime ValueError today
    no_customer = command(6, "p", customer_id="")
    hostile = [xx_a, xx_b, xx_b, crlf, no_customer]  # the same bad command twice in a row, among others
    with running_sink(sink_settings, kafka):
        produce_records(sink_settings, kafka, topic, "EmailCommand", [good[0], *hostile, good[1]], key_field="command_id")
        first = outcomes(kafka, sink_settings, 6)
    with running_sink(sink_settings, kafka, instance_id="sink-1"):  # a restart after the bad ones
        produce_records(sink_settings, kafka, topic, "EmailCommand", [command(7, "p")], key_field="command_id")
        outs = outcomes(kafka, sink_settings, 7)
        time.sleep(1.0)
        outs = outcomes(kafka, sink_settings, 7)
    assert Counter(o["command_id"] for o in outs) == Counter(
        c["command_id"] for c in [*good, xx_a, xx_b, crlf, no_customer, command(7, "p")]), "one outcome each, none lost"
    by_id = {o["command_id"]: o for o in outs}
    assert all(by_id[c["command_id"]]["outcome"] == "sent" for c in [*good, command(7, "p")])
    assert by_id[crlf["command_id"]]["outcome"] == "failed" and by_id[crlf["command_id"]]["reason"]
    assert by_id[no_customer["command_id"]]["outcome"] == "failed"
    assert "empty customer_id" in by_id[no_customer["command_id"]]["reason"]
    failed = {cid for cid, o in by_id.items() if o["outcome"] == "failed"}
    for cid in (xx_a["command_id"], xx_b["command_id"]):  # failed today; a locale fallback would send them
        assert by_id[cid]["outcome"] in ("failed", "sent") and (by_id[cid]["outcome"] == "sent" or by_id[cid]["reason"])
    dlq = dead_letters(kafka, sink_settings)
    assert sorted(serde.decode(d["original_value"]).record["command_id"] for d in dlq) == sorted(failed)
    assert all(d["component"] == "sink" and d["error"] and d["detail"] for d in dlq)
    assert len(first) == 6
    assert max(delivered(moto_ses).values()) == 1
    assert "evil@x.com" not in str([m["raw_data"] for m in moto_ses.sent_messages()])


def committed(kafka: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)],
                                                              timeout=10)}
    finally:
        c.close()


def test_a_held_command_does_not_pin_offsets_and_is_still_sent_at_send_at_after_a_restart(kafka, proxy, sink_settings):
    topic = sink_settings.topics.name("commands")
    held = command(10, "h", send_in_ms=15_000)
    after = [command(11, "h"), command(12, "h")]
    with running_sink(sink_settings, kafka):
        produce_records(sink_settings, kafka, topic, "EmailCommand", [held, *after])
        assert {o["command_id"] for o in outcomes(kafka, sink_settings, 2)} == {c["command_id"] for c in after}
        # the held command's offset is committed too: a restart does not read the partition again
        wait_for(lambda: max(committed(kafka, sink_settings.sink.group_id, topic, 2).values()) >= 3, 5,
                 what="offsets committed past the held command")
    assert now() < held["send_at"], "the test is too slow to show the restart before send_at"
    with running_sink(sink_settings, kafka, instance_id="sink-1"):
        outs = outcomes(kafka, sink_settings, 3, timeout_s=30)
    ids = [o["command_id"] for o in outs]  # the two sent at once settle in either order; the held one last
    assert sorted(ids[:2]) == sorted(c["command_id"] for c in after) and ids[2] == held["command_id"]
    assert outs[2]["outcome"] == "sent" and outs[2]["occurred_at"] >= held["send_at"]
    assert len(proxy.sends()) == 3, "nothing was read and sent again"


def test_health_is_not_ready_without_assignment_with_ses_failing_or_a_stalled_loop(kafka, proxy, sink_settings):
    s = sink_settings
    s.ses.max_attempts = 2
    s.sink.health_ses_failure_s = 0.3
    s.sink.health_stall_s = 1.0
    topic = s.topics.name("commands")
    with running_sink(s, kafka) as first:
        assert first.health()[0], first.health()
        # SES fails persistently (5xx until the retries give up) → not ready; a success → ready again
        proxy.inject(500, "InternalFailure", times=2)
        produce_records(s, kafka, topic, "EmailCommand", [command(20, "hs")])
        outcomes(kafka, s, 1)
        wait_for(lambda: any(p.startswith("ses_failing") for p in first.health()[1]["problems"]), 5,
                 what="ses_failing reported")
        assert not first.health()[0]
        produce_records(s, kafka, topic, "EmailCommand", [command(21, "hs")])
        outcomes(kafka, s, 2)
        wait_for(lambda: first.health()[0], 5, what="ready again after a successful send")
        # a second replica on a 2-partition topic… and a third: one of the three has no partition
        others = []
        from sinks.service import SinkService

        for i in (1, 2):
            svc = SinkService(s, kafka, instance_id=f"sink-{i}")
            others.append((svc, background.start(svc.run, f"sink-{i}")))
        try:
            replicas = [first] + [svc for svc, _ in others]
            def settled() -> list:  # type: ignore[type-arg]
                idle = [r for r in replicas if "no_assignment" in r.health()[1]["problems"]]
                return idle if len(idle) == 1 else []

            (idle,) = wait_for(settled, 60, what="the rebalance: two replicas with a partition, one without")
            assert not idle.health()[0]
            assert all(r.health()[0] for r in replicas if r is not idle)
        finally:
            for _, bg in others:
                bg.finish()
    time.sleep(1.2)  # the loop has stopped: it has not advanced for longer than health_stall_s
    ok, detail = first.health()
    assert not ok and any(p.startswith("loop_stalled") for p in detail["problems"])


def ledger_entries(n: int, at: int, prefix: str = "c") -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{i}".encode(), serde.encode("SinkLedgerEntry", {"command_id": f"{prefix}{i}", "state": "sent",
                                                                       "at": at})) for i in range(n)]


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_ledger_catch_up_reads_to_the_fetched_end_when_batches_hold_many_records(kafka, settings):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    topic = settings.topics.name("sink_ledger")
    n = int(os.environ.get("SHOPMAIL_LEDGER_ENTRIES", "20000"))  # the 1M measurement sets it
    p = Producer({"bootstrap.servers": kafka, "linger.ms": 100, "batch.num.messages": 10_000})
    for i, (key, value) in enumerate(ledger_entries(n, now())):
        p.produce(topic, key=key, value=value, partition=0)
        if i % 50_000 == 0:
            p.flush(60)
    p.flush(30)
    probe = Consumer({"bootstrap.servers": kafka, "group.id": "probe"})
    high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    probe.close()
    ledger = Ledger(kafka, topic, "ledger-test", settings.sink.ledger_retention_ms)
    try:
        rss = _rss_kib()
        started = time.monotonic()
        applied = ledger.own({0})
        took = time.monotonic() - started
        print(f"ledger catch-up: {n} entries in {took:.2f} s, RSS +{(_rss_kib() - rss) / 1024:.0f} MiB "
              f"(ListOffsets high watermark said {high})")
        assert applied == n and ledger.size == n and ledger.state(0, f"c{n - 1}") == "sent"
        assert ledger.own({0}) == 0  # nothing new: returns at once, no timeout
    finally:
        ledger.close()


def test_ledger_entries_past_retention_are_dropped_and_listed_for_tombstones(kafka, settings):
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    topic = settings.topics.name("sink_ledger")
    retention = 1500
    p = Producer({"bootstrap.servers": kafka})
    for key, value in ledger_entries(5, now() - 5000, "old") + ledger_entries(5, now(), "new"):
        p.produce(topic, key=key, value=value, partition=1)
    p.flush(30)
    ledger = Ledger(kafka, topic, "ledger-test", retention)
    try:
        ledger.own({1})
        assert ledger.size == 5 and ledger.state(1, "old0") is None and ledger.state(1, "new0") == "sent"
        assert sorted(ledger.expire(now())) == sorted((1, f"old{i}") for i in range(5))
        assert ledger.expire(now()) == []
        time.sleep(1.6)
        assert sorted(ledger.expire(now())) == sorted((1, f"new{i}") for i in range(5)) and ledger.size == 0
        ledger.record(1, "recent", "sent", now())
        ledger.own(set())  # partition revoked: its entries leave memory
        assert ledger.size == 0 and ledger.state(1, "recent") is None
    finally:
        ledger.close()


def test_a_command_older_than_the_ledger_retention_is_never_sent(kafka, proxy, sink_settings):
    retention = sink_settings.sink.ledger_retention_ms
    stale = command(30, "old", send_in_ms=-retention - 1000, expires_in_ms=3_600_000)  # expiry far ahead
    with running_sink(sink_settings, kafka):
        produce_records(sink_settings, kafka, sink_settings.topics.name("commands"), "EmailCommand", [stale])
        (out,) = outcomes(kafka, sink_settings, 1)
    assert (out["outcome"], out["reason"]) == ("suppressed", "expired") and proxy.sends() == []
