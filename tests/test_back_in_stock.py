"""Back in stock through the pure engine: a global inventory topic, a SKU-keyed partition table, one mail."""

from __future__ import annotations

import json

from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, load_settings
from streams.core.engine import PartitionEngine
from tests.core_events import ITEMS, T0, cart, customer, inventory, order, run_engine as run, tick

SOLD_OUT = [{**ITEMS[0], "stock": 0}]
OTHER = [{**ITEMS[0], "sku": "CAP", "name": "Wool cap"}]


def bis(cmds):
    return [c for c in cmds if c["flow"] == "back_in_stock"]


def test_a_sold_out_line_in_an_abandoned_cart_brings_one_mail_when_the_sku_is_restocked():
    restock = T0 + 4 * DAY_MS  # after the cart series (its last step at +72 h, the cap 20 h)
    cmds, eng = run([customer("a"), cart("a", T0, items=SOLD_OUT), tick(restock - HOUR_MS),
                     inventory("MUG", restock, "restocked", quantity=5, name="Enamel mug, blue"),
                     inventory("MUG", restock + DAY_MS, "out_of_stock"),
                     inventory("MUG", restock + 2 * DAY_MS, "restocked")], until=restock + 5 * DAY_MS)
    mails = bis(cmds)
    assert len(mails) == 1 and mails[0]["send_at"] == restock and mails[0]["to"] == "a@example.com"
    ctx = json.loads(mails[0]["context"])
    # named as the customer's own cart named it (their language), not as the inventory feed does
    assert ctx["product_name"] == "Enamel mug" and ctx["sku"] == "MUG" and ctx["unsubscribe_url"]
    assert mails[0]["category"] == "marketing" and "stock" not in ctx["items"][0]
    assert [c["step"] for c in cmds if c["flow"] == "abandoned_cart"] == [1, 2, 3]  # the cart series as before


def test_a_restock_that_arrives_before_the_sold_out_cart_activity_settles_still_brings_the_mail():
    # the cart activity waits out the grace period; the restock, 5 minutes later, is applied on arrival
    cmds, _ = run([customer("a"), cart("a", T0, items=SOLD_OUT), inventory("MUG", T0 + 5 * MINUTE_MS, "restocked"),
                   tick(T0 + 15 * MINUTE_MS)], until=T0 + 5 * DAY_MS)
    assert [c["send_at"] - T0 for c in bis(cmds)] == [5 * MINUTE_MS]  # due when the activity settled


def test_an_out_of_stock_record_marks_the_customers_whose_open_cart_holds_the_sku_and_no_one_else():
    cmds, eng = run([customer("a"), customer("b"), cart("a", T0), cart("b", T0, items=OTHER),
                     tick(T0 + 2 * HOUR_MS), inventory("MUG", T0 + 2 * HOUR_MS, "out_of_stock"),
                     tick(T0 + 4 * DAY_MS), inventory("MUG", T0 + 4 * DAY_MS, "restocked")],
                    until=T0 + 5 * DAY_MS)
    assert [c["customer_id"] for c in bis(cmds)] == ["a"]
    assert eng.stats["global:inventory"] == 2


def test_inventory_records_never_move_the_partition_clock_and_a_stale_or_repeated_one_changes_nothing():
    eng = PartitionEngine(load_settings(env={}), 0)
    run([customer("a"), cart("a", T0, items=SOLD_OUT)], eng=eng)
    clock = eng.clock_ms
    run([inventory("MUG", T0 + 30 * DAY_MS, "price_changed", price="9.00", event_id="p1")], eng=eng)
    assert eng.clock_ms == clock  # a record far ahead of this partition does not drag its clock along
    run([inventory("MUG", T0 + DAY_MS, "restocked"),  # older than the price change: stale
         inventory("MUG", T0 + 30 * DAY_MS, "price_changed", price="9.00", event_id="p1")], eng=eng)
    assert eng.stats["stale:inventory"] == 1 and eng.stats["duplicate:inventory"] == 1
    cmds, _ = run([], until=T0 + 40 * DAY_MS, eng=eng)
    assert bis(cmds) == []  # the stale restock woke no one


