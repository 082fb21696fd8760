"""Event time as production sends it (pure core): late facts still count, a clock gone wrong heals."""

from __future__ import annotations

import json

from hypothesis import given, settings as hsettings, strategies as st

from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, load_settings
from streams.core.engine import CLOCK_KEY, PartitionEngine
from tests.core_events import T0, cart, customer, feedback, order, shipment, tick

YEAR_3000 = 32_503_680_000_000


def run(events, until=None, eng=None):
    eng = eng or PartitionEngine(load_settings(env={}), 0)
    out = []
    for topic, rec in events:
        res = eng.process(topic, rec)
        assert res.rejections == []  # nothing readable is ever set aside
        out += res.commands
    if until is not None:
        out += eng.advance(until).commands
    return out, eng


def flows(cmds, cid=None):
    return [(c["flow"], c["step"]) for c in cmds if cid is None or c["customer_id"] == cid]


# ---- facts that end or block a flow -------------------------------------------------------------

def test_late_order_is_still_confirmed_and_ends_the_cart_series():
    """The issue's probe: 40 carts at T, clocks at T+40 min, one order stamped T+15 min arrives."""
    evs = [customer(f"c{i}") for i in range(40)] + [cart(f"c{i}", T0) for i in range(40)]
    evs += [tick(T0 + 40 * MINUTE_MS), order("c7", T0 + 15 * MINUTE_MS)]
    cmds, eng = run(evs, until=T0 + 80 * HOUR_MS)
    assert flows(cmds, "c7") == [("order_confirmation", 1)]
    assert flows(cmds, "c8") == [("abandoned_cart", 1), ("abandoned_cart", 2), ("abandoned_cart", 3)]
    assert eng.stats["late_applied:orders"] == 1 and eng.stats["lateness:orders:le_1h"] == 1
    # the same command id as if it had arrived in time; it expires counting from its arrival
    in_time, _ = run([customer("c7"), cart("c7", T0), order("c7", T0 + 15 * MINUTE_MS, event_id="same")])
    late, _ = run([customer("c7"), cart("c7", T0), tick(T0 + 40 * MINUTE_MS),
                   order("c7", T0 + 15 * MINUTE_MS, event_id="same")])
    assert late[0]["command_id"] == in_time[0]["command_id"] and late[0]["send_at"] == T0 + 15 * MINUTE_MS
    assert late[0]["expires_at"] - in_time[0]["expires_at"] == 15 * MINUTE_MS  # watermark − event time


def test_late_opt_out_blocks_every_step_not_yet_emitted():
    evs = [customer("ann"), cart("ann", T0), tick(T0 + 40 * MINUTE_MS),
           customer("ann", at=T0 + 15 * MINUTE_MS, opt_in=False)]
    cmds, eng = run(evs, until=T0 + 80 * HOUR_MS)
    assert cmds == []
    assert eng.stats["dropped:abandoned_cart:no_consent"] == 3 and eng.stats["late_applied:customers"] == 1


def test_steps_already_emitted_stand_and_a_late_end_cancels_the_rest():
    evs = [customer("bob"), cart("bob", T0), tick(T0 + 2 * HOUR_MS)]
    first, eng = run(evs)
    assert flows(first) == [("abandoned_cart", 1)]
    rest, _ = run([order("bob", T0 + 30 * MINUTE_MS)], until=T0 + 80 * HOUR_MS, eng=eng)
    assert flows(rest) == [("order_confirmation", 1)]


