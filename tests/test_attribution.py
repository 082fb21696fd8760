"""Attribution on hand-built cases, experiment lift, report outputs, and export round trip."""

from __future__ import annotations

import json
from decimal import Decimal

import fastavro
import pytest

from schemas import serde
from streams.config import DAY_MS, HOUR_MS, MetricsSettings
from streams.kafka.io import produce_records
from streams.analytics.attribution import Attribution, window_label
from streams.analytics.experiments import lifts, two_means, two_proportion
from streams.analytics.report import build, from_avro_dir, write_chart, write_csv, write_json

T = 1_790_000_000_000


def cmd(cid: str, customer: str = "ann", at: int = T, flow: str = "abandoned_cart", step: int = 1,
        variant: str = "control") -> tuple[str, dict]:
    return "command", {"command_id": cid, "customer_id": customer, "flow": flow, "step": step, "variant": variant,
                       "send_at": at, "category": "marketing"}


def sent(cid: str, customer: str = "ann", at: int = T, flow: str = "abandoned_cart", step: int = 1,
         variant: str = "control") -> tuple[str, dict]:
    return "outcome", {"command_id": cid, "customer_id": customer, "outcome": "sent", "flow": flow, "step": step,
                       "variant": variant, "occurred_at": at + 1}


def fb(cid: str, kind: str, at: int, customer: str = "ann", ua: str | None = None, ip: str | None = None,
       link: str | None = None) -> tuple[str, dict]:
    return "feedback", {"command_id": cid, "customer_id": customer, "type": kind, "occurred_at": at,
                        "message_id": f"m-{cid}", "user_agent": ua, "ip_address": ip, "link": link}


def order(at: int, total: str = "50.00", customer: str = "ann", attributed: str | None = None) -> tuple[str, dict]:
    return "order", {"customer_id": customer, "occurred_at": at, "type": "placed", "total": total,
                     "attributed_command_id": attributed}


def row(a: Attribution, step: int = 1, variant: str = "control", flow: str = "abandoned_cart"):
    return next(r for r in a.table() if (r.flow, r.step, r.variant) == (flow, step, variant))


def test_a_click_then_an_order_inside_the_window_converts_and_recovers_revenue():
    a = Attribution().feed([cmd("c1"), sent("c1"), fb("c1", "delivered", T + 10), fb("c1", "clicked", T + HOUR_MS),
                            order(T + 4 * DAY_MS, "80.00")])
    r = row(a)
    assert (r.sent, r.delivered, r.opened, r.clicked, r.converted) == (1, 1, 1, 1, 1)
    assert r.revenue == Decimal("80.00")


def test_an_order_outside_the_click_window_does_not_convert():
    a = Attribution().feed([cmd("c1"), sent("c1"), fb("c1", "clicked", T + HOUR_MS), order(T + 6 * DAY_MS)])
    assert row(a).converted == 0 and row(a).revenue == 0


def test_by_default_the_model_is_last_click_and_an_open_converts_nothing():
    a = Attribution().feed([cmd("c1"), sent("c1"), fb("c1", "opened", T + HOUR_MS), order(T + 2 * HOUR_MS)])
    assert (row(a).human_opened, row(a).converted) == (1, 0)
    assert window_label(MetricsSettings()) == "last click, 5 days"


def test_with_opens_attributing_a_human_open_attributes_within_one_day():
    opens = MetricsSettings(attribute_opens=True)
    inside = Attribution(opens).feed([cmd("c1"), sent("c1"), fb("c1", "opened", T), order(T + 20 * HOUR_MS)])
    outside = Attribution(opens).feed([cmd("c1"), sent("c1"), fb("c1", "opened", T), order(T + 30 * HOUR_MS)])
    assert row(inside).converted == 1 and row(outside).converted == 0
    assert window_label(opens) == "last human touch: click 5 days, open 1 day"


def test_with_two_emails_the_last_touch_wins():
    a = Attribution().feed([cmd("s1", step=1), sent("s1", step=1), cmd("s2", at=T + DAY_MS, step=2),
                            sent("s2", at=T + DAY_MS, step=2), fb("s1", "clicked", T + HOUR_MS),
                            fb("s2", "clicked", T + DAY_MS + HOUR_MS), order(T + 2 * DAY_MS, "30.00")])
    assert row(a, 1).converted == 0 and row(a, 2).converted == 1 and row(a, 2).revenue == Decimal("30.00")


