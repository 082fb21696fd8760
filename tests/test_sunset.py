"""Sunset: a customer with no human click and no order for 180 days gets no more marketing (a counted
skip), is in the audience ``sunset`` for ad platforms to exclude, and a click or an order brings them back."""

from __future__ import annotations

from typing import Any

from streams.config import DAY_MS, HOUR_MS, load_settings
from streams.core.engine import PartitionEngine
from streams.core.sunset import sunset_at
from tests.core_events import T0, cart, customer, feedback, order, run_engine, tick

SUNSET = T0 + 180 * DAY_MS  # 180 days after the consent given at T0


def engine(**sunset: Any) -> PartitionEngine:
    return PartitionEngine(load_settings(env={}, overrides={"flows": {"sunset": sunset}} if sunset else None), 0)


def run(events: list[tuple[str, dict]], until: int, **sunset: Any) -> tuple[list[dict], PartitionEngine]:
    return run_engine(events, until=until, eng=engine(**sunset))


def memberships(eng: PartitionEngine) -> list[tuple[str, bool, int]]:
    """The sunset audience's joins and leaves: (audience, member, day after T0 of the change)."""
    return [(m["audience"], m["member"], (m["changed_at"] - T0) // DAY_MS) for m in eng.drain_memberships()
            if m["audience"] == "sunset"]


def carts(commands: list[dict]) -> list[int]:
    return [c["send_at"] for c in commands if c["flow"] == "abandoned_cart"]


def test_a_customer_without_a_click_or_an_order_for_180_days_gets_no_marketing_and_joins_the_sunset_audience():
    before = SUNSET - 2 * DAY_MS
    commands, eng = run([customer("a", T0), cart("a", before), tick(SUNSET + DAY_MS), cart("a", SUNSET + DAY_MS)],
                        until=SUNSET + 2 * DAY_MS)
    assert carts(commands) == [before + HOUR_MS, before + 24 * HOUR_MS]  # step 3 (+72 h) falls after the sunset
    assert eng.stats["dropped:abandoned_cart:sunset"] == 2  # step 3, then step 1 of the new cart
    assert eng.stats["sunset:entered"] == 1
    assert memberships(eng) == [("sunset", True, 180)]  # when the clock passed it (recorded at the watermark)
    assert eng.customers["a"].sunset_since == SUNSET


def test_a_human_click_or_an_order_moves_the_sunset_and_brings_a_sunset_customer_back():
    clicked = T0 + 100 * DAY_MS
    commands, eng = run([customer("a", T0), feedback("a", clicked, "clicked", message_id="m1", user_agent="Firefox"),
                         cart("a", SUNSET + DAY_MS)], until=SUNSET + 2 * DAY_MS)
    assert carts(commands) == [SUNSET + DAY_MS + HOUR_MS]
    assert eng.customers["a"].engaged_at == clicked
    back = SUNSET + 10 * DAY_MS
    commands, eng = run([customer("a", T0), tick(SUNSET + DAY_MS), order("a", back), cart("a", back + DAY_MS)],
                        until=back + 2 * DAY_MS)
    assert eng.stats["sunset:returned"] == 1
    assert memberships(eng) == [("sunset", True, 180), ("sunset", False, 191)]  # the leave when the order settled
    assert carts(commands) == [back + DAY_MS + HOUR_MS]  # the order brought them back
    assert [c["flow"] for c in commands if c["category"] == "transactional"] == ["order_confirmation"]


def test_a_bot_click_does_not_count_as_engagement():
    delivered = T0 + 100 * DAY_MS
    events = [customer("a", T0), feedback("a", delivered, "delivered", message_id="m1"),
              feedback("a", delivered + 3_000, "clicked", message_id="m1", user_agent="Firefox"),  # 3 s after delivery
              feedback("a", delivered + 3 * HOUR_MS, "clicked", message_id="m1", user_agent="Mimecast Scanner"),
              cart("a", SUNSET + DAY_MS)]
    commands, eng = run(events, until=SUNSET + 2 * DAY_MS)
    assert carts(commands) == []
    assert eng.customers["a"].engaged_at == T0
    assert eng.stats["dropped:abandoned_cart:sunset"] == 1


def test_consent_withdrawn_and_given_again_starts_the_clock_afresh():
    again = T0 + 200 * DAY_MS
    commands, eng = run([customer("a", T0), customer("a", T0 + 10 * DAY_MS, opt_in=False), customer("a", again),
                         cart("a", again + DAY_MS)], until=again + 2 * DAY_MS)
    assert eng.customers["a"].engaged_at == again
    assert carts(commands) == [again + DAY_MS + HOUR_MS]
    assert "sunset:entered" not in eng.stats


def test_transactional_mail_still_goes_to_a_sunset_customer():
    shipped = SUNSET + 5 * DAY_MS
    from tests.core_events import shipment

    commands, eng = run([customer("a", T0), tick(SUNSET + DAY_MS), shipment("a", shipped, "in_transit")],
                        until=shipped + DAY_MS)
    assert [c["flow"] for c in commands] == ["shipping_confirmation"]
    assert eng.customers["a"].sunset_since == SUNSET


def test_sunset_after_a_configured_number_of_days_and_switched_off():
    commands, eng = run([customer("a", T0), cart("a", T0 + 40 * DAY_MS)], until=T0 + 45 * DAY_MS, after_days=30)
    assert carts(commands) == [] and eng.stats["dropped:abandoned_cart:sunset"] == 3
    commands, eng = run([customer("a", T0), cart("a", SUNSET + DAY_MS)], until=SUNSET + 5 * DAY_MS, enabled=False)
    assert len(carts(commands)) == 3 and "sunset:entered" not in eng.stats


def test_a_state_from_before_sunset_is_anchored_at_its_last_order_or_consent_decision():
    eng = engine()
    run_engine([customer("a", T0), customer("b", T0), order("b", T0 + DAY_MS)], until=T0 + 2 * DAY_MS, eng=eng)
    for c in eng.customers.values():
        c.engaged_at = None  # as a release without sunset wrote it
    assert sunset_at(eng.customers["b"], 180 * DAY_MS) == T0 + DAY_MS + 180 * DAY_MS  # its last order
    commands, _ = run_engine([cart("a", T0 + 200 * DAY_MS)], until=T0 + 202 * DAY_MS, eng=eng)
    assert carts(commands) == [] and eng.stats["dropped:abandoned_cart:sunset"] == 2  # anchored at its consent decision (T0)


# ---- bot clicks by the report's rules (link bursts, each click against its own message's delivery) -------------
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
LATER = T0 + 200 * DAY_MS  # every customer below gave consent at T0: sunset since SUNSET


def attack_shapes() -> dict[str, list[tuple[str, dict]]]:
    """Sunset customers, then the feedback of one message (``m1``) each: the shapes of recorded scanner clicks."""
    def fb(cid: str, after_ms: int, kind: str, **kw: Any) -> tuple[str, dict]:
        return feedback(cid, LATER + after_ms, kind, **kw)

    def clicks(cid: str, start_ms: int, step_ms: int) -> list[tuple[str, dict]]:
        return [fb(cid, start_ms + step_ms * j, "clicked", message_id="m1", link=f"https://shop.example.com/{p}",
                   user_agent=CHROME, ip_address="52.1.2.3") for j, p in enumerate("abc")]

    shapes = {
        "s1_burst": clicks("s1_burst", 15_000, 300),  # three links in 0.6 s, 15 s after delivery
        "s7_burst_fast": clicks("s7_burst_fast", 30_000, 200),
        # a second message delivered 1 s after the first; the first one clicked 3 s after its delivery
        "s2_twomsgs": [fb("s2_twomsgs", 1_000, "delivered", message_id="m2"),
                       fb("s2_twomsgs", 3_000, "clicked", message_id="m1", link="https://shop.example.com/a",
                          user_agent=CHROME)],
        "s3_control": [],
        "s4_soonclick": [fb("s4_soonclick", 3_000, "clicked", message_id="m1", link="https://shop.example.com/a",
                            user_agent=CHROME)],
        "s5_mppopen": [fb("s5_mppopen", 60_000, "opened", message_id="m1", user_agent="Mozilla/5.0",
                          ip_address="17.58.1.2")],
        "s6_human": [fb("s6_human", 60_000, "clicked", message_id="m1", link="https://shop.example.com/a",
                        user_agent=CHROME, ip_address="81.1.2.3")],
    }
    return {cid: [customer(cid, T0), fb(cid, 0, "delivered", message_id="m1"), *events]
            for cid, events in shapes.items()}


def test_scanner_clicks_in_a_link_burst_or_soon_after_their_own_message_do_not_bring_a_sunset_customer_back():
    shapes = attack_shapes()
    events = sorted((e for evs in shapes.values() for e in evs), key=lambda e: e[1]["occurred_at"])
    _, eng = run(events, until=LATER + DAY_MS)
    still_sunset = sorted(cid for cid, c in eng.customers.items() if c.sunset_since is not None)
    assert still_sunset == ["s1_burst", "s2_twomsgs", "s3_control", "s4_soonclick", "s5_mppopen", "s7_burst_fast"]
    assert eng.customers["s6_human"].engaged_at == LATER + 60_000 and eng.stats["sunset:returned"] == 1
    assert not any(waiting for c in eng.customers.values() for *_, waiting in c.recent_clicks)  # all decided
    assert not eng.customers["s1_burst"].recent_clicks  # and forgotten once the window passed


def test_the_stream_brings_back_exactly_the_customers_whose_clicks_the_report_calls_human():
    from streams.config import load_settings as settings
    from streams.core.engagement import EngagementRules

    rules = EngagementRules(settings(env={}).metrics)
    for cid, events in attack_shapes().items():
        feedback_records = [r for topic, r in events if topic == "feedback"]
        report_human = any(v is not None and v.human and r["type"] == "clicked"
                           for r, v in zip(feedback_records, rules.classify_all(feedback_records)))
        _, eng = run(events, until=LATER + DAY_MS)
        assert (eng.customers[cid].sunset_since is None) == report_human, cid


def test_an_order_brings_a_sunset_customer_back_while_a_bot_burst_does_not():
    events = attack_shapes()["s1_burst"] + [order("s1_burst", LATER + HOUR_MS)]
    _, eng = run(events, until=LATER + DAY_MS)
    assert eng.customers["s1_burst"].sunset_since is None and eng.customers["s1_burst"].engaged_at == LATER + HOUR_MS


def test_a_click_is_judged_against_its_own_message_among_the_last_eight_deliveries():
    events = [customer("a", T0)]
    events += [feedback("a", LATER + i * 1_000, "delivered", message_id=f"m{i}") for i in range(8)]
    events.append(feedback("a", LATER + 9_000, "clicked", message_id="m0", user_agent=CHROME))  # 9 s after m0
    _, eng = run(events, until=LATER + DAY_MS)
    assert eng.customers["a"].sunset_since == SUNSET  # a bot's: m0 is still remembered
    events[-1] = feedback("a", LATER + 60_000, "clicked", message_id="m0", user_agent=CHROME)
    _, eng = run(events, until=LATER + DAY_MS)
    assert eng.customers["a"].sunset_since is None and eng.customers["a"].engaged_at == LATER + 60_000
    assert [key for key, _ in eng.customers["a"].recent_deliveries] == [f"m{i}" for i in range(8)]


def test_a_click_waiting_for_its_burst_verdict_is_decided_before_the_sunset_it_precedes():
    clicked = SUNSET - 500  # a person's click half a second before the sunset: its verdict comes 2 s later
    events = [customer("a", T0), feedback("a", T0 + DAY_MS, "delivered", message_id="m1"),
              feedback("a", clicked, "clicked", message_id="m1", link="https://shop.example.com/a", user_agent=CHROME)]
    _, eng = run(events, until=SUNSET + DAY_MS)
    assert eng.customers["a"].engaged_at == clicked and eng.customers["a"].sunset_since is None
    assert "sunset:entered" not in eng.stats and "sunset:returned" not in eng.stats


def test_a_record_with_the_older_single_delivery_still_decodes_and_judges_its_click():
    from streams.core.state import decode_customer, encode

    eng = engine()
    run_engine([customer("a", T0)], until=T0 + DAY_MS, eng=eng)
    old = encode(eng.customers["a"]).replace(b'"eng"', b'"dlv":["m1",%d],"eng"' % (LATER,))
    c = decode_customer(old)
    assert c.last_delivery == ("m1", LATER) and c.recent_deliveries == [] and c.recent_clicks == []
    eng.customers["a"] = c
    run_engine([feedback("a", LATER + 5_000, "clicked", message_id="m1", user_agent=CHROME)],
               until=LATER + DAY_MS, eng=eng)
    assert eng.customers["a"].sunset_since == SUNSET  # 5 s after the delivery the old record held: a bot's


def test_explain_shows_no_return_for_a_bot_burst_and_a_return_for_a_human_click():
    from streams.tools.explain import Fact, explain_records

    shapes = attack_shapes()
    for cid, back in (("s1_burst", False), ("s6_human", True)):
        events = shapes[cid] + [tick(LATER + DAY_MS)]
        ex = explain_records(load_settings(env={}), cid, [Fact(t, t, 0, i, r) for i, (t, r) in enumerate(events)])
        sunset_rows = [r.text for r in ex.rows if r.text.startswith("sunset:")]
        assert sunset_rows[:2] == ["sunset: leaves marketing on 2027-05-05 unless they order or click",
                                   "sunset: left marketing on 2027-05-05 (no order or click for 180 days)"], sunset_rows
        assert (len(sunset_rows) == 3) == back, sunset_rows  # the click's verdict: leaves marketing again later
        assert ex.sunset is not None and ex.sunset[0].startswith("leaves" if back else "left"), ex.sunset


def test_clicks_judged_a_bots_outright_are_not_kept_in_the_customer_record():
    from streams.core.state import encode

    scanner = "Mimecast Scanner"
    events = [customer("scanner", T0), customer("control", T0)]
    for m in range(8):  # 8 mails, every one of their 30 links clicked by a scanner 20 s after delivery
        sent = LATER + m * DAY_MS
        events += [feedback(cid, sent, "delivered", message_id=f"{cid}-m{m}") for cid in ("scanner", "control")]
        events += [feedback("scanner", sent + 20_000 + j, "clicked", message_id=f"scanner-m{m}",
                            link=f"https://shop.example.com/p/{j}", user_agent=scanner) for j in range(30)]
    _, eng = run(sorted(events, key=lambda e: e[1]["occurred_at"]), until=LATER + 9 * DAY_MS)
    bot, control = eng.customers["scanner"], eng.customers["control"]
    assert bot.recent_clicks == [] and bot.sunset_since == SUNSET
    bot.seen = control.seen = {}  # the ids kept to drop duplicates (every event's, for the dedupe window) aside,
    assert len(encode(bot)) == len(encode(control))  # the same record as a customer nobody clicked for


def test_a_bots_click_within_the_window_of_a_waiting_click_still_makes_it_a_burst():
    person_like = feedback("a", LATER + 60_000, "clicked", message_id="m1", link="https://shop.example.com/a",
                           user_agent=CHROME)
    scanner = [feedback("a", LATER + 60_300 + 300 * j, "clicked", message_id="m1",
                        link=f"https://shop.example.com/{p}", user_agent="Mimecast Scanner") for j, p in enumerate("bc")]
    events = [customer("a", T0), feedback("a", LATER, "delivered", message_id="m1"), person_like, *scanner]
    _, eng = run(events, until=LATER + DAY_MS)
    assert eng.customers["a"].sunset_since == SUNSET  # three links in 0.6 s: a burst, as the report says
    assert eng.customers["a"].recent_clicks == []  # decided: nothing left to keep


def test_a_marketing_step_due_while_a_persons_click_waits_for_its_verdict_goes_once_the_click_brings_them_back():
    due = LATER + HOUR_MS  # step 1 of a cart at LATER; the customer is sunset since SUNSET
    clicked = due - 500  # a person's click half a second before: its burst verdict comes 2 s after it

    def step_one(*clicks: tuple[str, dict]) -> tuple[list[int], PartitionEngine]:
        events = [customer("a", T0), feedback("a", LATER - DAY_MS, "delivered", message_id="m1"),
                  cart("a", LATER), *clicks]
        commands, eng = run(sorted(events, key=lambda e: e[1]["occurred_at"]), until=due + HOUR_MS)
        return [c["send_at"] for c in commands if c["flow"] == "abandoned_cart" and c["step"] == 1], eng

    sent, eng = step_one(feedback("a", clicked, "clicked", message_id="m1", link="https://shop.example.com/a",
                                  user_agent=CHROME))
    assert sent == [clicked + 2_002]  # 1 ms after the verdict brought the customer back
    assert "dropped:abandoned_cart:sunset" not in eng.stats and eng.stats["sunset:returned"] == 1
    burst = [feedback("a", clicked + 300 * j, "clicked", message_id="m1", link=f"https://shop.example.com/{p}",
                      user_agent=CHROME) for j, p in enumerate("abc")]
    sent, eng = step_one(*burst)
    assert sent == [] and eng.stats["dropped:abandoned_cart:sunset"] == 1  # a bot's burst: still sunset