def test_late_unsubscribe_bounce_complaint_and_cleared_cart_end_the_series_but_a_soft_bounce_does_not():
    def series(late):
        cmds, _ = run([customer("d"), cart("d", T0), tick(T0 + 2 * HOUR_MS), late], until=T0 + 80 * HOUR_MS)
        return [s for f, s in flows(cmds) if f == "abandoned_cart"]
    assert series(feedback("d", T0 + 30 * MINUTE_MS, "unsubscribed")) == [1]
    assert series(feedback("d", T0 + 30 * MINUTE_MS, "bounced", bounce_type="permanent")) == [1]
    assert series(feedback("d", T0 + 30 * MINUTE_MS, "complained")) == [1]
    assert series(cart("d", T0 + 30 * MINUTE_MS, "cart_cleared", items=[])) == [1]
    assert series(feedback("d", T0 + 30 * MINUTE_MS, "bounced", bounce_type="transient")) == [1, 2, 3]


def test_late_cancel_refund_or_return_cancels_the_pending_feedback_request():
    base = [customer("s"), order("s", T0), shipment("s", T0 + DAY_MS, "delivered"), tick(T0 + 2 * DAY_MS)]
    for late in (order("s", T0 + HOUR_MS, "cancelled"), order("s", T0 + HOUR_MS, "refunded"),
                 shipment("s", T0 + DAY_MS + HOUR_MS, "returned")):
        cmds, eng = run(base + [late], until=T0 + 6 * DAY_MS)
        assert "delivery_feedback" not in [f for f, _ in flows(cmds)]
    kept, _ = run(base, until=T0 + 6 * DAY_MS)
    assert ("delivery_feedback", 1) in flows(kept)


def test_late_shipment_events_send_their_mail_once_per_status_with_the_same_ids():
    evs = [shipment("r", T0, "label_created", event_id="s1"), shipment("r", T0 + 5, "in_transit", event_id="s2")]
    in_time, _ = run([customer("r")] + evs)
    late, eng = run([customer("r"), tick(T0 + 3 * HOUR_MS)] + evs + [shipment("r", T0 + 6, "in_transit")])
    assert [c["command_id"] for c in late] == [c["command_id"] for c in in_time]
    assert flows(late) == [("shipping_confirmation", 1), ("tracking_update", 1)]
    assert eng.stats["late_applied:shipments"] == 3


def test_a_late_fact_older_than_a_newer_one_of_its_kind_changes_nothing():
    # an opt-in from before the opt-out does not bring consent back
    cmds, eng = run([customer("o", opt_in=False, at=T0 - MINUTE_MS), cart("o", T0), tick(T0 + HOUR_MS),
                     customer("o", opt_in=True, at=T0 - HOUR_MS)], until=T0 + 80 * HOUR_MS)
    assert cmds == [] and eng.stats["stale:customers"] == 1
    # a cart snapshot from before the newest activity does not replace it; one from before the order does not
    # start a series for a cart already bought
    cmds, eng = run([customer("k"), cart("k", T0, cart_id="new"), tick(T0 + 30 * MINUTE_MS),
                     cart("k", T0 - 2 * HOUR_MS, cart_id="old")], until=T0 + 2 * HOUR_MS)
    assert [json.loads(c["context"])["cart_id"] for c in cmds] == ["new"] and eng.stats["stale:carts"] == 1
    cmds, eng = run([customer("b"), order("b", T0), tick(T0 + HOUR_MS), cart("b", T0 - 20 * MINUTE_MS)],
                    until=T0 + 80 * HOUR_MS)
    assert flows(cmds) == [("order_confirmation", 1)] and eng.stats["stale:carts"] == 1


def test_a_late_older_order_counts_but_keeps_the_last_order_and_its_win_back():
    cmds, eng = run([customer("w"), order("w", T0, order_id="o2"), tick(T0 + DAY_MS),
                     order("w", T0 - 30 * DAY_MS, order_id="o1")], until=T0 + 95 * DAY_MS)
    o = eng.customers["w"]["ord"]
    assert o["n"] == 2 and o["last"] == T0 and [s[0] for s in o["sp"]] == [T0 - 30 * DAY_MS, T0]
    assert [c["send_at"] for c in cmds if c["flow"] == "win_back"] == [T0 + 90 * DAY_MS]