def test_the_orders_attributed_command_id_wins_over_the_last_touch():
    a = Attribution().feed([cmd("s1", step=1), sent("s1", step=1), cmd("s2", step=2), sent("s2", step=2),
                            fb("s2", "clicked", T + HOUR_MS), order(T + 2 * HOUR_MS, attributed="s1")])
    assert row(a, 1).converted == 1 and row(a, 2).converted == 0


def test_holdout_customers_are_the_control_group_and_lift_has_a_confidence_interval():
    events = []
    for i in range(200):
        c = f"v{i}"
        events += [cmd(f"a{i}", c, variant="A"), sent(f"a{i}", c, variant="A"), fb(f"a{i}", "clicked", T + 1, c)]
        if i < 40:  # 20 % of the variant converts
            events.append(order(T + DAY_MS, customer=c))
    for i in range(200):
        c = f"h{i}"
        events.append(cmd(f"h{i}", c, variant="holdout"))
        if i < 10:  # 5 % of the holdout orders anyway within the window
            events.append(order(T + DAY_MS, customer=c))
        if i == 10:  # an order long after the would-be send does not count
            events.append(order(T + 30 * DAY_MS, customer=c))
    a = Attribution().feed(events)
    control = row(a, variant="holdout")
    assert (control.sent, control.assigned, control.ordered, control.converted) == (200, 200, 10, 0)
    (lift,) = lifts(a)
    assert lift.variant == "A" and round(lift.diff, 3) == 0.15 and lift.significant
    assert lift.ci_low < 0.15 < lift.ci_high and lift.relative_lift == pytest.approx(3.0)


def test_revenue_per_recipient_and_incremental_revenue_over_the_holdout_have_an_interval():
    events = []
    for i in range(200):
        c = f"v{i}"
        events += [cmd(f"a{i}", c, variant="A"), sent(f"a{i}", c, variant="A"), fb(f"a{i}", "clicked", T + HOUR_MS, c)]
        if i < 40:
            events.append(order(T + DAY_MS, "50.00", customer=c))
    for i in range(200):
        events.append(cmd(f"h{i}", f"h{i}", variant="holdout"))
        if i < 10:
            events.append(order(T + DAY_MS, "50.00", customer=f"h{i}"))
    a = Attribution().feed(events)
    assert (row(a, variant="A").rpr, row(a, variant="holdout").rpr_in_window) == (Decimal("10"), Decimal("2.5"))
    (lift,) = lifts(a)
    # Welch: variances 80,000/199 and 23,750/199 of the per-recipient revenue, 200 recipients each
    half = 1.959964 * (80_000 / 199 / 200 + 23_750 / 199 / 200) ** 0.5
    assert (lift.rpr, lift.control_rpr, lift.rpr_diff) == (10.0, 2.5, 7.5)
    assert (lift.rpr_ci_low, lift.rpr_ci_high) == (pytest.approx(7.5 - half), pytest.approx(7.5 + half))
    revenue, low, high = lift.incremental_revenue
    assert revenue == 1500.0 and low == pytest.approx(200 * (7.5 - half)) and lift.revenue_significant
    assert lift.incremental_conversions[0] == pytest.approx(30.0)  # 40 orders where the holdout's rate gives 10


def test_without_a_difference_the_revenue_interval_contains_zero():
    diff, lo, hi = two_means(100.0, 10_000.0, 50, 100.0, 10_000.0, 50)
    assert diff == 0 and lo < 0 < hi


def test_machine_opens_and_bot_clicks_are_counted_apart_and_convert_nothing():
    link = "https://shop.example.com/{}"
    events = [cmd("c1"), sent("c1"), fb("c1", "delivered", T + 1_000),
              fb("c1", "opened", T + HOUR_MS, ua="Mozilla/5.0", ip="17.58.63.11"),  # Apple's proxy
              fb("c1", "clicked", T + 4_000, link=link.format("cart")),  # seconds after delivery: a scanner
              fb("c1", "clicked", T + 4_100, link=link.format("p/mug")),
              order(T + 2 * HOUR_MS, "40.00")]
    a = Attribution().feed(events)
    r = row(a)
    assert (r.opened, r.human_opened, r.machine_opened) == (1, 0, 1)
    assert (r.clicked, r.human_clicked, r.bot_clicked, r.converted, r.revenue) == (1, 0, 1, 0, 0)
    assert a.engagement == {("opened", "machine", "apple_mpp"): 1, ("clicked", "bot", "soon_after_delivery"): 2}


