"""The flows of DESIGN.md, specified on the pure domain core (no broker, no wall clock)."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings as hsettings, strategies as st

from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, Experiment, load_settings
from streams.core.engine import PartitionEngine
from tests.core_events import T0, cart, customer, feedback, order, shipment, tick

GRACE = 10 * MINUTE_MS


def run(events, until=None, settings=None):
    eng = PartitionEngine(settings or load_settings(env={}), 0)
    out, rejected = [], []
    for topic, rec in events:
        res = eng.process(topic, rec)
        out += res.commands
        rejected += res.rejections
    if until is not None:
        out += eng.advance(until).commands
    return out, rejected, eng


def steps(cmds, flow=None):
    return [(c["flow"], c["step"]) for c in cmds if flow is None or c["flow"] == flow]


def test_abandoned_cart_sends_help_urgency_incentive_at_1h_24h_72h():
    cmds, _, _ = run([customer("ann"), cart("ann", T0)], until=T0 + 80 * HOUR_MS)
    assert steps(cmds) == [("abandoned_cart", 1), ("abandoned_cart", 2), ("abandoned_cart", 3)]
    assert [c["send_at"] - T0 for c in cmds] == [HOUR_MS, 24 * HOUR_MS, 72 * HOUR_MS]
    assert all(c["category"] == "marketing" and c["created_at"] == c["send_at"] for c in cmds)
    ctx = json.loads(cmds[0]["context"])
    assert ctx["items"][0]["name"] == "Enamel mug" and ctx["cart_url"].endswith("/cart/ann")
    assert ctx["cart_total"] == "28.00" and ctx["unsubscribe_url"]
    third = json.loads(cmds[2]["context"])
    assert third["incentive"] == "coupon" and third["coupon_code"].startswith("CART-")


def test_steps_fire_only_once_the_watermark_passes_them():
    cmds, _, _ = run([customer("ann"), cart("ann", T0)], until=T0 + HOUR_MS + GRACE - 1)
    assert cmds == []
    cmds, _, _ = run([customer("ann"), cart("ann", T0)], until=T0 + HOUR_MS + GRACE)
    assert steps(cmds) == [("abandoned_cart", 1)]


def test_abandoned_cart_chain_stops_when_customer_orders():
    cmds, _, _ = run([customer("bob"), cart("bob", T0), order("bob", T0 + 2 * HOUR_MS)], until=T0 + 80 * HOUR_MS)
    assert steps(cmds, "abandoned_cart") == [("abandoned_cart", 1)]
    assert steps(cmds, "order_confirmation") == [("order_confirmation", 1)]


def test_cart_cleared_and_unsubscribe_end_the_chain():
    cleared, _, _ = run([customer("c"), cart("c", T0), cart("c", T0 + 30 * MINUTE_MS, "cart_cleared", items=[])],
                        until=T0 + 80 * HOUR_MS)
    assert cleared == []
    unsub, _, _ = run([customer("d"), cart("d", T0), feedback("d", T0 + 2 * HOUR_MS, "unsubscribed")],
                      until=T0 + 80 * HOUR_MS)
    assert steps(unsub) == [("abandoned_cart", 1)]


def test_hard_bounce_and_complaint_exit_but_transient_bounce_does_not():
    hard, _, _ = run([customer("e"), cart("e", T0), feedback("e", T0 + 2 * HOUR_MS, "bounced", bounce_type="permanent")],
                     until=T0 + 80 * HOUR_MS)
    soft, _, _ = run([customer("f"), cart("f", T0), feedback("f", T0 + 2 * HOUR_MS, "bounced", bounce_type="transient")],
                     until=T0 + 80 * HOUR_MS)
    complaint, _, _ = run([customer("g"), cart("g", T0), feedback("g", T0 + 2 * HOUR_MS, "complained")],
                          until=T0 + 80 * HOUR_MS)
    assert len(hard) == 1 and len(soft) == 3 and len(complaint) == 1


def test_new_activity_restarts_from_step_one_only_without_a_recent_step():
    # activity 2 h after step 1 (sent at +1 h): step sent within 24 h → continue with step 2, re-timed
    cmds, _, _ = run([customer("h"), cart("h", T0), cart("h", T0 + 3 * HOUR_MS)], until=T0 + 100 * HOUR_MS)
    assert steps(cmds) == [("abandoned_cart", 1), ("abandoned_cart", 2), ("abandoned_cart", 3)]
    assert cmds[1]["send_at"] == T0 + 3 * HOUR_MS + 24 * HOUR_MS
    # activity 26 h after step 2 (sent at +24 h): no step in the last 24 h → a new chain from step 1
    later, _, _ = run([customer("i"), cart("i", T0), cart("i", T0 + 50 * HOUR_MS)], until=T0 + 60 * HOUR_MS)
    assert steps(later) == [("abandoned_cart", 1), ("abandoned_cart", 2), ("abandoned_cart", 1)]
    assert len({c["command_id"] for c in later}) == 3


def test_no_consent_or_no_email_means_no_marketing_but_transactional_still_goes():
    cmds, _, eng = run([customer("j", opt_in=False), cart("j", T0), order("j", T0 + 80 * HOUR_MS)],
                       until=T0 + 81 * HOUR_MS)
    assert steps(cmds) == [("order_confirmation", 1)]
    assert eng.stats["dropped:abandoned_cart:no_consent"] == 3
    unknown, _, _ = run([cart("k", T0)], until=T0 + 80 * HOUR_MS)
    assert unknown == []


def test_incentive_can_be_free_shipping_and_coupons_are_unique_per_customer_and_cart():
    s = load_settings(env={})
    s.flows.abandoned_cart.incentive = "free_shipping"
    cmds, _, _ = run([customer("l"), cart("l", T0)], until=T0 + 80 * HOUR_MS, settings=s)
    assert json.loads(cmds[2]["context"])["incentive"] == "free_shipping"
    a, _, _ = run([customer("m"), cart("m", T0, cart_id="k1")], until=T0 + 80 * HOUR_MS)
    b, _, _ = run([customer("m"), cart("m", T0, cart_id="k2")], until=T0 + 80 * HOUR_MS)
    c, _, _ = run([customer("n"), cart("n", T0, cart_id="k1")], until=T0 + 80 * HOUR_MS)
    codes = {json.loads(x[2]["context"])["coupon_code"] for x in (a, b, c)}
    assert len(codes) == 3


def test_duplicate_event_ids_are_ignored_and_late_events_are_applied_not_rejected():
    ev = order("o", T0, event_id="same")
    cmds, _, _ = run([customer("o"), ev, ev])
    assert len(cmds) == 1
    cmds, rejected, eng = run([customer("p"), tick(T0 + HOUR_MS), order("p", T0)])
    assert steps(cmds) == [("order_confirmation", 1)] and rejected == []
    assert eng.stats["late_applied:orders"] == 1 and eng.stats["lateness:orders:le_1h"] == 1
    within, rejected, eng = run([customer("q"), tick(T0 + 5 * MINUTE_MS), order("q", T0)])
    assert len(within) == 1 and rejected == [] and "late_applied:orders" not in eng.stats
    late_dup = order("r", T0, event_id="again")
    twice, _, eng = run([customer("r"), tick(T0 + HOUR_MS), late_dup, late_dup])
    assert len(twice) == 1 and eng.stats["duplicate"] == 1


def test_event_ids_are_remembered_for_the_dedupe_retention_then_forgotten():
    from streams.core.engine import SEEN_RETENTION_MS

    eng = PartitionEngine(load_settings(env={}))
    for topic, rec in [customer("ret", at=T0), order("ret", T0, event_id="o-1")]:
        eng.process(topic, rec)
    eng.advance(T0 + HOUR_MS)
    assert "o-1" in eng.customers["ret"]["seen"]  # a redelivery within the retention is a duplicate
    eng.advance(T0 + SEEN_RETENTION_MS + HOUR_MS)
    eng.process(*cart("ret", T0 + SEEN_RETENTION_MS + HOUR_MS))  # any later settle prunes
    eng.advance(T0 + SEEN_RETENTION_MS + 2 * HOUR_MS)
    assert "o-1" not in eng.customers["ret"]["seen"]  # state stays small: no ids kept for ever


def test_order_confirmation_is_immediate_with_cross_sell_learnt_from_the_stream():
    tee = {"sku": "TEE", "name": "Tee", "price": "29.00", "quantity": 1}
    cap = {"sku": "CAP", "name": "Cap", "price": "20.00", "quantity": 1}
    mug = {"sku": "MUG", "name": "Enamel mug", "price": "14.00", "quantity": 1}
    history = [order(f"h{i}", T0 + i, items=[mug, tee] if i % 2 else [mug, cap], order_id=f"oh{i}") for i in range(5)]
    cmds, _, _ = run(history + [order("new", T0 + 10, items=[mug], order_id="onew")])
    first = json.loads(cmds[0]["context"])
    assert first["cross_sell"] == []  # no signal yet
    last = cmds[-1]
    assert last["send_at"] == T0 + 10 and last["category"] == "transactional"
    suggested = [s["sku"] for s in json.loads(last["context"])["cross_sell"]]
    assert suggested == ["CAP", "TEE"] and len(suggested) <= 3


def test_shipping_confirmation_then_one_tracking_update_per_status_change():
    evs = [shipment("r", T0, "label_created"), shipment("r", T0 + 1, "label_created"),
           shipment("r", T0 + 2, "in_transit"), shipment("r", T0 + 3, "in_transit"),
           shipment("r", T0 + 4, "out_for_delivery")]
    cmds, _, _ = run([customer("r")] + evs)
    assert steps(cmds) == [("shipping_confirmation", 1), ("tracking_update", 1), ("tracking_update", 1)]
    ctx = json.loads(cmds[0]["context"])
    assert ctx["carrier"] == "DHL" and ctx["tracking_url"].startswith("https://track")
    assert [json.loads(c["context"])["status"] for c in cmds[1:]] == ["in_transit", "out_for_delivery"]


def test_delivered_brings_a_feedback_request_with_coupon_after_three_days_unless_returned():
    base = [customer("s"), order("s", T0), shipment("s", T0 + DAY_MS, "delivered")]
    cmds, _, _ = run(base, until=T0 + 5 * DAY_MS)
    fb = [c for c in cmds if c["flow"] == "delivery_feedback"]
    assert len(fb) == 1 and fb[0]["send_at"] == T0 + 4 * DAY_MS and fb[0]["category"] == "marketing"
    assert json.loads(fb[0]["context"])["coupon_code"].startswith("THANKS-")
    returned, _, _ = run(base + [shipment("s", T0 + 2 * DAY_MS, "returned")], until=T0 + 5 * DAY_MS)
    refunded, _, _ = run(base + [order("s", T0 + 2 * DAY_MS, "refunded")], until=T0 + 5 * DAY_MS)
    assert not [c for c in returned + refunded if c["flow"] == "delivery_feedback"]


def test_delivery_feedback_reads_its_own_settings_not_the_transactional_ones():
    s = load_settings(env={}, overrides={"flows": {"delivery_feedback": {"delay_ms": DAY_MS, "coupon_percent": 25},
                                                   "transactional": {"expires_after_ms": HOUR_MS}}})
    cmds, _, _ = run([customer("s"), order("s", T0), shipment("s", T0 + DAY_MS, "delivered")],
                     until=T0 + 5 * DAY_MS, settings=s)
    fb = [c for c in cmds if c["flow"] == "delivery_feedback"]
    assert len(fb) == 1 and fb[0]["send_at"] == T0 + 2 * DAY_MS
    assert json.loads(fb[0]["context"])["coupon_percent"] == 25


def test_frequency_cap_defers_a_marketing_step_and_priority_orders_competitors():
    s = load_settings(env={})
    # delivery feedback due at the same moment as abandoned-cart step 1: the cart wins, feedback waits 20 h
    evs = [customer("t", at=T0 - 4 * DAY_MS), order("t", T0 - 3 * DAY_MS - HOUR_MS, order_id="o1"),
           shipment("t", T0 - 3 * DAY_MS + HOUR_MS, "delivered", order_id="o1"), cart("t", T0)]
    cmds, _, _ = run(evs, until=T0 + 30 * HOUR_MS, settings=s)
    marketing = [(c["flow"], c["send_at"] - T0) for c in cmds if c["category"] == "marketing"]
    assert marketing[0] == ("abandoned_cart", HOUR_MS)
    # capped until +21 h = 06:00 UTC, inside quiet hours → 08:00 UTC = +23 h
    assert ("delivery_feedback", 23 * HOUR_MS) in marketing


def test_a_step_that_cannot_be_sent_before_it_expires_is_dropped_with_a_reason():
    s = load_settings(env={})
    s.flows.abandoned_cart.expires_after_ms = HOUR_MS
    s.flows.abandoned_cart.delays_ms = [HOUR_MS, 2 * HOUR_MS, 3 * HOUR_MS]
    cmds, _, eng = run([customer("u"), cart("u", T0)], until=T0 + 10 * HOUR_MS, settings=s)
    assert steps(cmds) == [("abandoned_cart", 1)]  # steps 2 and 3 fall inside the 20 h cap and expire
    assert eng.stats["dropped:abandoned_cart:expired_by_frequency_cap"] == 2


def test_quiet_hours_move_marketing_to_eight_local():
    # cart at 21:30 in New York → step 1 due 22:30 local → sent 08:00 local next day
    at = T0 + 17 * HOUR_MS + 30 * MINUTE_MS  # 2026-11-07 02:30 UTC = 21:30 EST (UTC-5)
    cmds, _, _ = run([customer("v", tz="America/New_York"), cart("v", at)], until=at + 20 * HOUR_MS)
    assert cmds[0]["send_at"] == T0 + 28 * HOUR_MS  # 2026-11-07 13:00 UTC = 08:00 EST (DST ended 1 Nov)


def test_ab_variants_and_holdout_follow_the_configured_experiment():
    s = load_settings(env={})
    s.flows.experiments = [Experiment(name="subject", flow="abandoned_cart", step=1, variants={"A": 1, "B": 1},
                                      holdout=0.2)]
    variants: dict[str, int] = {}
    for i in range(400):
        cmds, _, eng = run([customer(f"x{i}"), cart(f"x{i}", T0)], until=T0 + 2 * HOUR_MS, settings=s)
        v = cmds[0]["variant"]  # holdout customers get a command the sink never sends
        variants[v] = variants.get(v, 0) + 1
    assert set(variants) == {"A", "B", "holdout"}
    assert 40 <= variants["holdout"] <= 120 and abs(variants["A"] - variants["B"]) < 80


def test_win_back_after_ninety_days_offer_values_goodbye_and_any_order_exits():
    cmds, _, _ = run([customer("w"), order("w", T0)], until=T0 + 120 * DAY_MS)
    wb = [c for c in cmds if c["flow"] == "win_back"]
    assert [(c["step"], c["send_at"] - T0) for c in wb] == [(1, 90 * DAY_MS), (2, 97 * DAY_MS), (3, 104 * DAY_MS)]
    ctx = [json.loads(c["context"]) for c in wb]
    assert ctx[0]["segment"] in ("vip", "one_time") and ctx[0]["coupon_code"].startswith("BACK-")
    assert ctx[2]["opt_out_url"]
    back, _, _ = run([customer("y"), order("y", T0), order("y", T0 + 93 * DAY_MS, order_id="o2")],
                     until=T0 + 120 * DAY_MS)
    assert [c["step"] for c in back if c["flow"] == "win_back"] == [1]


def _scenario():
    return [customer("ann", at=T0), cart("ann", T0), customer("bob", at=T0), cart("bob", T0 + MINUTE_MS),
            order("bob", T0 + 3 * MINUTE_MS), shipment("bob", T0 + 4 * MINUTE_MS, "in_transit"),
            cart("cid", T0 + 2 * MINUTE_MS), customer("cid", at=T0 + 2 * MINUTE_MS),
            feedback("ann", T0 + 5 * MINUTE_MS, "opened"), cart("ann", T0 + 6 * MINUTE_MS)]


@hsettings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False))
def test_shuffling_events_within_the_grace_window_does_not_change_the_command_set(rnd: random.Random):
    events = _scenario()
    baseline, _, _ = run(events, until=T0 + 100 * HOUR_MS)
    shuffled = events[:]
    rnd.shuffle(shuffled)  # all within 6 minutes < 10 minute grace
    again, rejected, _ = run(shuffled, until=T0 + 100 * HOUR_MS)
    assert rejected == []
    # marketing commands are byte-identical; transactional mail goes out on arrival, so its context
    # shows the profile known at that moment — its identity, timing and recipient are identical
    def key(c):
        if c["category"] == "marketing":
            return json.dumps(c, sort_keys=True)
        return json.dumps([c["command_id"], c["flow"], c["step"], c["send_at"], c["to"]])
    assert sorted(map(key, again)) == sorted(map(key, baseline))


def test_state_restored_from_the_changelog_continues_exactly_like_an_uninterrupted_engine():
    events = _scenario() + [tick(T0 + 2 * HOUR_MS)]
    whole, _, _ = run(events, until=T0 + 100 * HOUR_MS)
    a = PartitionEngine(load_settings(env={}), 0)
    first = []
    for topic, rec in events[:6]:
        first += a.process(topic, rec).commands
    b = PartitionEngine(load_settings(env={}), 0)
    for key, value in a.drain_changes().items():
        b.restore(key, value)
    b.restored()
    rest = []
    for topic, rec in events[6:]:
        rest += b.process(topic, rec).commands
    rest += b.advance(T0 + 100 * HOUR_MS).commands
    assert first + rest == whole


def test_transactional_mail_without_an_address_waits_for_the_profile_within_the_grace():
    early = shipment("z", T0, "label_created")  # no email anywhere yet
    cmds, _, _ = run([early, customer("z", at=T0 + MINUTE_MS)], until=T0 + HOUR_MS)
    assert steps(cmds) == [("shipping_confirmation", 1)] and cmds[0]["to"] == "z@example.com"
    assert cmds[0]["send_at"] == T0
    nobody, _, eng = run([shipment("zz", T0, "label_created")], until=T0 + HOUR_MS)
    assert nobody == [] and eng.stats["dropped:shipping_confirmation:no_email"] == 1


def test_repeat_customers_can_lapse_at_a_multiple_of_their_own_median_gap():
    s = load_settings(env={})
    s.flows.win_back.median_gap_multiple = 2.0
    evs = [customer("rep", at=T0 - HOUR_MS)] + [order("rep", T0 + i * 10 * DAY_MS, order_id=f"r{i}") for i in range(3)]
    cmds, _, _ = run(evs, until=T0 + 60 * DAY_MS, settings=s)
    wb = [c for c in cmds if c["flow"] == "win_back"]
    assert wb and wb[0]["send_at"] == T0 + 20 * DAY_MS + 20 * DAY_MS  # last order + 2 × median gap (10 d)


def test_vip_customers_get_the_bigger_win_back_offer():
    s = load_settings(env={})
    evs = [customer(f"p{i}", at=T0 - HOUR_MS) for i in range(60)]
    evs += [order(f"p{i}", T0 + i, order_id=f"q{i}", total="20.00") for i in range(59)]
    evs += [order("p59", T0 + 100, order_id="big", total="5000.00")]
    cmds, _, _ = run(evs, until=T0 + 92 * DAY_MS, settings=s)
    offers = {c["customer_id"]: json.loads(c["context"]) for c in cmds if c["flow"] == "win_back" and c["step"] == 1}
    assert offers["p59"]["segment"] == "vip" and offers["p59"]["offer_percent"] == s.flows.win_back.offers["vip"]
    assert offers["p1"]["segment"] == "one_time" and offers["p1"]["offer_percent"] < offers["p59"]["offer_percent"]


def test_win_back_does_not_restart_until_the_customer_orders_and_lapses_again():
    once, _, _ = run([customer("z1"), order("z1", T0)], until=T0 + 400 * DAY_MS)
    assert [c["step"] for c in once if c["flow"] == "win_back"] == [1, 2, 3]
    again, _, _ = run([customer("z2"), order("z2", T0), order("z2", T0 + 150 * DAY_MS, order_id="o2")],
                      until=T0 + 300 * DAY_MS)
    assert [c["step"] for c in again if c["flow"] == "win_back"] == [1, 2, 3, 1, 2, 3]
    assert len({c["trigger_event_id"] for c in again if c["flow"] == "win_back"}) == 2