# ---- facts that would start marketing in the past -----------------------------------------------

def test_a_late_cart_skips_the_steps_already_in_the_past_and_keeps_those_ahead():
    two_hours, eng = run([customer("a"), tick(T0 + 2 * HOUR_MS), cart("a", T0)], until=T0 + 80 * HOUR_MS)
    assert [(c["step"], c["send_at"] - T0) for c in two_hours] == [(2, 24 * HOUR_MS), (3, 72 * HOUR_MS)]
    assert eng.stats["dropped:abandoned_cart:late_start"] == 1
    three_days, eng = run([customer("b"), tick(T0 + 3 * DAY_MS + HOUR_MS), cart("b", T0)], until=T0 + 80 * HOUR_MS)
    assert three_days == [] and eng.stats["dropped:abandoned_cart:late_start"] == 3
    assert eng.stats["lateness:carts:le_7d"] == 1
    # late by less than the first delay: nothing is in the past yet, the series runs as usual
    short, _ = run([customer("c"), tick(T0 + 30 * MINUTE_MS), cart("c", T0)], until=T0 + 80 * HOUR_MS)
    assert [c["send_at"] - T0 for c in short] == [HOUR_MS, 24 * HOUR_MS, 72 * HOUR_MS]


def test_a_late_order_whose_lapse_date_passed_sends_no_win_back_for_the_past():
    cmds, eng = run([customer("w"), tick(T0 + 95 * DAY_MS), order("w", T0)], until=T0 + 120 * DAY_MS)
    assert flows(cmds) == [("order_confirmation", 1), ("win_back", 2), ("win_back", 3)]
    assert [c["send_at"] - T0 for c in cmds[1:]] == [97 * DAY_MS, 104 * DAY_MS]
    assert eng.stats["dropped:win_back:late_start"] == 1 and eng.stats["lateness:orders:gt_7d"] == 1


def test_a_late_delivery_whose_feedback_time_passed_skips_the_request():
    cmds, eng = run([customer("f"), order("f", T0), tick(T0 + 5 * DAY_MS), shipment("f", T0 + DAY_MS, "delivered")],
                    until=T0 + 10 * DAY_MS)
    assert flows(cmds) == [("order_confirmation", 1), ("shipping_confirmation", 1)]
    assert eng.stats["dropped:delivery_feedback:late_start"] == 1


# ---- a clock gone wrong -------------------------------------------------------------------------

def test_an_event_far_ahead_of_the_last_tick_is_applied_but_does_not_move_the_clock():
    evs = [tick(T0), customer("y"), order("y", YEAR_3000, order_id="o3000"), cart("y2", T0 + MINUTE_MS),
           customer("y2"), order("z", T0 + 2 * MINUTE_MS)]
    cmds, eng = run(evs)
    assert eng.clock_ms == T0 + 2 * MINUTE_MS and eng.stats["future:orders"] == 1
    assert flows(cmds) == [("order_confirmation", 1), ("order_confirmation", 1)]  # the year-3000 one, then z
    later, _ = run([tick(T0 + 2 * HOUR_MS)], eng=eng)  # every later event of the partition as usual
    assert flows(later) == [("abandoned_cart", 1)] and "late_applied:orders" not in eng.stats
    within, eng = run([tick(T0), order("v", T0 + 20 * HOUR_MS)])  # a producer clock a bit ahead: moves it
    assert eng.clock_ms == T0 + 20 * HOUR_MS and "future:orders" not in eng.stats


def test_a_clock_moved_far_ahead_by_the_first_event_of_an_empty_partition_is_set_back_by_the_next_tick():
    eng = PartitionEngine(load_settings(env={}), 0)
    run([customer("x", at=YEAR_3000)], eng=eng)
    assert eng.clock_ms == YEAR_3000  # nothing says what time it is yet
    cmds, _ = run([tick(T0), customer("ann", at=T0), cart("ann", T0 + MINUTE_MS), tick(T0 + 2 * HOUR_MS)], eng=eng)
    assert eng.clock_ms == T0 + 2 * HOUR_MS and eng.stats["clock_repaired"] == 1
    assert flows(cmds) == [("abandoned_cart", 1)] and not any(k.startswith("late") for k in eng.stats)