def test_a_human_click_after_a_scanners_click_converts_the_order_and_counts_the_mail_as_human():
    events = [cmd("c1"), sent("c1"), fb("c1", "delivered", T + 1_000),
              fb("c1", "clicked", T + 3 * HOUR_MS, ua="Mozilla/5.0 (compatible; Mimecast URL Protect)"),
              fb("c1", "clicked", T + 5 * HOUR_MS, ua="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"),
              order(T + 6 * HOUR_MS, "40.00")]
    r = row(Attribution().feed(events))
    assert (r.clicked, r.human_clicked, r.bot_clicked, r.human_opened, r.machine_opened) == (1, 1, 0, 1, 0)
    assert (r.converted, r.revenue, r.as_dict()["human_click_rate"]) == (1, Decimal("40.00"), 1.0)


def test_fed_one_by_one_opens_and_clicks_are_judged_on_what_came_before():
    a = Attribution()
    for kind, rec in [cmd("c1"), sent("c1"), fb("c1", "delivered", T + 1_000), fb("c1", "opened", T + 3_000),
                      fb("c1", "clicked", T + HOUR_MS)]:
        getattr(a, f"add_{kind}")(rec)
    r = row(a)
    assert (r.machine_opened, r.human_clicked) == (0, 1) and a.engagement[("opened", "machine",
                                                                             "soon_after_delivery")] == 1


def test_two_proportion_interval_contains_zero_when_there_is_no_difference():
    diff, lo, hi = two_proportion(10, 100, 10, 100)
    assert diff == 0 and lo < 0 < hi


def test_unsubscribes_bounces_and_suppressions_are_counted_per_step():
    a = Attribution().feed([cmd("c1"), sent("c1"), fb("c1", "unsubscribed", T + 5), cmd("c2", "bob"),
                            sent("c2", "bob"), fb("c2", "bounced", T + 5, "bob"), cmd("c3", "cid"),
                            ("outcome", {"command_id": "c3", "customer_id": "cid", "outcome": "suppressed",
                                         "flow": "abandoned_cart", "step": 1, "variant": "control",
                                         "occurred_at": T})])
    r = row(a)
    assert (r.sent, r.unsubscribes, r.bounces, r.suppressed) == (2, 1, 1, 1)


def test_report_writes_csv_json_and_a_png_chart(tmp_path):
    a = Attribution().feed([cmd("c1"), sent("c1"), fb("c1", "clicked", T + 1), order(T + 2, "9.99"),
                            cmd("h1", "h", variant="holdout")])
    report = build(a)
    write_csv(report, tmp_path / "r.csv")
    write_json(report, tmp_path / "r.json")
    write_chart(report, tmp_path / "r.png")
    header = (tmp_path / "r.csv").read_text().splitlines()[0]
    assert header.startswith("level,flow,step,variant,day,currency,sent,human_click_rate,placed_order_rate,rpr,"
                             "revenue")
    assert "incremental_revenue_ci_low" in header and header.endswith(",attribution,holdout_comparison,verdict,records")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["attribution"] | {"figures": None} == {
        "model": "last click, 5 days", "click_window_ms": 5 * DAY_MS, "open_window_ms": DAY_MS,
        "attribute_opens": False, "figures": None,
        "holdout_comparison": "intent to treat, customers from their first send in the experiment: in both "
                              "groups a customer who orders within 5 days after their first (would-be) send "
                              "counts, clicked or not"}
    control = doc["rows"][0]
    assert (control["variant"], control["revenue"], control["rpr"], control["placed_order_rate"]) == \
        ("control", "9.99", "9.9900", 1.0)
    assert control["incremental_revenue"] == 9.99 and control["attribution"] == "last click, 5 days"
    assert doc["rows"][1]["variant"] == "holdout" and doc["rows"][1]["incremental_revenue"] is None
    assert doc["flows"] == [doc["flows"][0]] and doc["flows"][0]["rpr"] == "9.9900"
    (experiment,) = doc["experiments"]
    assert (experiment["variant"], experiment["revenue_per_customer"], experiment["control_revenue_per_customer"]) == \
        ("control", 9.99, 0.0) and "rpr" not in experiment  # ``rpr`` is the last-click figure of flows and rows
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_export_writes_avro_files_that_fastavro_reads_back_and_the_report_reads(kafka, settings, tmp_path):
    from streams.tools.export import export_topic
    from streams.kafka.topics import ensure_topics, topic_specs

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    orders = [serde.from_json("OrderEvent", {"event_id": f"e{i}", "customer_id": "ann", "occurred_at": T + i * DAY_MS,
                                             "type": "placed", "order_id": f"o{i}", "total": "5.00"}) for i in range(5)]
    produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", orders)
    path, n, skipped = export_topic(kafka, settings.topics.name("orders"), tmp_path, start_ms=T + DAY_MS,
                                    end_ms=T + 4 * DAY_MS)
    assert (n, skipped) == (3, 0)
    with open(path, "rb") as f:
        reader = fastavro.reader(f)
        assert reader.writer_schema["name"] == "shopmail.OrderEvent"
        assert [r["order_id"] for r in reader] == ["o1", "o2", "o3"]
    assert from_avro_dir(settings, tmp_path).table() == []  # orders alone attribute nothing


