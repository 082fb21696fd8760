"""The sink's parts, each on its own: intake (decide), preparation (render + MIME), sending (the SES
call and the rate), and the ledger/commit (one transaction, and what a restart finds). Intake and
preparation need nothing running; sending talks to the moto SES server through the fault proxy; the
commit runs against the real broker."""

from __future__ import annotations

import email
import threading
import time
from email import policy

import pytest
from confluent_kafka import Consumer, Producer

from schemas import serde
from sinks.intake import Intake, PartitionOffsets, Route, Work
from sinks.ledger import Commit, SinkTopics, Step, outcomes_since
from sinks.preparation import Preparation
from sinks.rendering import Renderer
from sinks.sending import Sending
from sinks.ses_sender import SesSender
from sinks.stores import Ledger, Parked
from streams.config import load_settings
from streams.kafka.io import consumer_config, producer_config, produce_records, read_topic
from tests.support.procs import wait_for
from tests.support.sink import (command, delivered, proxy, read_to_end, running_sink,  # noqa: F401
                                settled_to_end, sink_settings, topic_ends)


def work(cmd: dict, partition: int = 0, offset: int = 0, topic: str = "email.commands") -> Work:
    return Work(partition, offset, cmd["customer_id"].encode(), serde.encode("EmailCommand", cmd), topic, {})


def decoded(cmd: dict) -> Work:
    w = work(cmd)
    assert Intake(load_settings(env={})).decode(w)
    return w


# ---- intake ---------------------------------------------------------------------------------------
def test_intake_sends_a_due_command_and_parks_one_before_its_send_at():
    intake = Intake(load_settings(env={}))
    assert intake.route(decoded(command(1)), None, under_way=False) is Route.SEND
    assert intake.route(decoded(command(2, send_in_ms=60_000)), None, under_way=False) is Route.PARK


def test_intake_skips_a_command_already_settled_parked_or_under_way():
    intake = Intake(load_settings(env={}))
    for state, under_way in (("sent", False), ("failed", False), ("parked", False), (None, True), ("pending", True)):
        w = decoded(command(3))
        assert intake.route(w, state, under_way) is Route.SETTLED and w.outcome == "skip", (state, under_way)


def test_intake_reports_a_command_found_pending_as_ambiguous_unless_the_policy_resends():
    settings = load_settings(env={})
    w = decoded(command(4))
    assert Intake(settings).route(w, "pending", under_way=False) is Route.SETTLED
    assert (w.outcome, w.reason, w.dead_letter) == ("failed", "ambiguous_after_crash", False)
    settings.sink.ambiguous_policy = "resend"
    assert Intake(settings).route(decoded(command(4)), "pending", under_way=False) is Route.SEND


def test_intake_suppresses_an_expired_command_and_fails_one_too_far_ahead():
    settings = load_settings(env={})
    intake = Intake(settings)
    stale = decoded(command(5, expires_in_ms=-1000))
    assert intake.route(stale, None, False) is Route.SETTLED and (stale.outcome, stale.reason) == ("suppressed", "expired")
    ahead = settings.sink.max_send_ahead_ms + 60_000
    far = decoded(command(6, send_in_ms=ahead, expires_in_ms=ahead + 60_000))
    assert intake.route(far, None, False) is Route.SETTLED
    assert far.outcome == "failed" and far.error_code == "far_future" and far.dead_letter


def test_intake_fails_an_oversized_an_undecodable_and_an_anonymous_command_with_their_reasons():
    settings = load_settings(env={})
    settings.sink.max_command_bytes = 100_000
    intake = Intake(settings)
    big = work(command(7, context={"items": [], "pad": "x" * 200_000}))
    garbage = Work(0, 1, None, b"\x00not a command", "email.commands", {})
    anonymous = work(command(8, customer_id=""))
    assert not intake.decode(big) and big.error_code == "command_too_large"
    assert not intake.decode(garbage) and garbage.outcome == "failed" and garbage.dead_letter
    assert not intake.decode(anonymous) and anonymous.reason == "invalid_command: empty customer_id"