def _legacy_poisoned_state() -> dict[str, bytes]:
    """What the previous release wrote after a year-3000 order: the partition record had no version
    and the clock of the bad event; every later event of the partition was rejected."""
    settled = {"p": {"email": "ann@example.com", "fn": "Ann", "loc": "en", "tz": "UTC", "at": T0 - HOUR_MS,
                     "opt": True, "opt_at": T0 - HOUR_MS},
               "seen": {}, "buf": [], "ord": {"n": 1, "sp": [[T0, "28.00"]], "gaps": [], "last": T0, "lid": "o-1"},
               "lap": T0 + 90 * DAY_MS, "hs": 28.0}
    bad = {"p": {"email": "x@example.com"}, "seen": {"o-3000": YEAR_3000},
           "buf": [[YEAR_3000, 2, "o-3000", "orders", order("x", YEAR_3000, event_id="o-3000")[1]]]}
    return {CLOCK_KEY: json.dumps({"clock": YEAR_3000, "cooc": {}, "catalog": {}, "spend": {}}).encode(),
            "ann": json.dumps(settled).encode(), "x": json.dumps(bad).encode()}


def test_a_clock_poisoned_by_the_previous_release_is_repaired_on_restore():
    eng = PartitionEngine(load_settings(env={}), 0)
    for key, value in _legacy_poisoned_state().items():
        eng.restore(key, value)
    eng.restored()
    assert eng.clock_ms == T0 and eng.stats["clock_repaired"] == 1
    changes = eng.drain_changes()  # the repaired clock is written back, with the current version
    assert json.loads(changes[CLOCK_KEY])["clock"] == T0 and json.loads(changes[CLOCK_KEY])["v"] == 2
    cmds, _ = run([cart("ann", T0 + HOUR_MS), tick(T0 + 3 * HOUR_MS)], eng=eng)
    assert flows(cmds) == [("abandoned_cart", 1)] and not any(k.startswith("late") for k in eng.stats)
    again = PartitionEngine(load_settings(env={}), 0)  # a state of this release is never second-guessed
    for key, value in changes.items():
        again.restore(key, value)
    again.restore("ann", _legacy_poisoned_state()["ann"])
    again.restored()
    assert again.clock_ms == T0 and "clock_repaired" not in again.stats


def test_the_same_log_with_late_events_gives_the_same_commands_uninterrupted_or_restored():
    evs = [customer("a"), cart("a", T0), customer("b"), cart("b", T0 + MINUTE_MS), tick(T0 + 3 * HOUR_MS),
           order("a", T0 + 30 * MINUTE_MS), cart("c", T0 - DAY_MS), customer("c", at=T0 - DAY_MS),
           feedback("b", T0 + 2 * HOUR_MS, "unsubscribed"), tick(T0 + 30 * HOUR_MS), cart("b", T0 + 29 * HOUR_MS)]
    whole, _ = run(evs, until=T0 + 100 * HOUR_MS)
    assert whole == run(evs, until=T0 + 100 * HOUR_MS)[0]
    first, a = run(evs[:6])
    b = PartitionEngine(load_settings(env={}), 0)
    for key, value in a.drain_changes().items():
        b.restore(key, value)
    b.restored()
    rest, _ = run(evs[6:], until=T0 + 100 * HOUR_MS, eng=b)
    assert first + rest == whole


# ---- safety under any arrival order -------------------------------------------------------------

KINDS = ["cart", "cart", "cart", "order", "cleared", "opt_out", "opt_out", "opt_in", "unsubscribed", "hard_bounce",
         "complained"]
