"""Retargeting audiences: joins and leaves as the flows see them, consent first, hashed customer lists."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time

import pytest

from schemas import serde
from streams.config import DAY_MS, HOUR_MS, load_settings
from streams.core.audiences import email_sha256
from streams.core.engine import PartitionEngine
from streams.core.state import decode_customer
from streams.kafka.io import produce_records, read_topic
from streams.runtime.task import PartitionTask, TaskOutput
from streams.tools.audiences import AudienceState, write_csv
from tests.core_events import T0, cart, customer, feedback, order, tick
from tests.support.procs import settings_env
from tests.support.runtime import running_processor


def memberships(events, until=None, settings=None):
    eng = PartitionEngine(settings or load_settings(env={}), 0)
    out = []
    for topic, rec in events:
        eng.process(topic, rec)
        out += eng.drain_memberships()
    if until is not None:
        eng.advance(until)
        out += eng.drain_memberships()
    return [(m["audience"], m["customer_id"], m["member"], m["reason"]) for m in out], eng


def test_an_open_cart_joins_abandoned_cart_open_once_it_settles_and_an_order_takes_the_customer_out():
    changes, eng = memberships([customer("ann"), cart("ann", T0), order("ann", T0 + 2 * HOUR_MS)],
                               until=T0 + 3 * HOUR_MS)
    assert changes == [("abandoned_cart_open", "ann", True, "joined"), ("abandoned_cart_open", "ann", False, "left")]
    assert eng.customers["ann"].aud == []


def test_a_join_carries_the_hash_of_the_trimmed_lower_cased_email_and_never_the_address():
    eng = PartitionEngine(load_settings(env={}), 0)
    eng.process(*customer("ann", email="  Ann.Smith@Example.COM "))
    eng.process(*cart("ann", T0))
    eng.advance(T0 + HOUR_MS)
    (join,) = eng.drain_memberships()
    assert join["email_sha256"] == hashlib.sha256(b"ann.smith@example.com").hexdigest() == email_sha256("ANN.smith@example.com")
    assert "@" not in json.dumps(join)


def test_no_marketing_consent_means_no_audience_at_all():
    changes, _ = memberships([customer("bob", opt_in=False), cart("bob", T0)], until=T0 + 80 * HOUR_MS)
    assert changes == []


def test_a_consent_withdrawal_removes_the_customer_from_every_audience_on_arrival_before_it_settles():
    eng = PartitionEngine(load_settings(env={}), 0)
    for ev in (customer("ann"), cart("ann", T0), tick(T0 + HOUR_MS)):
        eng.process(*ev)
    assert [m["member"] for m in eng.drain_memberships()] == [True]
    eng.process(*customer("ann", at=T0 + 2 * HOUR_MS, opt_in=False))  # the grace period has not passed
    (leave,) = eng.drain_memberships()
    assert (leave["member"], leave["reason"], leave["email_sha256"], leave["changed_at"]) == \
        (False, "consent_withdrawn", None, T0 + 2 * HOUR_MS)
    eng.advance(T0 + 10 * DAY_MS)
    assert eng.drain_memberships() == []  # settled: still out, nothing repeated


def test_an_unsubscribe_or_hard_bounce_removes_the_customer_and_a_soft_bounce_does_not():
    unsub, _ = memberships([customer("a"), cart("a", T0), tick(T0 + HOUR_MS), feedback("a", T0 + 2 * HOUR_MS, "unsubscribed")])
    assert unsub[-1] == ("abandoned_cart_open", "a", False, "suppressed")
    soft, _ = memberships([customer("b"), cart("b", T0), tick(T0 + HOUR_MS),
                           feedback("b", T0 + 2 * HOUR_MS, "bounced", bounce_type="transient")], until=T0 + 3 * HOUR_MS)
    assert soft == [("abandoned_cart_open", "b", True, "joined")]


def test_a_late_opt_in_after_a_withdrawal_that_was_older_puts_the_customer_back():
    # the withdrawal arrives after a newer opt-in: removed on arrival, back in when it settles as stale
    changes, eng = memberships([customer("c", at=T0 - DAY_MS), cart("c", T0), tick(T0 + HOUR_MS),
                                customer("c", at=T0 + 2 * HOUR_MS, opt_in=True, event_id="newer"),
                                tick(T0 + 3 * HOUR_MS),
                                customer("c", at=T0 + 2 * HOUR_MS - 1, opt_in=False, event_id="older")],
                               until=T0 + 4 * HOUR_MS)
    assert [c[2:] for c in changes] == [(True, "joined"), (False, "consent_withdrawn"), (True, "joined")]
    assert eng.customers["c"].aud == ["abandoned_cart_open"]


def test_a_new_address_republishes_the_membership_with_the_new_hash():
    changes, eng = memberships([customer("d"), cart("d", T0), tick(T0 + HOUR_MS),
                                customer("d", at=T0 + 2 * HOUR_MS, email="new@example.com", event_id="moved"),
                                cart("d", T0 + 2 * HOUR_MS, event_id="more")], until=T0 + 3 * HOUR_MS)
    assert [c[3] for c in changes] == ["joined", "email_changed"]
    assert eng.customers["d"].ah == email_sha256("new@example.com")[:16]


def test_a_lapsed_vip_is_in_lapsed_and_lapsed_vip_until_the_next_order():
    settings = load_settings(env={})
    settings.flows.win_back.lapse_days = {"vip": 30, "repeat": 30, "one_time": 30, "new": 30}
    settings.flows.win_back.median_gap_multiple = 0
    big = [{"sku": "TV", "name": "TV", "price": "2000.00", "quantity": 1}]
    events = [customer("v")] + [order("v", T0 + i * DAY_MS, order_id=f"v{i}", items=big, total="2000.00") for i in range(3)]
    events += [customer("s", opt_in=True), order("s", T0, order_id="s0", total="5.00")]
    changes, eng = memberships(events + [order("v", T0 + 50 * DAY_MS, order_id="v9", total="10.00")],
                               until=T0 + 60 * DAY_MS, settings=settings)
    vip = [c for c in changes if c[1] == "v"]
    assert vip[:2] == [("lapsed", "v", True, "joined"), ("lapsed_vip", "v", True, "joined")]
    assert sorted(vip[2:]) == [("lapsed", "v", False, "left"), ("lapsed_vip", "v", False, "left")]
    assert [c for c in changes if c[1] == "s"] == [("lapsed", "s", True, "joined")]


def test_audiences_can_be_limited_or_switched_off_and_a_misspelt_name_is_a_config_error():
    settings = load_settings(env={})
    settings.audiences.enabled = False
    assert memberships([customer("a"), cart("a", T0)], until=T0 + 2 * HOUR_MS, settings=settings)[0] == []
    settings = load_settings(env={"SHOPMAIL_AUDIENCES__ONLY": "lapsed_vip"})
    assert memberships([customer("a"), cart("a", T0)], until=T0 + 2 * HOUR_MS, settings=settings)[0] == []
    settings = load_settings(env={"SHOPMAIL_AUDIENCES__ONLY": "abandoned_carts"})
    with pytest.raises(ValueError, match="abandoned_carts"):
        PartitionEngine(settings, 0)


def test_memberships_survive_a_restore_so_nothing_is_joined_twice():
    eng = PartitionEngine(load_settings(env={}), 0)
    for ev in (customer("ann"), cart("ann", T0), tick(T0 + HOUR_MS)):
        eng.process(*ev)
    assert len(eng.drain_memberships()) == 1
    restored = PartitionEngine(load_settings(env={}), 0)
    changes = eng.drain_changes()
    assert decode_customer(changes["ann"]).aud == ["abandoned_cart_open"]
    for key, value in changes.items():
        restored.restore(key, value)
    restored.restored()
    assert restored.drain_memberships() == []
    restored.process(*cart("ann", T0 + 2 * HOUR_MS, event_id="again"))
    restored.advance(T0 + 3 * HOUR_MS)
    assert restored.drain_memberships() == []


def test_a_state_written_without_audiences_is_checked_once_on_restore_so_dormant_members_join():
    off = load_settings(env={"SHOPMAIL_AUDIENCES__ENABLED": "false"})
    old = PartitionEngine(off, 0)
    for ev in (customer("ann"), cart("ann", T0), customer("bob", opt_in=False), cart("bob", T0), tick(T0 + HOUR_MS)):
        old.process(*ev)
    assert old.drain_memberships() == []
    restored = PartitionEngine(load_settings(env={}), 0)
    for key, value in old.drain_changes().items():
        restored.restore(key, value)
    restored.restored()
    joins = restored.drain_memberships()
    assert [(m["customer_id"], m["reason"]) for m in joins] == [("ann", "joined")]
    again = PartitionEngine(load_settings(env={}), 0)  # the check is recorded: never twice
    for key, value in restored.drain_changes().items():
        again.restore(key, value)
    again.restored()
    assert again.drain_memberships() == []


def test_with_audiences_switched_off_a_withdrawal_still_removes_an_earlier_member():
    eng = PartitionEngine(load_settings(env={}), 0)
    for ev in (customer("ann"), cart("ann", T0), tick(T0 + HOUR_MS)):
        eng.process(*ev)
    assert len(eng.drain_memberships()) == 1
    off = PartitionEngine(load_settings(env={"SHOPMAIL_AUDIENCES__ENABLED": "false"}), 0)
    for key, value in eng.drain_changes().items():
        off.restore(key, value)
    off.restored()
    off.process(*customer("ann", at=T0 + 2 * HOUR_MS, opt_in=False))
    assert [(m["member"], m["reason"]) for m in off.drain_memberships()] == [(False, "consent_withdrawn")]


def test_the_partition_task_hands_memberships_to_its_driver():
    task: PartitionTask[int] = PartitionTask(load_settings(env={}), 0)
    out: TaskOutput[int] = TaskOutput()
    for n, (topic, rec) in enumerate([customer("ann"), cart("ann", T0), tick(T0 + HOUR_MS)]):
        task.apply(topic, n, rec, out)
    assert [(m["audience"], m["member"]) for m in out.memberships] == [("abandoned_cart_open", True)]


def test_the_export_keeps_the_latest_record_per_member_and_each_hash_once_under_the_platforms_header():
    state = AudienceState()
    h1, h2 = email_sha256("a@example.com"), email_sha256("b@example.com")
    for rec in ({"audience": "x", "customer_id": "a", "member": True, "email_sha256": h1},
                {"audience": "x", "customer_id": "b", "member": True, "email_sha256": h2},
                {"audience": "x", "customer_id": "b2", "member": True, "email_sha256": h2},  # shared address
                {"audience": "x", "customer_id": "a", "member": False, "email_sha256": None},
                {"audience": "y", "customer_id": "c", "member": True, "email_sha256": h1}):
        state.apply(rec)
    buf = io.StringIO()
    assert write_csv(state.members("x"), buf, "google") == 1
    assert buf.getvalue() == f"Email\n{h2}\n"
    assert state.counts() == {"x": (2, 1), "y": (1, 0)}




def _profile(cid: str, opt_in: bool) -> dict:
    at = int(time.time() * 1000)
    return serde.from_json("CustomerEvent", {"event_id": f"{cid}-p-{at}-{opt_in}", "customer_id": cid,
                                             "occurred_at": at, "type": "upserted", "email": f"{cid}@example.com",
                                             "first_name": "Ann", "timezone": "UTC", "marketing_opt_in": opt_in})


def _cart(cid: str) -> dict:
    return serde.from_json("CartEvent", {"event_id": f"{cid}-c", "customer_id": cid, "occurred_at": int(time.time() * 1000),
                                         "type": "item_added", "cart_id": f"k-{cid}",
                                         "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": 1}]})


def _export(settings, kafka, fmt: str = "meta") -> str:
    done = subprocess.run([sys.executable, "-m", "streams.cli", "audiences", "export", "abandoned_cart_open",
                           "--format", fmt], env=settings_env(settings, kafka), capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout


@pytest.mark.integration
def test_the_worker_writes_joins_and_leaves_and_the_export_follows_consent_through_the_real_broker(kafka, settings):
    settings.worker.tick_interval_s = 0.3
    settings.worker.late_grace_ms = 300
    t = settings.topics
    with running_processor(settings, kafka):
        produce_records(settings, kafka, t.name("customers"), "CustomerEvent",
                        [_profile("aud-ann", True), _profile("aud-bob", False)])
        produce_records(settings, kafka, t.name("carts"), "CartEvent", [_cart("aud-ann"), _cart("aud-bob")])
        (joined,) = read_topic(kafka, t.name("audiences"), expect=1, timeout_s=20)
        assert joined.key == b"abandoned_cart_open:aud-ann"
        assert _export(settings, kafka) == f"email\n{email_sha256('aud-ann@example.com')}\n"
        produce_records(settings, kafka, t.name("customers"), "CustomerEvent", [_profile("aud-ann", False)])
        records = read_topic(kafka, t.name("audiences"), expect=2, timeout_s=20)
    left = serde.decode(records[-1].value).record
    assert (left["customer_id"], left["member"], left["reason"], left["email_sha256"]) == \
        ("aud-ann", False, "consent_withdrawn", None)
    assert [r.key for r in records] == [b"abandoned_cart_open:aud-ann"] * 2  # bob, no consent, never appears
    assert _export(settings, kafka, "google") == "Email\n"
