"""Price drop through the pure engine: views and carts watch a product at the price the customer saw; a cut
on the global inventory topic in that currency brings one guarded mail (no broker)."""

from __future__ import annotations

import json

import pytest

from sinks.rendering import Renderer
from sinks.samples import FULL, MINIMAL, command
from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, load_settings
from streams.core.engine import PartitionEngine
from streams.core.state import decode_customer, encode
from tests.core_events import (ITEMS, T0, cart, customer, feedback, inventory, order, run_engine as run, tick,
                               view)

CUT = T0 + HOUR_MS


def drops(cmds):
    return [c for c in cmds if c["flow"] == "price_drop"]


def test_a_viewed_product_that_gets_cheaper_brings_one_mail_with_both_prices():
    cmds, eng = run([customer("a"), customer("b"), view("a", T0, sku="JKT", price="149.00"),
                     view("b", T0, sku="CAP"), tick(CUT),
                     inventory("JKT", CUT, "price_changed", price="119.00", currency="EUR", name="Waxed jacket"),
                     inventory("JKT", CUT + DAY_MS, "price_changed", price="99.00", currency="EUR")],
                    until=CUT + 3 * DAY_MS)
    (mail,) = drops(cmds)
    assert mail["customer_id"] == "a" and mail["send_at"] == CUT and mail["category"] == "marketing"
    ctx = json.loads(mail["context"])
    assert (ctx["price"], ctx["previous_price"], ctx["currency"]) == ("119.00", "149.00", "EUR")
    assert ctx["product_name"] == "Waxed jacket" and ctx["items"][0]["price"] == "119.00" and ctx["unsubscribe_url"]
    assert eng.stats["command:price_drop"] == 1  # one mail per watch: the second cut finds nothing watched


@pytest.mark.parametrize("price, currency", [("119.00", "USD"), ("146.00", "EUR"), ("159.00", "EUR")],
                         ids=["other_currency", "cut_below_min_percent", "price_rise"])
def test_a_change_in_another_currency_a_small_cut_or_a_rise_sends_nothing(price, currency):
    cmds, _ = run([customer("a"), view("a", T0, sku="JKT", price="149.00"), tick(CUT),
                   inventory("JKT", CUT, "price_changed", price=price, currency=currency)], until=CUT + 3 * DAY_MS)
    assert drops(cmds) == []


def test_a_carted_product_is_watched_at_the_cart_line_price():
    cmds, _ = run([customer("a"), cart("a", T0), tick(CUT),
                   inventory("MUG", CUT, "price_changed", price="11.00", currency="EUR")], until=CUT + 5 * DAY_MS)
    (mail,) = drops(cmds)
    ctx = json.loads(mail["context"])
    assert (ctx["previous_price"], ctx["price"], ctx["product_name"]) == (ITEMS[0]["price"], "11.00", "Enamel mug")


def test_buying_the_product_ends_its_watch():
    cmds, eng = run([customer("a"), view("a", T0, sku="MUG", price="20.00"), order("a", T0 + MINUTE_MS),
                     tick(CUT), inventory("MUG", CUT, "price_changed", price="11.00", currency="EUR")],
                    until=CUT + 3 * DAY_MS)
    assert drops(cmds) == [] and eng.customers["a"].price_drop is None


def test_the_marketing_guards_apply_without_consent_no_mail_goes():
    cmds, eng = run([customer("a", opt_in=False), view("a", T0, sku="JKT", price="149.00"), tick(CUT),
                     inventory("JKT", CUT, "price_changed", price="99.00", currency="EUR")], until=CUT + 3 * DAY_MS)
    assert drops(cmds) == [] and eng.stats["dropped:price_drop:no_consent"] == 1


def test_a_suppression_ends_every_watch():
    _, eng = run([customer("a"), view("a", T0, sku="JKT"), view("a", T0 + 1, sku="CAP"),
                  feedback("a", T0 + 2, "unsubscribed"), tick(CUT)])
    assert eng.customers["a"].price_drop is None


def test_a_cut_that_arrives_before_the_view_settles_still_brings_the_mail():
    # the view waits out the grace period; the inventory record, 5 minutes later, is applied on arrival
    cmds, _ = run([customer("a"), view("a", T0, sku="JKT", price="149.00"),
                   inventory("JKT", T0 + 5 * MINUTE_MS, "restocked", quantity=3),
                   inventory("JKT", T0 + 6 * MINUTE_MS, "price_changed", price="99.00", currency="EUR"),
                   tick(T0 + HOUR_MS)], until=T0 + 3 * DAY_MS)
    (mail,) = drops(cmds)
    assert json.loads(mail["context"])["price"] == "99.00"


def test_a_price_back_up_before_the_mail_is_due_sends_nothing_and_keeps_watching():
    night = T0 + 13 * HOUR_MS  # 22:00 UTC: quiet hours defer the mail to the morning
    cmds, eng = run([customer("a"), view("a", T0, sku="JKT", price="149.00"), tick(night),
                     inventory("JKT", night, "price_changed", price="99.00", currency="EUR"),
                     inventory("JKT", night + HOUR_MS, "price_changed", price="149.00", currency="EUR")],
                    until=night + DAY_MS)
    assert drops(cmds) == [] and eng.stats["price_drop:price_back_up"] == 1
    assert "JKT" in eng.customers["a"].price_drop.watched


def test_only_the_most_recently_seen_products_are_watched():
    settings = load_settings(env={})
    settings.flows.price_drop.max_watched = 2
    eng = PartitionEngine(settings, 0)
    run([customer("a")] + [view("a", T0 + i, sku=f"S{i}") for i in range(4)] + [tick(CUT)], eng=eng)
    assert sorted(eng.customers["a"].price_drop.watched) == ["S2", "S3"]
    assert eng.stats["price_drop:forgotten"] == 2


def test_the_watch_is_stored_under_short_names_and_restores():
    _, eng = run([customer("a"), view("a", T0, sku="JKT", price="149.00"), tick(CUT)])
    blob = encode(eng.customers["a"])
    assert b'"pd":{"w":{"JKT":{' in blob and b'"p":"149.00"' in blob
    assert decode_customer(blob).price_drop.watched["JKT"].price == "149.00"


@pytest.mark.parametrize("lang", ["de", "en", "it", "pl", "th", "tr"])
def test_the_mail_renders_both_prices_in_every_shop_language(lang):
    for ctx in (FULL[("price_drop", 1)], MINIMAL[("price_drop", 1)]):
        email = Renderer().render(command("price_drop", 1, ctx, locale=lang), "https://shop.example.com/u")
        assert email.locale == lang and email.subject and email.preheader
        digits = {"de": ",", "it": ",", "pl": ",", "tr": ","}.get(lang, ".")
        assert f"{ctx['price'][:-3]}{digits}00" in email.text and f"{ctx['previous_price'][:-3]}{digits}00" in email.text
