"""`shopmail report` on `shopmail export` files: leads with human clicks, placed orders and revenue per
recipient, prints its attribution window, and refuses a missing or empty input with a non-zero exit."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
from rich.console import Console
from typer.testing import CliRunner

from schemas import serde
from streams.analytics.attribution import Attribution
from streams.analytics.report import build, chart_currencies, print_report, split_intervals, write_chart
from streams.cli.main import app
from streams.config import DAY_MS, HOUR_MS

T = 1_790_000_000_000
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"


def command(i: int, variant: str) -> dict[str, Any]:
    return serde.from_json("EmailCommand", {
        "command_id": f"c{i}", "customer_id": f"u{i}", "to": f"u{i}@example.com", "flow": "abandoned_cart",
        "step": 1, "template": "abandoned_cart_1", "variant": variant, "category": "marketing", "send_at": T,
        "expires_at": T + DAY_MS, "context": "{}", "trigger_event_id": f"e{i}", "created_at": T})


def outcome(i: int) -> dict[str, Any]:
    return serde.from_json("EmailOutcome", {
        "command_id": f"c{i}", "customer_id": f"u{i}", "outcome": "sent", "message_id": f"m{i}",
        "flow": "abandoned_cart", "step": 1, "variant": "A", "category": "marketing", "occurred_at": T + 500})


def feedback(i: int, kind: str, at: int, ua: str | None = None, ip: str | None = None) -> dict[str, Any]:
    return serde.from_json("EmailFeedback", {
        "event_id": f"f{i}-{kind}-{at}", "customer_id": f"u{i}", "occurred_at": at, "type": kind,
        "command_id": f"c{i}", "message_id": f"m{i}", "user_agent": ua, "ip_address": ip,
        "link": "https://shop.example.com/cart" if kind == "clicked" else None})


def placed(i: int, total: str) -> dict[str, Any]:
    return serde.from_json("OrderEvent", {"event_id": f"o{i}", "customer_id": f"u{i}", "occurred_at": T + DAY_MS,
                                          "type": "placed", "order_id": f"o{i}", "total": total})


def shop(n: int = 40) -> dict[str, list[dict[str, Any]]]:
    """Half the customers get variant A, half are held out; every A mail is pre-fetched by Apple's proxy,
    a quarter are clicked by a person who then buys (60.00); one in ten held-out customers buys anyway (30.00)."""
    files: dict[str, list[dict[str, Any]]] = {"EmailCommand": [], "EmailOutcome": [], "EmailFeedback": [],
                                               "OrderEvent": []}
    for i in range(n):
        if i % 2:
            files["EmailCommand"].append(command(i, "holdout"))
            if i % 20 == 1:
                files["OrderEvent"].append(placed(i, "30.00"))
            continue
        files["EmailCommand"].append(command(i, "A"))
        files["EmailOutcome"].append(outcome(i))
        files["EmailFeedback"] += [feedback(i, "delivered", T + 1_000),
                                   feedback(i, "opened", T + HOUR_MS, "Mozilla/5.0", "17.58.63.11")]
        if i % 8 == 0:
            files["EmailFeedback"].append(feedback(i, "clicked", T + 2 * HOUR_MS, IPHONE, "198.51.100.7"))
            files["OrderEvent"].append(placed(i, "60.00"))
    return files


TOPIC = {"EmailCommand": "email.commands", "EmailOutcome": "email.outcomes", "EmailFeedback": "email.feedback",
         "OrderEvent": "shop.orders"}


def export(directory: Path, files: dict[str, list[dict[str, Any]]]) -> Path:
    """The files `shopmail export` writes: one Avro container per topic, its schema embedded."""
    directory.mkdir(exist_ok=True)
    for name, records in files.items():
        with open(directory / f"{TOPIC[name]}.avro", "wb") as f:
            fastavro.writer(f, serde.registry().get(name).parsed, records, codec="deflate")
    return directory


def test_the_report_leads_with_human_clicks_placed_orders_and_rpr_and_states_its_window(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(app, ["report", "--input-dir", str(export(tmp_path / "x", shop())),
                                      "--csv", str(out / "r.csv"), "--json", str(out / "r.json"),
                                      "--chart", str(out / "r.png")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Attribution: last click, 5 days." in text
    # 20 mails, 5 clicked by a person and bought 60.00 each: RPR 15.00; every mail opened by Apple's proxy
    assert "abandoned_cart · 1 · A" in text and "25.0%" in text and "15.00" in text
    assert "25.0% / 75.0%" in text  # opens: human (the clickers) / machine only
    assert "Experiments vs holdout" in text and "opens: machine:apple_mpp 20" in text
    doc = json.loads((out / "r.json").read_text())
    a_row = next(r for r in doc["rows"] if r["variant"] == "A")
    assert (a_row["human_click_rate"], a_row["placed_order_rate"], a_row["rpr"]) == (0.25, 0.25, "15.0000")
    assert (a_row["human_opened"], a_row["machine_opened"]) == (5, 15)
    (exp,) = doc["experiments"]
    assert (exp["control_revenue_per_customer"], exp["rpr_diff"], exp["incremental_revenue"]) == (3.0, 12.0, 240.0)
    assert exp["incremental_revenue_ci_low"] < 240.0 < exp["incremental_revenue_ci_high"]
    lines = list(csv.DictReader((out / "r.csv").open()))
    assert [line["level"] for line in lines] == ["flow", "row", "row", "verdict", "verdict"]
    assert {line["currency"] for line in lines[:3]} == {"USD"} and a_row["currency"] == "USD"
    assert "USD" in text and (out / "r.png").stat().st_size > 10_000


def test_a_missing_input_directory_is_a_clear_error_and_a_non_zero_exit(tmp_path):
    result = CliRunner().invoke(app, ["report", "--input-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "nowhere is not a directory" in result.output and "Attribution" not in result.output


def test_a_directory_without_export_files_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["report", "--input-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "holds none of email.commands.avro" in result.output


def test_exported_files_without_any_mail_sent_are_a_clear_error_not_an_empty_table(tmp_path):
    files = {"EmailCommand": [], "EmailOutcome": [], "EmailFeedback": [], "OrderEvent": [placed(1, "5.00")]}
    result = CliRunner().invoke(app, ["report", "--input-dir", str(export(tmp_path / "x", files))])
    assert result.exit_code == 1
    assert "no email sent or held back in" in result.output and "orders 1" in result.output
    assert "Attribution by flow" not in result.output


def test_the_terminal_tables_show_opens_split_and_the_holdouts_incremental_figures():
    records = [(k, r) for name, kind in (("EmailCommand", "command"), ("EmailOutcome", "outcome"),
                                         ("EmailFeedback", "feedback"), ("OrderEvent", "order"))
               for k, r in ((kind, rec) for rec in shop()[name])]
    console = Console(record=True, width=220)
    print_report(console, build(Attribution().feed(records)))
    text = console.export_text()
    lead = text.index("Per flow (holdout excluded)")
    assert text.index("human", lead) < text.index("RPR", lead) < text.index("opens", lead) < text.index("Attribution by")
    assert "abandoned_cart · 1 · holdout" in text and "+240.00" in text and "20 vs 20" in text


def test_without_a_holdout_the_report_says_there_are_no_incremental_figures():
    files = shop()
    records = [("command", c) for c in files["EmailCommand"] if c["variant"] == "A"]
    records += [("outcome", o) for o in files["EmailOutcome"]] + [("feedback", f) for f in files["EmailFeedback"]]
    console = Console(record=True, width=220)
    print_report(console, build(Attribution().feed(records)))
    text = console.export_text()
    assert "no incremental figures" in text and "Experiments vs holdout" not in text


def attack_shop() -> dict[str, list[dict[str, Any]]]:
    """Mail with no effect: 1,000 mailed (A) and 1,000 held back; one in ten of each group orders a day after
    the send (60.00); half of the mailed buyers clicked first (a person, an hour after delivery)."""
    files: dict[str, list[dict[str, Any]]] = {"EmailCommand": [], "EmailOutcome": [], "EmailFeedback": [],
                                               "OrderEvent": []}
    for i in range(2000):
        variant = "A" if i % 2 == 0 else "holdout"
        files["EmailCommand"].append(command(i, variant))
        buys = (i // 2) % 10 == 0
        if variant == "A":
            files["EmailOutcome"].append(outcome(i))
            files["EmailFeedback"].append(feedback(i, "delivered", T + 1_000))
            if buys and (i // 20) % 2 == 0:
                files["EmailFeedback"].append(feedback(i, "clicked", T + HOUR_MS, IPHONE, "198.51.100.7"))
        if buys:
            files["OrderEvent"].append(placed(i, "60.00"))
    return files


def test_equal_order_rates_in_the_mailed_and_held_back_groups_give_a_lift_near_zero_whose_interval_covers_zero(
        tmp_path):
    result = CliRunner().invoke(app, ["report", "--input-dir", str(export(tmp_path / "x", attack_shop())),
                                      "--json", str(tmp_path / "r.json")], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    (exp,) = json.loads((tmp_path / "r.json").read_text())["experiments"]
    assert (exp["n"], exp["conversions"], exp["control_n"], exp["control_conversions"]) == (1000, 100, 1000, 100)
    assert exp["diff"] == 0 and exp["ci_low"] < 0 < exp["ci_high"] and not exp["significant"]
    assert exp["incremental_revenue"] == 0 and exp["incremental_revenue_ci_low"] < 0 < exp["incremental_revenue_ci_high"]
    assert not exp["revenue_significant"] and exp["currency"] == "USD"
    text = " ".join(result.output.split())
    assert "customers from their first send in the experiment" in text
    assert "a customer who orders within 5 days after their first (would-be) send counts, clicked or not" in text
    assert "10.0% vs 10.0%" in text and "+0.0 pp" in text and "*" not in text.split("excludes 0)")[1]
    doc = json.loads((tmp_path / "r.json").read_text())
    mailed = next(r for r in doc["rows"] if r["variant"] == "A")
    # the last-click figures stay: 50 buyers clicked first, 3,000.00 over 1,000 recipients
    assert (mailed["placed_order_rate"], mailed["revenue"], mailed["rpr"]) == (0.05, "3000.00", "3.0000")
    assert (mailed["ordered_rate"], mailed["revenue_in_window"]) == (0.1, "6000.00")


def test_orders_in_different_currencies_are_never_added_and_every_output_names_its_currency(tmp_path):
    files = shop(2)
    files["OrderEvent"] = [serde.from_json("OrderEvent", {
        "event_id": f"o{cur}", "customer_id": "u0", "occurred_at": T + DAY_MS, "type": "placed",
        "order_id": f"o{cur}", "total": total, "currency": cur}) for total, cur in (("10000", "JPY"), ("20.00", "EUR"))]
    files["EmailFeedback"].append(feedback(0, "clicked", T + 2 * HOUR_MS, IPHONE, "198.51.100.7"))
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(app, ["report", "--input-dir", str(export(tmp_path / "x", files)),
                                      "--csv", str(out / "r.csv"), "--json", str(out / "r.json"),
                                      "--chart", str(out / "r.png")], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "10,020.00" not in result.output and "5,010.00" not in result.output
    assert "10,000.00   JPY" in result.output and "20.00   EUR" in result.output
    doc = json.loads((out / "r.json").read_text())
    money = {(r["variant"], r["currency"]): (r["revenue"], r["rpr"]) for r in doc["rows"]}
    assert money[("A", "EUR")] == ("20.00", "20.0000") and money[("A", "JPY")] == ("10000.00", "10000.0000")
    assert {f["currency"]: f["revenue"] for f in doc["flows"]} == {"EUR": "20.00", "JPY": "10000.00"}
    assert {x["currency"] for x in doc["experiments"]} == {"EUR", "JPY"}
    lines = [line for line in csv.DictReader((out / "r.csv").open()) if line["level"] == "flow"]
    assert {(line["currency"], line["revenue"]) for line in lines} == {("EUR", "20.00"), ("JPY", "10000.00")}
    assert (out / "r.png").stat().st_size > 10_000


def test_a_shop_in_one_currency_reads_as_before_with_its_currency_code():
    records = [(kind, rec) for name, kind in (("EmailCommand", "command"), ("EmailOutcome", "outcome"),
                                              ("EmailFeedback", "feedback"), ("OrderEvent", "order"))
               for rec in shop()[name]]
    report = build(Attribution().feed(records))
    assert [(r.variant, r.currency) for r in report.rows] == [("A", "USD"), ("holdout", "USD")]
    assert [(r.flow, r.currency, str(r.revenue)) for r in report.flows] == [("abandoned_cart", "USD", "300.00")]


def test_an_interval_that_cannot_be_computed_shows_n_a_in_the_terminal(tmp_path):
    records = [(kind, rec) for name, kind in (("EmailCommand", "command"), ("EmailOutcome", "outcome"),
                                              ("EmailFeedback", "feedback"), ("OrderEvent", "order"))
               for rec in shop()[name]]
    report = build(Attribution().feed(records))
    inf = float("inf")
    report.experiments = [replace(report.experiments[0], ci_low=-inf, ci_high=inf, rpr_ci_low=-inf, rpr_ci_high=inf)]
    console = Console(record=True, width=220)
    print_report(console, report)
    assert console.export_text().count("[n/a]") == 4  # lift, incremental orders, RPR and revenue
    write_chart(report, tmp_path / "r.png")  # drawn as a point, "no interval"
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_the_chart_draws_every_experiment_and_says_which_have_no_interval():
    inf = float("inf")
    with_ci, without = split_intervals([(1.0, 0.5, 1.5), (2.0, -inf, inf), (0.0, -0.1, 0.1)])
    assert with_ci == [(0, 1.0, 0.5, 1.5), (2, 0.0, -0.1, 0.1)] and without == [(1, 2.0)]


def test_an_input_with_only_held_back_customers_says_there_is_no_variant_to_compare(tmp_path):
    files: dict[str, list[dict[str, Any]]] = {"EmailCommand": [command(i, "holdout") for i in range(6)],
                                               "EmailOutcome": [], "EmailFeedback": [], "OrderEvent": []}
    result = CliRunner().invoke(app, ["report", "--input-dir", str(export(tmp_path / "x", files))],
                                env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Only held-back customers in this range" in text and "No held-back control group" not in text


def test_no_orders_in_either_group_reads_so_instead_of_a_zero_width_interval():
    files = shop(10)
    files["OrderEvent"] = []
    records = [(kind, rec) for name, kind in (("EmailCommand", "command"), ("EmailOutcome", "outcome"),
                                              ("EmailFeedback", "feedback"), ("OrderEvent", "order"))
               for rec in files[name]]
    report = build(Attribution().feed(records))
    console = Console(record=True, width=220)
    print_report(console, report)
    text = console.export_text()
    assert "no orders in either group" in text and "[+0.0, +0.0]" not in text and "+0.00, +0.00]" not in text


def test_the_chart_draws_money_one_panel_per_currency_and_says_its_unit(tmp_path):
    files = shop(4)
    files["OrderEvent"] = [serde.from_json("OrderEvent", {
        "event_id": f"o{i}", "customer_id": f"u{i}", "occurred_at": T + DAY_MS, "type": "placed",
        "order_id": f"o{i}", "total": total, "currency": cur}) for i, total, cur in ((0, "5000", "JPY"),
                                                                                  (2, "20.00", "EUR"))]
    files["EmailFeedback"] += [feedback(i, "clicked", T + 2 * HOUR_MS, IPHONE, "198.51.100.7") for i in (0, 2)]
    report = build(Attribution().feed([(kind, rec) for name, kind in (
        ("EmailCommand", "command"), ("EmailOutcome", "outcome"), ("EmailFeedback", "feedback"),
        ("OrderEvent", "order")) for rec in files[name]]))
    assert chart_currencies(report) == ["EUR", "JPY"]
    assert {(r.currency, r.sent, r.converted) for r in report.flows} == {("EUR", 2, 1), ("JPY", 2, 1)}
    write_chart(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000