def test_complaints_unsubscribes_and_bounces_count_on_the_flow_step_and_variant_of_their_command():
    a = Attribution().feed([cmd("c1", variant="B", step=2), sent("c1", variant="B", step=2),
                            fb("c1", "delivered", T + 5), fb("c1", "complained", T + HOUR_MS),
                            cmd("c2", "bob"), sent("c2", "bob"), fb("c2", "delivered", T + 5, "bob"),
                            fb("c2", "unsubscribed", T + HOUR_MS, "bob")])
    complained, other = row(a, step=2, variant="B"), row(a)
    assert (complained.complaints, complained.unsubscribes, complained.complaint_rate) == (1, 0, 1.0)
    assert (other.complaints, other.unsubscribes) == (0, 1)
    assert complained.as_dict()["complaints"] == 1


def test_against_the_holdout_an_order_in_the_window_counts_alike_in_both_groups_whatever_was_clicked():
    a = Attribution().feed([cmd("a1", "ann", variant="A"), sent("a1", "ann", variant="A"),
                            cmd("h1", "hal", variant="holdout"),
                            order(T + DAY_MS, "40.00", customer="ann"), order(T + DAY_MS, "40.00", customer="hal")])
    mailed, held = row(a, variant="A"), row(a, variant="holdout")
    assert (mailed.ordered, mailed.revenue_in_window, held.ordered, held.revenue_in_window) == \
        (1, Decimal("40.00"), 1, Decimal("40.00"))
    assert (mailed.converted, held.converted) == (0, 0)  # no click: nothing attributed by last click
    (lift,) = lifts(a)
    assert (lift.diff, lift.rpr_diff) == (0, 0)


def test_an_order_before_at_or_after_the_window_of_the_send_counts_in_neither_group():
    a = Attribution().feed([cmd("a1", "ann", at=T + DAY_MS, variant="A"), sent("a1", "ann", at=T + DAY_MS, variant="A"),
                            cmd("h1", "hal", at=T + DAY_MS, variant="holdout"),
                            order(T, customer="ann"), order(T, customer="hal"),
                            order(T + DAY_MS, customer="ann"), order(T + DAY_MS, customer="hal"),  # at the send
                            order(T + 7 * DAY_MS, customer="ann"), order(T + 7 * DAY_MS, customer="hal")])
    assert (row(a, variant="A").ordered, row(a, variant="holdout").ordered) == (0, 0)


def test_a_suppressed_command_stays_in_its_group_for_the_holdout_comparison():
    a = Attribution().feed([cmd("a1", "ann", variant="A"), sent("a1", "ann", variant="A"),
                            cmd("a2", "bob", variant="A"),
                            ("outcome", {"command_id": "a2", "customer_id": "bob", "outcome": "suppressed",
                                         "flow": "abandoned_cart", "step": 1, "variant": "A", "occurred_at": T}),
                            cmd("h1", "hal", variant="holdout"), cmd("h2", "hil", variant="holdout")])
    mailed = row(a, variant="A")
    assert (mailed.sent, mailed.suppressed, mailed.assigned) == (1, 1, 2)
    (lift,) = lifts(a)
    assert (lift.n, lift.control_n) == (2, 2)