def test_intake_holds_a_parked_command_and_calls_one_found_sending_ambiguous():
    intake = Intake(load_settings(env={}))
    cmd = command(9, send_in_ms=60_000)
    value = serde.encode("EmailCommand", cmd)
    w, route = intake.from_parked(Parked(cmd["command_id"], "parked", value, 1, 42, cmd["send_at"]), "email.commands")
    assert route is Route.HOLD and w.parked and (w.partition, w.offset, w.command_id) == (1, 42, cmd["command_id"])
    w, route = intake.from_parked(Parked(cmd["command_id"], "sending", value, 1, 42, cmd["send_at"]), "email.commands")
    assert route is Route.SETTLED and w.reason == "ambiguous_after_crash"


def test_offsets_commit_up_to_the_oldest_command_still_open():
    po = PartitionOffsets()
    for offset in (5, 6, 7):
        po.read(offset)
    po.open.discard(6)
    assert po.committable() == 5
    po.open -= {5, 7}
    assert po.committable() == 8


# ---- preparation ----------------------------------------------------------------------------------
class Audience:
    """What the audience store answers for a customer (the store itself is tested against the broker)."""

    def __init__(self, blocked: dict[str, str] | None = None) -> None:
        self._blocked = blocked or {}

    def blocked(self, customer_id: str, category: str) -> str | None:
        return self._blocked.get(customer_id)


def preparation(settings=None) -> Preparation:  # type: ignore[no-untyped-def]
    s = settings or load_settings(env={})
    return Preparation(s, Renderer(shop_url=s.flows.shop_url, brand=s.brand, markets=s.markets, links=s.links),
                       Intake(s))


def test_preparation_builds_the_mime_message_of_an_allowed_command():
    w = decoded(command(10, "prep"))
    preparation().prepare(w, Audience())
    assert w.prepared and w.outcome == ""
    msg = email.message_from_bytes(w.raw, policy=policy.default)
    assert msg["To"] == "prep@example.com" and msg["X-Shopmail-Command-Id"] == "cmd-10-prep"
    assert w.identity is not None and w.identity.address


def test_preparation_suppresses_a_blocked_customer_and_a_holdout_before_rendering():
    blocked = decoded(command(11, "gone"))
    preparation().prepare(blocked, Audience({"gone": "hard_bounced"}))
    holdout = decoded(command(12, "held", variant="holdout"))
    preparation().prepare(holdout, Audience())
    assert (blocked.outcome, blocked.reason, blocked.raw) == ("suppressed", "hard_bounced", b"")
    assert (holdout.outcome, holdout.reason, holdout.raw) == ("suppressed", "holdout", b"")