DELAYS = [0, 0, 3 * MINUTE_MS, 40 * MINUTE_MS, 3 * HOUR_MS, 30 * HOUR_MS, 3 * DAY_MS]


@st.composite
def shop_log(draw):
    """Facts of two customers over four days, each arriving after a delay of up to 3 days; unique
    milliseconds so no two facts or steps share an instant."""
    facts, n = [], 0
    for cid in ("ann", "bob"):
        n += 1
        facts.append((T0 - DAY_MS + n, 0, customer(cid, at=T0 - DAY_MS + n)))
        for _ in range(draw(st.integers(1, 7))):
            n += 1
            at = T0 + draw(st.integers(0, 4 * 24 * 60)) * MINUTE_MS + n
            kind = draw(st.sampled_from(KINDS))
            ev = {"cart": lambda: cart(cid, at), "order": lambda: order(cid, at, order_id=f"o{n}"),
                  "cleared": lambda: cart(cid, at, "cart_cleared", items=[]),
                  "opt_out": lambda: customer(cid, at=at, opt_in=False),
                  "opt_in": lambda: customer(cid, at=at, opt_in=True),
                  "unsubscribed": lambda: feedback(cid, at, "unsubscribed"),
                  "hard_bounce": lambda: feedback(cid, at, "bounced", bounce_type="permanent"),
                  "complained": lambda: feedback(cid, at, "complained")}[kind]()
            facts.append((at + draw(st.sampled_from(DELAYS)), n, ev))
    facts += [(T0 + h * HOUR_MS, 10_000 + h, tick(T0 + h * HOUR_MS)) for h in range(0, 8 * 24, 2)]
    facts.sort(key=lambda f: (f[0], f[1]))
    return [ev for _, _, ev in facts]


def forbidden(cmd: dict, processed: list[tuple[str, dict]]) -> str | None:
    """Why a fact already processed forbade this marketing command (None: nothing did)."""
    cid, at = cmd["customer_id"], cmd["send_at"]
    mine = [(t, r) for t, r in processed if t != "clock" and r["customer_id"] == cid]
    consent = [r for t, r in mine if t == "customers" and r["occurred_at"] < at]
    if not consent or not max(consent, key=lambda r: r["occurred_at"])["marketing_opt_in"]:
        return "no consent"
    for t, r in mine:
        if t == "feedback" and r["occurred_at"] <= at and (
                r["type"] in ("unsubscribed", "complained") or r.get("bounce_type") == "permanent"):
            return f"suppressed ({r['type']})"
    if cmd["flow"] == "abandoned_cart":
        activity = [r["occurred_at"] for t, r in mine if t == "carts" and r["items"] and r["occurred_at"] < at]
        since = max(activity)
        for t, r in mine:
            ended = (t == "orders" and r["type"] == "placed") or (t == "carts" and not r["items"])
            if ended and since < r["occurred_at"] < at:
                return f"{r['type']} since the cart"
    return None


@hsettings(max_examples=300, deadline=None)
@given(shop_log())
def test_no_marketing_command_is_emitted_that_a_fact_already_processed_forbade(events):
    eng = PartitionEngine(load_settings(env={}), 0)
    processed: list[tuple[str, dict]] = []
    for topic, rec in events:
        processed.append((topic, rec))
        res = eng.process(topic, rec)
        assert res.rejections == []
        for cmd in res.commands:
            if cmd["category"] == "marketing":
                assert forbidden(cmd, processed) is None, (cmd["flow"], cmd["step"], forbidden(cmd, processed))
    for cmd in eng.advance(T0 + 12 * DAY_MS).commands:
        assert cmd["category"] != "marketing" or forbidden(cmd, processed) is None
    orders = sum(1 for t, r in events if t == "orders")
    assert eng.stats.get("command:order_confirmation", 0) == orders  # every order confirmed, however late
