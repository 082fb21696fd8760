"""Sunset: a customer with no human click and no order for 180 days gets no more marketing (a counted
skip), is in the audience ``sunset`` for ad platforms to exclude, and a click or an order brings them back."""

from __future__ import annotations

import json
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


def _as_format_3(blob: bytes) -> bytes:
    """A customer record as the release before ``sunset_pending_from`` wrote it."""
    record = json.loads(blob)
    record.pop("spf", None)
    record["v"] = 3
    return json.dumps(record).encode()


def test_a_state_written_in_format_3_is_sunset_when_that_release_would_have_sunset_it():
    before = engine()
    run_engine([customer("a", T0), customer("b", T0, opt_in=False)], until=T0 + DAY_MS, eng=before)
    changes = before.drain_changes()
    after = engine()
    for key, value in changes.items():
        after.restore(key, _as_format_3(value) if key in ("a", "b") and value is not None else value)
    after.restored()
    assert after.customers["a"].sunset_pending_from == T0
    run_engine([tick(SUNSET + DAY_MS)], until=SUNSET + 2 * DAY_MS, eng=after)
    assert after.stats["sunset:entered"] == 1  # ``a`` only: ``b`` never gave consent
    assert after.customers["a"].sunset_since == SUNSET and after.customers["a"].sunset_pending_from is None


def test_a_state_with_a_sunset_pending_restored_with_sunset_switched_off_is_never_sunset():
    before = engine()
    run_engine([customer("a", T0)], until=T0 + DAY_MS, eng=before)
    off = engine(enabled=False)
    for key, value in before.drain_changes().items():
        off.restore(key, value)
    off.restored()
    commands, _ = run_engine([cart("a", SUNSET + DAY_MS)], until=SUNSET + 5 * DAY_MS, eng=off)
    assert len(carts(commands)) == 3 and "sunset:entered" not in off.stats
