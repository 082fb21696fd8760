"""Attribution on hand-built cases, experiment lift, report outputs, and export round trip."""

from __future__ import annotations

import json
from decimal import Decimal

import fastavro
import pytest

from schemas import serde
from streams.config import DAY_MS, HOUR_MS
from streams.kafka.io import produce_records
from streams.analytics.attribution import Attribution
from streams.analytics.experiments import lifts, two_proportion
from streams.analytics.report import from_avro_dir, write_chart, write_csv, write_json

T = 1_790_000_000_000


def cmd(cid: str, customer: str = "ann", at: int = T, flow: str = "abandoned_cart", step: int = 1,
        variant: str = "control") -> tuple[str, dict]:
    return "command", {"command_id": cid, "customer_id": customer, "flow": flow, "step": step, "variant": variant,
                       "send_at": at, "category": "marketing"}


def sent(cid: str, customer: str = "ann", at: int = T, flow: str = "abandoned_cart", step: int = 1,
         variant: str = "control") -> tuple[str, dict]:
    return "outcome", {"command_id": cid, "customer_id": customer, "outcome": "sent", "flow": flow, "step": step,
                       "variant": variant, "occurred_at": at + 1}


def fb(cid: str, kind: str, at: int, customer: str = "ann") -> tuple[str, dict]:
    return "feedback", {"command_id": cid, "customer_id": customer, "type": kind, "occurred_at": at}


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


def test_an_open_only_attributes_within_one_day():
    inside = Attribution().feed([cmd("c1"), sent("c1"), fb("c1", "opened", T), order(T + 20 * HOUR_MS)])
    outside = Attribution().feed([cmd("c1"), sent("c1"), fb("c1", "opened", T), order(T + 30 * HOUR_MS)])
    assert row(inside).converted == 1 and row(outside).converted == 0


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
    assert (control.sent, control.converted) == (200, 10)
    (lift,) = lifts(a.table())
    assert lift.variant == "A" and round(lift.diff, 3) == 0.15 and lift.significant
    assert lift.ci_low < 0.15 < lift.ci_high and lift.relative_lift == pytest.approx(3.0)


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
    rows = a.table()
    write_csv(rows, tmp_path / "r.csv")
    write_json(rows, tmp_path / "r.json")
    write_chart(rows, tmp_path / "r.png")
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("flow,step,variant,day,sent")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["rows"][0]["revenue"] == "9.99" and doc["rows"][0]["conversion_rate"] == 1.0
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