def test_the_mail_respects_consent_the_frequency_cap_and_quiet_hours():
    no_consent, eng = run([customer("n", opt_in=False), cart("n", T0, items=SOLD_OUT), tick(T0 + 4 * DAY_MS),
                           inventory("MUG", T0 + 4 * DAY_MS, "restocked")], until=T0 + 5 * DAY_MS)
    assert bis(no_consent) == [] and eng.stats["dropped:back_in_stock:no_consent"] == 1
    # restocked 2 h after the cart's first step (10:00 UTC): the 20 h cap holds it until 06:00, quiet hours
    # until 08:00
    capped, _ = run([customer("c"), cart("c", T0, items=SOLD_OUT), tick(T0 + 3 * HOUR_MS),
                     inventory("MUG", T0 + 3 * HOUR_MS, "restocked")], until=T0 + 5 * DAY_MS)
    assert [c["send_at"] - T0 for c in bis(capped)] == [23 * HOUR_MS]
    # … and a restock at 23:00 local waits for 08:00
    night = T0 + 14 * HOUR_MS + 4 * DAY_MS  # T0 is 09:00 UTC
    quiet, _ = run([customer("q"), cart("q", T0, items=SOLD_OUT), tick(night),
                    inventory("MUG", night, "restocked")], until=night + DAY_MS)
    assert [c["send_at"] - night for c in bis(quiet)] == [9 * HOUR_MS]


def test_a_mail_already_due_is_not_reset_and_a_sku_sold_out_again_before_it_goes_waits_for_the_next_restock():
    # the inventory runs ahead of this partition's clock: restock, sold out, restock all arrive before the first is due
    restock = T0 + 4 * DAY_MS
    cmds, _ = run([customer("a"), cart("a", T0, items=SOLD_OUT), tick(restock - HOUR_MS),
                   inventory("MUG", restock, "restocked"), inventory("MUG", restock + 5 * MINUTE_MS, "out_of_stock")],
                  until=restock + DAY_MS)
    assert bis(cmds) == []  # sold out again when the mail was due: it waits
    later, _ = run([customer("b"), cart("b", T0, items=SOLD_OUT), tick(restock - HOUR_MS),
                    inventory("MUG", restock, "restocked"), inventory("MUG", restock + DAY_MS, "out_of_stock"),
                    inventory("MUG", restock + 2 * DAY_MS, "restocked")], until=restock + 5 * DAY_MS)
    assert [c["send_at"] for c in bis(later)] == [restock]  # in stock again when it was due: the first restock's


def test_an_order_with_the_sku_or_an_unsubscribe_ends_the_wait():
    bought, _ = run([customer("o"), cart("o", T0, items=SOLD_OUT), order("o", T0 + HOUR_MS),
                     tick(T0 + 4 * DAY_MS), inventory("MUG", T0 + 4 * DAY_MS, "restocked")], until=T0 + 5 * DAY_MS)
    assert bis(bought) == []
    from tests.core_events import feedback
    gone, _ = run([customer("u"), cart("u", T0, items=SOLD_OUT), feedback("u", T0 + 30 * MINUTE_MS, "unsubscribed"),
                   tick(T0 + 4 * DAY_MS), inventory("MUG", T0 + 4 * DAY_MS, "restocked")], until=T0 + 5 * DAY_MS)
    assert bis(gone) == []


def test_the_stock_table_persists_under_its_own_key_and_a_restored_engine_continues_the_same():
    head = [customer("a"), cart("a", T0), tick(T0 + 2 * HOUR_MS), inventory("MUG", T0 + 2 * HOUR_MS, "out_of_stock",
                                                                           name="Enamel mug")]
    tail = [tick(T0 + 4 * DAY_MS), inventory("MUG", T0 + 4 * DAY_MS, "restocked")]
    whole, _ = run(head + tail, until=T0 + 5 * DAY_MS)
    first, a = run(head)
    changes = a.drain_changes()
    assert "\x03stock:MUG" in changes and json.loads(changes["\x03stock:MUG"])["out"] is True
    b = PartitionEngine(load_settings(env={}), 0)
    for key, value in changes.items():
        b.restore(key, value)
    b.restored()
    rest, _ = run(tail, until=T0 + 5 * DAY_MS, eng=b)
    assert first + rest == whole and len(bis(whole)) == 1