def test_a_holdout_customers_extra_commands_do_not_make_a_lift_where_the_mail_does_nothing():
    """The pipeline's shape when the mail does nothing (two carts 3 h apart, every fifth customer orders
    1.5 h after the first send): a held-back customer's second cart restarts step 1 (no send was recorded),
    a mailed one's does not. Counted per command that is a lift of +10 pp; per customer it is none."""
    events, window = [], MetricsSettings().click_window_ms
    for i in range(2000):
        c, held = f"u{i}", i % 2 == 1
        variant = "holdout" if held else "A"
        sends = [(1, T), (1, T + 3 * HOUR_MS), (2, T + 26 * HOUR_MS), (3, T + 74 * HOUR_MS)] if held else \
            [(1, T), (2, T + 24 * HOUR_MS), (3, T + 72 * HOUR_MS)]
        for k, (step, at) in enumerate(sends):
            events.append(cmd(f"{c}-{k}", c, at=at, step=step, variant=variant))
            if not held:
                events.append(sent(f"{c}-{k}", c, at=at, step=step, variant=variant))
        if i % 5 == 0:
            events.append(order(T + 90 * 60_000, customer=c))
    a = Attribution().feed(events)
    per_command = {r.variant: r.ordered_rate for r in a.table() if r.step == 1}
    assert per_command == {"A": pytest.approx(0.2), "holdout": pytest.approx(0.1)}  # the bias, per command
    (lift,) = lifts(a)
    assert (lift.step, lift.n, lift.control_n, lift.conversions, lift.control_conversions) == (0, 1000, 1000, 200, 200)
    assert lift.diff == pytest.approx(0) and lift.ci_low < 0 < lift.ci_high and not lift.significant
    assert lift.rpr_diff == pytest.approx(0) and lift.rpr_ci_low < 0 < lift.rpr_ci_high
    assert window > 90 * 60_000


def test_a_customers_exposure_starts_at_their_first_send_in_the_experiment():
    a = Attribution().feed([cmd("a1", "ann", at=T, variant="A"), sent("a1", "ann", at=T, variant="A"),
                            cmd("a2", "ann", at=T + 6 * DAY_MS, variant="A"),
                            sent("a2", "ann", at=T + 6 * DAY_MS, variant="A"),
                            cmd("h1", "hal", at=T, variant="holdout"),
                            order(T + 7 * DAY_MS, customer="ann"), order(T + DAY_MS, customer="hal")])
    (lift,) = lifts(a)  # ann's order is 7 days after her first send: outside the window, a later send or not
    assert (lift.n, lift.conversions, lift.control_n, lift.control_conversions) == (1, 0, 1, 1)


def test_steps_with_their_own_experiments_are_compared_step_by_step():
    a = Attribution().feed([cmd("a1", "ann", variant="A"), cmd("h1", "hal", variant="holdout"),
                            cmd("a2", "ann", step=2, variant="holdout"), cmd("h2", "hal", step=2, variant="A")])
    assert [(x.step, x.n, x.control_n) for x in lifts(a)] == [(1, 1, 1), (2, 1, 1)]


def test_no_orders_in_either_group_has_no_interval_rather_than_a_zero_width_one():
    events = []
    for i in range(5):
        events += [cmd(f"a{i}", f"v{i}", variant="A"), sent(f"a{i}", f"v{i}", variant="A"),
                   cmd(f"h{i}", f"h{i}", variant="holdout")]
    (lift,) = lifts(Attribution().feed(events))
    assert lift.no_orders and not lift.significant and not lift.revenue_significant
    doc = lift.as_dict()
    assert (doc["ci_low"], doc["ci_high"], doc["rpr_ci_low"], doc["incremental_revenue_ci_high"]) == (None,) * 4
    assert doc["unit"] == "customers, from their first send in the experiment"
    diff, lo, hi = two_proportion(0, 5, 0, 5)
    assert diff == 0 and lo != lo and hi != hi  # NaN: none


def test_a_currencys_row_holds_only_that_currencys_orders_and_the_comparison_too():
    a = Attribution().feed([cmd("a1", "ann", variant="A"), sent("a1", "ann", variant="A"),
                            fb("a1", "clicked", T + HOUR_MS, ua="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4)"),
                            cmd("a2", "bob", variant="A"), sent("a2", "bob", variant="A"),
                            cmd("h1", "hal", variant="holdout"),
                            ("order", {"customer_id": "ann", "occurred_at": T + 2 * HOUR_MS, "type": "placed",
                                       "total": "5000", "currency": "JPY"}),
                            ("order", {"customer_id": "bob", "occurred_at": T + 2 * HOUR_MS, "type": "placed",
                                       "total": "20.00", "currency": "EUR"})])
    rows = {r.currency: r for r in a.table() if r.variant == "A"}
    assert (rows["JPY"].sent, rows["EUR"].sent) == (2, 2)  # the step's, repeated
    assert (rows["JPY"].converted, rows["JPY"].ordered, rows["JPY"].revenue_in_window) == (1, 1, Decimal("5000"))
    assert (rows["EUR"].converted, rows["EUR"].ordered, rows["EUR"].revenue_in_window) == (0, 1, Decimal("20.00"))
    by_currency = {x.currency: x for x in lifts(a)}
    assert (by_currency["JPY"].conversions, by_currency["EUR"].conversions) == (1, 1)
    assert (by_currency["JPY"].rpr, by_currency["EUR"].rpr) == (2500.0, 10.0)
