"""Browse abandonment through the pure engine: product views in, one guarded mail out (no broker)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sinks.rendering import Renderer
from streams.kafka.io import produce_records, read_topic
from streams.runtime.limits import admit, clamp
from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, LimitSettings
from tests.core_events import T0, cart, customer, feedback, order, run_engine as run, tick, view
from tests.support.runtime import running_processor

SHOP = "https://shop.example.com"


def browse(cmds):
    return [c for c in cmds if c["flow"] == "browse_abandonment"]


def test_one_mail_two_hours_after_the_last_view_with_the_viewed_product():
    first = view("ann", T0, "TEE", "Organic tee")
    cmds, eng = run([customer("ann"), first], until=T0 + DAY_MS)
    assert [(c["step"], c["send_at"] - T0) for c in cmds] == [(1, 2 * HOUR_MS)]
    mail = cmds[0]
    assert mail["flow"] == "browse_abandonment" and mail["category"] == "marketing"
    assert mail["to"] == "ann@example.com" and mail["trigger_event_id"] == first[1]["event_id"]
    ctx = json.loads(mail["context"])
    assert ctx["items"] == [{"sku": "TEE", "name": "Organic tee", "price": "25.00", "image_url": f"{SHOP}/i/TEE.jpg",
                             "url": f"{SHOP}/p/TEE"}]
    assert ctx["product_url"] == f"{SHOP}/p/TEE" and ctx["currency"] == "EUR" and ctx["unsubscribe_url"]
    assert eng.customers["ann"].browse.run is None and eng.customers["ann"].browse.last_due == T0 + 2 * HOUR_MS


def test_a_later_view_retimes_the_mail_and_puts_its_product_first_keeping_three_distinct_products():
    cmds, _ = run([customer("ann"), view("ann", T0, "A"), view("ann", T0 + 20 * MINUTE_MS, "B"),
                   view("ann", T0 + 40 * MINUTE_MS, "C"), view("ann", T0 + 50 * MINUTE_MS, "D"),
                   view("ann", T0 + HOUR_MS, "B")], until=T0 + DAY_MS)
    assert [c["send_at"] - T0 for c in cmds] == [3 * HOUR_MS]  # 2 h after the last view, not the first
    ctx = json.loads(cmds[0]["context"])
    assert [it["sku"] for it in ctx["items"]] == ["B", "D", "C"] and ctx["product_url"] == f"{SHOP}/p/B"


def test_adding_to_the_cart_after_viewing_ends_it_and_the_cart_series_takes_over():
    _, eng = run([customer("bob"), view("bob", T0), cart("bob", T0 + 30 * MINUTE_MS)], until=T0 + HOUR_MS)
    assert eng.customers["bob"].browse.run is None  # ended when the cart activity settled, before the mail was due
    cmds, eng = run([], until=T0 + DAY_MS, eng=eng)
    assert browse(cmds) == [] and [c["flow"] for c in cmds][:1] == ["abandoned_cart"]


def test_an_order_after_viewing_ends_it():
    cmds, _ = run([customer("bob"), view("bob", T0), order("bob", T0 + 30 * MINUTE_MS)], until=T0 + DAY_MS)
    assert browse(cmds) == [] and [c["flow"] for c in cmds] == ["order_confirmation"]


def test_a_cleared_cart_does_not_end_it():
    cmds, _ = run([customer("cid"), view("cid", T0),
                   cart("cid", T0 + 30 * MINUTE_MS, "cart_cleared", items=[])], until=T0 + DAY_MS)
    assert [c["send_at"] - T0 for c in browse(cmds)] == [2 * HOUR_MS]


def test_a_late_add_to_cart_still_ends_it():
    # the view settles; the cart activity 20 minutes after it arrives behind the watermark
    _, eng = run([customer("dan"), view("dan", T0), tick(T0 + HOUR_MS), cart("dan", T0 + 20 * MINUTE_MS)])
    assert eng.stats["late_applied:carts"] == 1 and eng.customers["dan"].browse.run is None
    cmds, eng = run([], until=T0 + DAY_MS, eng=eng)
    assert browse(cmds) == []


def test_a_late_view_older_than_an_order_does_not_start_a_run():
    cmds, eng = run([customer("eve"), order("eve", T0 + HOUR_MS), tick(T0 + 3 * HOUR_MS), view("eve", T0)],
                    until=T0 + DAY_MS)
    assert browse(cmds) == [] and eng.stats["stale:product_views"] == 1


def test_a_late_view_joins_the_run_without_retiming_it():
    cmds, _ = run([customer("fay"), view("fay", T0, "A"), view("fay", T0 + HOUR_MS, "B"),
                   tick(T0 + HOUR_MS + 20 * MINUTE_MS), view("fay", T0 + 30 * MINUTE_MS, "C")], until=T0 + DAY_MS)
    mails = browse(cmds)
    assert [c["send_at"] - T0 for c in mails] == [3 * HOUR_MS]
    assert [it["sku"] for it in json.loads(mails[0]["context"])["items"]] == ["B", "A", "C"]


def test_the_mail_is_dropped_while_the_cart_series_has_a_step_to_send_and_goes_once_it_is_over():
    cmds, eng = run([customer("gus"), cart("gus", T0), view("gus", T0 + 2 * HOUR_MS, "HAT")], until=T0 + DAY_MS)
    assert browse(cmds) == [] and eng.stats["dropped:browse_abandonment:cart_series"] == 1
    # after the series' last step (+72 h) the cart is still open, but the series has nothing left to send
    later = T0 + 4 * DAY_MS
    cmds, eng = run([view("gus", later, "HAT")], until=later + DAY_MS, eng=eng)
    assert [c["send_at"] - later for c in browse(cmds)] == [2 * HOUR_MS]


def test_at_most_one_browse_mail_per_customer_per_week():
    events = [customer("hal"), view("hal", T0), view("hal", T0 + 2 * DAY_MS), view("hal", T0 + 6 * DAY_MS),
              view("hal", T0 + 7 * DAY_MS + 3 * HOUR_MS)]
    cmds, eng = run(events, until=T0 + 10 * DAY_MS)
    assert [c["send_at"] - T0 for c in browse(cmds)] == [2 * HOUR_MS, 7 * DAY_MS + 5 * HOUR_MS]
    assert eng.stats["dropped:browse_abandonment:weekly_cap"] == 2


def test_no_consent_means_no_mail_and_the_drop_is_counted():
    cmds, eng = run([customer("ida", opt_in=False), view("ida", T0)], until=T0 + DAY_MS)
    assert cmds == [] and eng.stats["dropped:browse_abandonment:no_consent"] == 1
    assert eng.customers["ida"].browse.last_due is None  # nothing went out: the weekly cap is not used up


def test_an_unsubscribe_clears_the_run():
    cmds, eng = run([customer("jo"), view("jo", T0), feedback("jo", T0 + 30 * MINUTE_MS, "unsubscribed")],
                    until=T0 + DAY_MS)
    assert cmds == [] and eng.customers["jo"].browse.run is None


def test_the_view_is_a_fact_of_event_time_not_of_arrival_order():
    first, second = view("kim", T0, "A"), view("kim", T0 + 5 * MINUTE_MS, "B")  # within the grace period
    a, _ = run([customer("kim"), first, second], until=T0 + DAY_MS)
    b, _ = run([customer("kim"), second, first], until=T0 + DAY_MS)
    assert len(a) == 1 and a == b


def test_a_view_is_admitted_and_clamped_like_every_customer_record():
    limits = LimitSettings()
    _, rec = view("nia", T0, name="N" * 500, url="https://shop.example.com/p/" + "x" * 3000)
    assert admit(limits, "product_views", b"nia", 100, rec) is None
    assert admit(limits, "product_views", b"other", 100, rec).reason == "key_mismatch"
    assert clamp(limits, rec) and rec["name"] == "N" * limits.max_name_chars and rec["url"] is None


def _mail_with_cross_sell() -> dict[str, Any]:
    items = [{"sku": "TEE", "name": "Organic tee", "price": "25.00", "quantity": 1},
             {"sku": "CAP", "name": "Wool cap", "price": "19.00", "quantity": 1}]
    cmds, _ = run([customer("lu"), customer("mo"), order("mo", T0 - HOUR_MS, items=items, total="44.00"),
                   view("lu", T0, "TEE", "Organic tee")], until=T0 + DAY_MS)
    mails = browse(cmds)
    assert len(mails) == 1
    return mails[0]


def test_the_mail_suggests_what_is_bought_together_with_the_viewed_products():
    ctx = json.loads(_mail_with_cross_sell()["context"])
    assert [s["sku"] for s in ctx["cross_sell"]] == ["CAP"]


@pytest.mark.parametrize("lang", Renderer().locales)
def test_the_engine_context_renders_in_every_shipped_locale(lang):
    mail = dict(_mail_with_cross_sell(), locale=lang)
    email = Renderer().render(mail, "https://shop.example.com/unsubscribe?c=x")
    assert "Organic tee" in email.subject and "Organic tee" in email.text and "Wool cap" in email.text
    assert f"{SHOP}/p/TEE" in email.html and email.locale == lang


@pytest.mark.integration
def test_a_product_view_on_shop_product_views_brings_a_browse_mail_through_the_worker(kafka, settings):
    settings.worker.tick_interval_s = 0.3
    settings.worker.late_grace_ms = 500
    settings.flows.browse_abandonment.delay_ms = 1500
    settings.flows.guards.frequency_cap_ms = 0
    settings.flows.guards.quiet_start_hour = settings.flows.guards.quiet_end_hour = 0
    t = settings.topics
    live_now = int(time.time() * 1000)
    with running_processor(settings, kafka):
        produce_records(settings, kafka, t.name("customers"), "CustomerEvent", [customer("bv-1", at=live_now)[1]])
        produce_records(settings, kafka, t.name("product_views"), "ProductViewed",
                        [view("bv-1", int(time.time() * 1000), "TEE", "Organic tee")[1]])
        deadline = time.monotonic() + 30
        while True:
            got = [r.decoded().record for r in read_topic(kafka, t.name("commands"), idle_s=1.0, timeout_s=10)]
            if got or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert [(c["flow"], c["step"], c["customer_id"]) for c in got] == [("browse_abandonment", 1, "bv-1")]
    assert json.loads(got[0]["context"])["items"][0]["name"] == "Organic tee"