def test_preparation_retries_a_transient_error_then_fails_the_command_with_a_dead_letter():
    settings = load_settings(env={})
    settings.sink.record_max_attempts = 3
    prep = preparation(settings)
    calls = []

    def unreadable_template(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        raise OSError("template file unreadable")

    prep.renderer.render = unreadable_template  # type: ignore[method-assign]
    w = decoded(command(13))
    prep.prepare(w, Audience())
    assert len(calls) == 3 and w.outcome == "failed" and w.dead_letter
    assert w.error_code == "prepare_io_error" and "gave up after 3 attempts" in (w.reason or "")


def test_preparation_names_a_missing_template_variable():
    w = decoded(command(14, context={"items": [], "currency": "EUR"}))
    preparation().prepare(w, Audience())
    assert w.outcome == "failed" and "template_variable_missing" in (w.reason or "") and "order_id" in (w.reason or "")


# ---- sending --------------------------------------------------------------------------------------
@pytest.mark.integration
def test_sending_reports_sent_paused_and_rejected_from_the_ses_answer(moto_ses, proxy, sink_settings):
    sending = Sending(sink_settings, SesSender(sink_settings.ses))
    prep = preparation(sink_settings)
    stop = threading.Event()

    def ready(n: int) -> Work:
        w = decoded(command(n, "snd"))
        prep.prepare(w, Audience())
        return w

    sent = sending.send(ready(20), stop)
    proxy.inject(400, "SendingPausedException", message="Sending is paused for this account.")
    paused = sending.send(ready(21), stop)
    proxy.inject(400, "MessageRejected", message="Email address is not verified.")
    rejected = sending.send(ready(22), stop)
    assert sent.outcome == "sent" and sent.message_id and sent.attempts == 1
    assert (paused.outcome, paused.reason, paused.dead_letter) == ("unpend", "SendingPausedException", False)
    assert rejected.outcome == "failed" and rejected.dead_letter and rejected.error_code == "MessageRejected"
    assert delivered(moto_ses)["cmd-20-snd"] == 1 and delivered(moto_ses)["cmd-21-snd"] == 0


@pytest.mark.integration
def test_sending_takes_its_share_of_the_rate_by_partitions(moto_ses, proxy, sink_settings):
    sink_settings.ses.max_send_rate = 90
    sink_settings.ses.rate_burst = 9
    sending = Sending(sink_settings, SesSender(sink_settings.ses))
    sending.share(1, 3)
    assert sending.replica_rate == pytest.approx(30) and sending.bucket.capacity == pytest.approx(3)
    sending.share(3, 3)
    assert sending.replica_rate == pytest.approx(90)
    sink_settings.ses.share_rate_by_partitions = False
    alone = Sending(sink_settings, SesSender(sink_settings.ses))
    alone.share(1, 3)
    assert alone.replica_rate == pytest.approx(90)


# ---- the ledger and the commit --------------------------------------------------------------------
def topics_of(settings) -> SinkTopics:  # type: ignore[no-untyped-def]
    t = settings.topics
    return SinkTopics(commands=t.name("commands"), outcomes=t.name("outcomes"), coupons=t.name("coupons"),
                      ledger=t.name("sink_ledger"), dlq=t.dlq("commands"))


@pytest.mark.integration
def test_a_step_commits_outcomes_ledger_entries_and_offsets_in_one_transaction(kafka, sink_settings):
    s = sink_settings
    topics = topics_of(s)
    producer = Producer(producer_config(s, kafka, **{"transactional.id": f"{s.sink.group_id}-parts"}))
    producer.init_transactions(30)
    ledger = Ledger(kafka, topics.ledger, f"{s.sink.group_id}-ledger", s.sink.ledger_retention_ms, s.kafka)
    ledger.own(set(range(ledger.partitions)))
    consumer = Consumer(consumer_config(s, kafka, s.sink.group_id))
    try:
        done = decoded(command(30, "c"))
        done.outcome, done.message_id, done.attempts = "sent", "m-30", 1
        bad = Work(0, 1, None, b"\x00", topics.commands, {})
        Intake(s).decode(bad)
        later = decoded(command(31, "c", send_in_ms=60_000))
        later.offset = 2
        going = decoded(command(32, "c"))
        going.offset = 3
        offsets = {0: PartitionOffsets()}
        for offset in range(4):
            offsets[0].read(offset)
        committed = Commit(s, topics, producer, ledger).run(
            Step(done=[done, bad], parks=[later], to_send=[going]), offsets, consumer.consumer_group_metadata())
    finally:
        consumer.close()
        ledger.close()
    assert committed.settled == ["cmd-30-c"] and committed.waiting == []
    assert (ledger.state(0, "cmd-30-c"), ledger.state(0, "cmd-31-c"), ledger.state(0, "cmd-32-c")) == (
        "sent", "parked", "pending")
    (out,) = [r.decoded().record for r in read_topic(kafka, topics.outcomes, expect=1, timeout_s=15)]
    assert (out["command_id"], out["outcome"], out["message_id"]) == ("cmd-30-c", "sent", "m-30")
    assert len(read_topic(kafka, topics.dlq, expect=1, timeout_s=15)) == 1
    entries = {r.key.decode(): r.decoded() for r in read_topic(kafka, topics.ledger, expect=3, timeout_s=15)}
    assert entries["cmd-30-c"].record["state"] == "sent" and entries["cmd-32-c"].record["state"] == "pending"
    assert entries["cmd-31-c"].name == "SinkParkedCommand"
    assert offsets[0].committable() == 3  # the command handed to SES stays open until it settles


@pytest.mark.integration
def test_outcomes_since_finds_only_the_asked_commands_written_after_the_time(kafka, sink_settings):
    s = sink_settings
    before = int(time.time() * 1000)
    cmds = [command(40 + i, "o") for i in range(3)]
    outs = [{"command_id": c["command_id"], "customer_id": "o", "outcome": "sent", "message_id": "m", "reason": None,
             "flow": c["flow"], "step": 1, "variant": "control", "category": c["category"], "occurred_at": before,
             "attempts": 1} for c in cmds]
    produce_records(s, kafka, s.topics.name("outcomes"), "EmailOutcome", outs)
    found = outcomes_since(kafka, s.kafka, f"{s.sink.group_id}-recovery", s.topics.name("outcomes"), before - 1000,
                           ["cmd-40-o", "cmd-42-o", "cmd-99-o"])
    assert found == {"cmd-40-o": "sent", "cmd-42-o": "sent"}
    later = outcomes_since(kafka, s.kafka, f"{s.sink.group_id}-recovery", s.topics.name("outcomes"),
                           int(time.time() * 1000) + 60_000, ["cmd-40-o"])
    assert later == {}


@pytest.mark.integration
def test_a_command_whose_outcome_got_through_without_its_final_ledger_entry_gets_no_second_outcome(
        kafka, moto_ses, proxy, sink_settings):
    """What a killed sink's transaction leaves when the broker commits it half-written (Tansu commits a
    dead producer's open transaction): the outcome is in email.outcomes, the ledger still says pending."""
    s = sink_settings
    topics = topics_of(s)
    cmd = command(50, "half")
    produce_records(s, kafka, topics.outcomes, "EmailOutcome", [{
        "command_id": cmd["command_id"], "customer_id": "half", "outcome": "sent", "message_id": "m-50",
        "reason": None, "flow": cmd["flow"], "step": 1, "variant": "control", "category": cmd["category"],
        "occurred_at": int(time.time() * 1000), "attempts": 1}])
    pending = {"command_id": cmd["command_id"], "state": "pending", "message_id": None, "reason": None,
               "at": int(time.time() * 1000) - 1000}
    p = Producer(producer_config(s, kafka))
    for part in range(s.topics.partitions):  # whichever ledger partition the command's partition maps to
        p.produce(topics.ledger, key=cmd["command_id"].encode(), value=serde.encode("SinkLedgerEntry", pending),
                  partition=part)
    assert p.flush(30) == 0
    produce_records(s, kafka, topics.commands, "EmailCommand", [cmd, command(51, "half")])
    with running_sink(s, kafka):
        ends = topic_ends(kafka, topics.commands)
        wait_for(lambda: settled_to_end(kafka, s.sink.group_id, topics.commands, ends), 120, interval_s=0.3,
                 what="both commands settled")
    outs = read_to_end(kafka, topics.outcomes)
    assert sorted((o["command_id"], o["outcome"], o["reason"]) for o in outs) == [
        ("cmd-50-half", "sent", None), ("cmd-51-half", "sent", None)]
    assert delivered(moto_ses)["cmd-50-half"] == 0  # not sent again either
    entries = [r.decoded().record for r in read_topic(kafka, topics.ledger, idle_s=1.0) if r.key == b"cmd-50-half"]
    assert ("sent", "found_in_outcomes") in {(e["state"], e["reason"]) for e in entries}


@pytest.mark.parametrize("interval_ms", [-1, 1001])
def test_the_sink_refuses_a_min_commit_interval_outside_0_to_1000_ms(interval_ms):
    from sinks.service import SinkService

    s = load_settings(env={})
    s.ses.use_account_rate = False
    s.sink.min_commit_interval_ms = interval_ms
    with pytest.raises(ValueError, match=f"sink.min_commit_interval_ms is {interval_ms}: give 0 to 1000"):
        SinkService(s, "127.0.0.1:1", instance_id="x")


def test_the_sink_refuses_a_burst_smaller_than_what_the_rate_earns_in_one_commit_interval():
    from sinks.service import SinkService

    s = load_settings(env={})
    s.ses.use_account_rate = False
    s.ses.max_send_rate, s.ses.rate_burst, s.sink.min_commit_interval_ms = 100, 1, 25  # 2.5 tokens per interval
    with pytest.raises(ValueError, match=r"ses.rate_burst \(1\) is below the 2.5 tokens"):
        SinkService(s, "127.0.0.1:1", instance_id="x")
    s.ses.rate_burst = 3
    SinkService(s, "127.0.0.1:1", instance_id="x")  # holds an interval's tokens: accepted
    s.ses.rate_burst = 0  # the default burst, a tenth of a second's sends, always holds an interval's
    SinkService(s, "127.0.0.1:1", instance_id="x")
