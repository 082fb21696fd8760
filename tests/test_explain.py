"""`shopmail explain`: the decision log and the customer's timeline, from a JSONL file (no broker)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.config import DAY_MS, HOUR_MS, MINUTE_MS, Experiment, Settings, load_settings
from streams.core.decisions import DecisionLog, pending_steps
from streams.core.engine import PartitionEngine
from streams.kafka.partitioning import partition_for
from streams.tools.explain import ExplainError, compare, duration, explain_file
from streams.tools.simulate import simulate
from tests.core_events import T0, cart, customer, feedback, order, tick
from tests.test_simulate import write_jsonl

WARSAW = "Europe/Warsaw"  # UTC+1 in November: T0 (09:00 UTC) is 10:00 there


def _settings() -> Settings:
    s = load_settings(env={})
    s.topics.partitions = 2
    return s


def _ticks(cid: str, settings: Settings, days: int = 5) -> list[tuple[str, dict]]:
    p = partition_for(cid, settings.topics.partitions)
    return [tick(T0 + h * HOUR_MS, p) for h in range(1, days * 24)]


def _write(tmp_path: Path, events: list[tuple[str, dict]], settings: Settings) -> Path:
    events = sorted(events, key=lambda e: e[1].get("occurred_at", e[1].get("tick_at")))
    path = tmp_path / "events.jsonl"
    write_jsonl(path, events, settings)
    return path


def _texts(ex, kind: str) -> list[str]:
    return [r.text for r in ex.rows if r.kind == kind]


def test_a_cart_step_due_in_quiet_hours_is_deferred_to_eight_in_the_customers_zone_and_says_so(tmp_path):
    s = _settings()
    evening = T0 + 12 * HOUR_MS  # 21:00 UTC = 22:00 in Warsaw
    path = _write(tmp_path, [customer("ann", tz=WARSAW), cart("ann", evening), *_ticks("ann", s)], s)
    ex = explain_file(s, "ann", path)
    assert ex.timezone == WARSAW
    deferred = _texts(ex, "deferred")
    assert deferred[0] == ("abandoned_cart step 1 deferred to 2026-11-07 08:00 +01:00 — "
                           "quiet hours 22:00–08:00 Europe/Warsaw")
    fired = [r for r in ex.rows if r.kind == "fired"]
    assert fired[0].data["flow"] == "abandoned_cart" and fired[0].data["step"] == 1
    assert fired[0].at == T0 + 22 * HOUR_MS  # 08:00 Warsaw = 07:00 UTC the next day
    scheduled = [t for t in _texts(ex, "scheduled") if t.startswith("abandoned_cart")]
    assert scheduled[0] == ("abandoned_cart step 1 scheduled for 2026-11-06 23:00 +01:00 (in 1 h) "
                            "after carts item_added")


def test_an_order_ends_the_cart_series_with_the_time_it_was_placed(tmp_path):
    s = _settings()
    path = _write(tmp_path, [customer("bob"), cart("bob", T0), order("bob", T0 + 30 * MINUTE_MS),
                             *_ticks("bob", s)], s)
    ex = explain_file(s, "bob", path)
    ended = _texts(ex, "ended")
    assert ended == ["abandoned_cart: ended before abandoned_cart step 1 (due 2026-11-06 10:00 +00:00) — "
                     "orders placed at 2026-11-06 09:30 +00:00"]
    fired = [r.data["flow"] for r in ex.rows if r.kind == "fired"]
    assert fired == ["order_confirmation"]
    facts = [r for r in ex.rows if r.kind == "fact"]
    assert [f.data["source_topic"] for f in facts] == ["shop.customers", "shop.carts", "shop.orders"]
    assert all(f.data["partition"] == ex.partition and f.data["line"] >= 1 for f in facts)
    assert f"shop.orders[{ex.partition}] line " in facts[2].text
    assert all("on time" in f.text for f in facts)


def test_a_withdrawn_consent_drops_the_due_step_with_the_time_it_was_withdrawn(tmp_path):
    s = _settings()
    path = _write(tmp_path, [customer("cy", event_id="p1"), cart("cy", T0),
                             customer("cy", at=T0 + 10 * MINUTE_MS, opt_in=False, event_id="p2"),
                             *_ticks("cy", s)], s)
    ex = explain_file(s, "cy", path)
    assert _texts(ex, "dropped") == [f"abandoned_cart step {n} not sent — consent withdrawn at 2026-11-06 09:10 +00:00"
                                     for n in (1, 2, 3)]
    assert not _texts(ex, "fired")


def test_a_holdout_step_is_shown_as_held_out_and_never_sent(tmp_path):
    s = _settings()
    s.flows.experiments = [Experiment(name="cart-holdout", flow="abandoned_cart", step=1, holdout=1.0)]
    path = _write(tmp_path, [customer("dee"), cart("dee", T0), *_ticks("dee", s, days=1)], s)
    ex = explain_file(s, "dee", path)
    held = [r for r in ex.rows if r.kind == "fired" and r.data["variant"] == "holdout"]
    assert len(held) == 1
    assert "step 1 held out — control group of the experiment cart-holdout, 100% held out: recorded, never sent" \
        in held[0].text


def test_a_late_fact_and_a_duplicate_are_shown_with_their_lateness(tmp_path):
    s = _settings()
    events = [customer("eve", event_id="p1"), cart("eve", T0, event_id="c1"), *_ticks("eve", s, days=2)]
    events = sorted(events, key=lambda e: e[1].get("occurred_at", e[1].get("tick_at")))
    late = order("eve", T0 + 5 * MINUTE_MS, event_id="o1")
    events += [late, cart("eve", T0, event_id="c1")]  # an order a day and a half late, then a repeat
    path = tmp_path / "events.jsonl"
    write_jsonl(path, events, s)
    ex = explain_file(s, "eve", path)
    facts = {r.data["event_id"]: r.text for r in ex.rows if r.kind == "fact" and r.data.get("status") != "on_time"}
    assert "late by 1 d 22 h: applied at once" in facts["o1"]
    assert "; duplicate of " in facts["c1"] and facts["c1"].endswith(": ignored)")


def test_the_explained_commands_are_the_ones_simulate_emits_for_the_customer(tmp_path):
    s = _settings()
    evening = T0 + 12 * HOUR_MS
    events = [customer("ann", tz=WARSAW), cart("ann", evening), customer("bob"), cart("bob", T0),
              order("bob", T0 + 3 * DAY_MS), *_ticks("ann", s), *_ticks("bob", s)]
    path = _write(tmp_path, events, s)
    result = simulate(path.read_text().splitlines(), s)
    for cid in ("ann", "bob"):
        ex = explain_file(s, cid, path)
        fired = [r.data["command_id"] for r in ex.rows if r.kind == "fired"]
        assert fired == [c["command_id"] for c in result.commands if c["customer_id"] == cid]
        assert fired


def test_a_decision_log_changes_no_command_and_records_nothing_for_others():
    s = _settings()
    events = [customer("ann", tz=WARSAW), cart("ann", T0 + 12 * HOUR_MS), customer("bob"), cart("bob", T0),
              feedback("bob", T0 + 2 * HOUR_MS, "unsubscribed"), tick(T0 + 4 * DAY_MS)]
    plain = PartitionEngine(s, 0)
    logged = PartitionEngine(s, 0)
    log = DecisionLog({"ann"})
    logged.explain(log)
    a = [c for t, r in events for c in plain.process(t, r).commands]
    b = [c for t, r in events for c in logged.process(t, r).commands]
    assert a == b and a
    assert {e.customer_id for e in log.entries} == {"ann"}
    assert plain.ctx.stats == logged.ctx.stats


def test_another_config_shows_side_by_side_what_would_change(tmp_path):
    s = _settings()
    path = _write(tmp_path, [customer("fay"), cart("fay", T0), *_ticks("fay", s)], s)
    capped = _settings()
    capped.flows.guards.frequency_cap_ms = 48 * HOUR_MS
    changes = [c for c in compare(explain_file(s, "fay", path), explain_file(capped, "fay", path)) if not c.same]
    step2 = [c for c in changes if c.key.startswith("abandoned_cart#1/2/")]
    assert len(step2) == 1, changes  # one decision, both sides: fired under one config, dropped under the other
    assert step2[0].key == "abandoned_cart#1/2/outcome"
    assert step2[0].left.startswith("abandoned_cart step 2 fired (marketing)")
    assert step2[0].right == ("abandoned_cart step 2 not sent — expired at 2026-11-08 09:00 +00:00 while held by the "
                              "frequency cap: a marketing mail went out at 2026-11-06 10:00 +00:00 (23 h before); "
                              "at most 1 per 2 d")


def test_a_step_sent_at_another_time_under_another_config_is_one_change_that_shows_both_times(tmp_path):
    s = _settings()
    path = _write(tmp_path, [customer("fay"), cart("fay", T0), *_ticks("fay", s)], s)
    later = _settings()
    later.flows.abandoned_cart.delays_ms = [2 * HOUR_MS, 24 * HOUR_MS, 72 * HOUR_MS]
    a, b = explain_file(s, "fay", path), explain_file(later, "fay", path)
    changes = [c for c in compare(a, b) if not c.same]
    sent = [c for c in changes if c.key == "abandoned_cart#1/1/outcome"]
    assert len(sent) == 1 and sent[0].moved
    assert (sent[0].left_at, sent[0].right_at) == (T0 + HOUR_MS, T0 + 2 * HOUR_MS)
    left, right = sent[0].texts(a.zone)
    assert left.startswith("at 2026-11-06 10:00 +00:00: abandoned_cart step 1 fired (marketing)")
    assert right.startswith("at 2026-11-06 11:00 +00:00 (+1 h): abandoned_cart step 1 fired (marketing)")


def test_a_config_with_fewer_steps_shows_the_last_step_not_sent_for_each_cart_and_moves_nothing(tmp_path):
    s = _settings()
    second_cart = T0 + 4 * DAY_MS  # after the first series has finished
    path = _write(tmp_path, [customer("fay"), cart("fay", T0, cart_id="k1"), cart("fay", second_cart, cart_id="k2"),
                             *_ticks("fay", s, days=9)], s)
    two = _settings()
    two.flows.abandoned_cart.delays_ms = s.flows.abandoned_cart.delays_ms[:2]
    a, b = explain_file(s, "fay", path), explain_file(two, "fay", path)
    assert len([r for r in a.rows if r.kind == "fired" and r.data["step"] == 3]) == 2
    changes = [c for c in compare(a, b) if not c.same]
    assert [(c.key, c.right) for c in changes] == [
        (f"abandoned_cart#{n}/3/outcome", "abandoned_cart step 3 not sent — the series finished after step 2")
        for n in (1, 2)]
    assert all(c.left.startswith("abandoned_cart step 3 fired") and not c.moved for c in changes)


def test_pending_steps_name_the_next_due_step_of_each_flow():
    s = _settings()
    eng = PartitionEngine(s, 0)
    for t, r in [customer("gus"), cart("gus", T0), tick(T0 + 2 * HOUR_MS)]:
        eng.process(t, r)
    steps = pending_steps(eng.flows, eng.customers["gus"])
    sunset_ms = s.flows.sunset.after_days * 86_400_000  # the sunset's timer counts from the consent given
    engaged = eng.customers["gus"].engaged_at
    assert engaged is not None
    assert [(p.flow, p.step, p.due) for p in steps] == [("abandoned_cart", 2, T0 + 24 * HOUR_MS),
                                                         ("sunset", 0, engaged + sunset_ms)]


def test_durations_read_as_people_write_them():
    assert [duration(ms) for ms in (HOUR_MS, 26 * HOUR_MS, 90 * MINUTE_MS, 15 * MINUTE_MS, 40_000, -HOUR_MS)] == \
        ["+1 h", "+1 d 2 h", "+1 h 30 min", "+15 min", "+40 s", "−1 h"]


def test_the_decision_log_explain_and_the_data_tools_share_one_time_formatting():
    from streams.core import decisions, timetext
    from streams.tools import explain, readable

    assert decisions.duration is explain.duration is readable.duration is timetext.duration
    assert readable.iso is explain.iso is timetext.iso and decisions.when is explain.when is timetext.when
    assert timetext.iso(T0 + 1500, WARSAW) == "2026-11-06T10:00:01.500+01:00"
    assert timetext.when(T0, WARSAW) == "2026-11-06 10:00 +01:00" and timetext.day(T0, WARSAW) == "2026-11-06"


def test_a_customer_without_facts_is_an_error_not_an_empty_timeline(tmp_path):
    s = _settings()
    path = _write(tmp_path, [customer("ann")], s)
    with pytest.raises(ExplainError, match="no fact of customer 'zed'"):
        explain_file(s, "zed", path)


def test_the_cli_prints_json_and_exits_2_for_an_unknown_customer(tmp_path):
    s = _settings()
    path = _write(tmp_path, [customer("ann", tz=WARSAW), cart("ann", T0 + 12 * HOUR_MS), *_ticks("ann", s)], s)
    cfg = tmp_path / "shopmail.toml"
    cfg.write_text("[topics]\npartitions = 2\n")
    run = [sys.executable, "-m", "streams.cli", "explain", "--input", str(path), "--config", str(cfg)]
    done = subprocess.run([*run, "ann", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["timezone"] == WARSAW and doc["customer_id"] == "ann"
    assert any(r["kind"] == "deferred" and r["reason"] == "quiet_hours" for r in doc["timeline"])
    missing = subprocess.run([*run, "nobody"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no fact of customer 'nobody'" in missing.stderr


# ---- from the topics, and the worker's ops endpoint (real broker) --------------------------------------

def _produce(kafka: str, settings: Settings, events: list[tuple[str, dict]]) -> None:
    """Events keyed by customer (``produce_events``), clock ticks into the partition they name."""
    from confluent_kafka import Producer

    from schemas import serde
    from streams.kafka.io import produce_events, producer_config

    produce_events(settings, kafka, [e for e in events if e[0] != "clock"])
    producer = Producer(producer_config(settings, kafka))
    for _, rec in (e for e in events if e[0] == "clock"):
        producer.produce(settings.topics.name("clock"), partition=rec["partition"], key=b"tick",
                         value=serde.encode("ClockTick", rec))
    assert producer.flush(30) == 0


def test_explain_from_the_topics_reads_the_customers_partition_and_shows_what_the_sink_did(kafka, settings, tmp_path):
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.tools.explain import explain_topics

    evening = T0 + 12 * HOUR_MS
    events = [customer("ann", tz=WARSAW), cart("ann", evening), customer("bob"), cart("bob", T0),
              *_ticks("ann", settings, days=2), *_ticks("bob", settings, days=2)]
    events.sort(key=lambda e: e[1].get("occurred_at", e[1].get("tick_at")))
    from_file = explain_file(settings, "ann", _write(tmp_path, events, settings))
    first = next(r for r in from_file.rows if r.kind == "fired")
    sent_at = first.at + 2_000
    outcome = {"command_id": first.data["command_id"], "customer_id": "ann", "outcome": "sent",
               "message_id": "ses-msg-1", "reason": None, "flow": "abandoned_cart", "step": 1, "variant": "control",
               "category": "marketing", "occurred_at": sent_at, "attempts": 1}
    click = feedback("ann", sent_at + HOUR_MS, "clicked", command_id=first.data["command_id"],
                     message_id="ses-msg-1", link="https://shop.example.com/cart/ann")
    bought = order("ann", sent_at + 2 * HOUR_MS, order_id="o-ann-1")
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    _produce(kafka, settings, [*events, ("outcomes", outcome), click, bought])

    ex = explain_topics(settings, kafka, "ann")
    p = partition_for("ann", settings.topics.partitions)
    facts = [r for r in ex.rows if r.kind == "fact"]
    assert {f.data["partition"] for f in facts} == {p}
    assert f"{settings.topics.name('carts')}[{p}] offset 1" in facts[1].text  # bob's cart came first
    assert [f.data["source_topic"] for f in facts] == [settings.topics.name(t) for t in
                                                        ("customers", "carts", "feedback", "orders")]
    before_order = bought[1]["occurred_at"]  # the same decisions as from the file until the order
    # (the click, which the file does not hold, re-times the sunset's own timer: that row is left out)
    assert [r.text for r in ex.decisions() if r.at < before_order and not r.text.startswith("sunset")] == \
        [r.text for r in from_file.decisions() if r.at < before_order and not r.text.startswith("sunset")]
    sink = [r.text for r in ex.rows if r.kind == "sink"]
    assert sink and "abandoned_cart step 1 sent (message ses-msg-1)" in sink[0]
    converted = [r.text for r in ex.rows if r.kind == "converted"]
    assert converted == [f"converted: order o-ann-1 (28.00 EUR) after a click on [{first.data['command_id']}]"]
    assert any(r.kind == "ended" and "orders placed" in r.text for r in ex.rows)


def test_the_worker_answers_for_a_customer_it_owns_with_state_in_words_and_next_due_steps(kafka, settings):
    import urllib.error
    import urllib.request

    from streams.web import customer_route
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.runtime import background
    from streams.runtime.metrics import health
    from streams.runtime.worker import ProcessorRuntime
    from streams.web import OpsServer

    settings.worker.tick_interval_s = 0
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    runtime = ProcessorRuntime(settings, kafka, instance_id="ops-customer-0", write_ticks=False)
    ops = OpsServer(0, lambda: health(runtime), extra=[customer_route(runtime.customer)]).start()
    worker = background.start(runtime.run, "processor")

    def get(path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ops.port}{path}", timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    try:
        assert runtime.ready.wait(30), worker.errors
        ann = partition_for("ann", settings.topics.partitions)
        _produce(kafka, settings, [customer("ann", tz=WARSAW), cart("ann", T0), tick(T0 + 20 * MINUTE_MS, ann)])
        deadline = time.monotonic() + 30
        while True:
            code, body = get("/customers/ann")
            if code == 200 and body["next_due"]:
                break
            assert time.monotonic() < deadline, (code, body)
            time.sleep(0.1)
        assert body["timezone"] == WARSAW and body["partition"] == partition_for("ann", settings.topics.partitions)
        assert "marketing consent given at 2026-11-06 09:00 +01:00" in body["state"]
        assert any(s.startswith("open cart cart-ann with 1 line(s), last activity 2026-11-06 10:00 +01:00")
                   for s in body["state"])
        assert body["next_due"] == [{"flow": "abandoned_cart", "step": 1, "due": "2026-11-06T11:00:00+01:00",
                                     "due_ms": T0 + HOUR_MS, "in": body["next_due"][0]["in"],
                                     "deferred_by_guard": False}]  # the sunset's own timer is not a mail
        assert "leaves marketing on 2027-05-05 unless they order or click" in body["state"]
        code, body = get("/customers/nobody")
        assert code == 404 and body["error"] == "unknown_customer"
    finally:
        worker.finish()
        ops.shutdown()


def test_customer_queries_beyond_the_rate_limit_are_answered_429_without_asking_the_worker():
    from streams.web import Request, customer_route

    asked: list[str] = []

    def lookup(customer_id: str) -> tuple[int, dict]:
        asked.append(customer_id)
        return 200, {"customer_id": customer_id}

    now = [100.0]
    route = customer_route(lookup, max_per_s=3, clock=lambda: now[0])
    request = Request("GET", "/customers/ann", {}, {}, b"", params={"customer_id": "ann"})
    codes = [route.handler(request).status for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429] and asked == ["ann"] * 3
    assert route.handler(request).headers["Retry-After"] == "1"
    now[0] += 0.34  # a third of a second: one query's worth again
    assert [route.handler(request).status for _ in range(2)] == [200, 429]


def test_a_deferred_keyed_step_is_logged_once_as_deferred_not_again_as_rescheduled(tmp_path):
    from tests.core_events import shipment

    s = _settings()
    evening = T0 + 12 * HOUR_MS + 30 * MINUTE_MS  # 22:30 in Warsaw: the request due 3 days later is in quiet hours
    path = _write(tmp_path, [customer("ivy", tz=WARSAW), order("ivy", T0), shipment("ivy", evening, "delivered"),
                             *_ticks("ivy", s, days=5)], s)
    ex = explain_file(s, "ivy", path)
    rows = [r for r in ex.rows if r.data.get("flow") == "delivery_feedback"]
    assert [r.kind for r in rows] == ["scheduled", "deferred", "fired", "ended"], [r.text for r in rows]
    assert rows[1].text.endswith("deferred to 2026-11-10 08:00 +01:00 — quiet hours 22:00–08:00 Europe/Warsaw")


# ---- sunset in words, JSON times, duplicates, progress -----------------------------------------------

def _sunset_story(tmp_path: Path, s: Settings) -> Path:
    """Consent at 08:00 UTC on 6 November 2026; no order or click for 180 days (sunset on 5 May 2027),
    a cart on 10 May (not sent), an order on 20 May (back in marketing); the clock ticks daily."""
    p = partition_for("sam", s.topics.partitions)
    days = [tick(T0 + d * DAY_MS, p) for d in range(1, 230)]
    return _write(tmp_path, [customer("sam"), cart("sam", T0 + 185 * DAY_MS), order("sam", T0 + 195 * DAY_MS),
                             *days], s)


def test_sunset_reads_as_leaving_marketing_on_a_date_unless_they_order_or_click_then_left_and_back(tmp_path):
    s = _settings()
    ex = explain_file(s, "sam", _sunset_story(tmp_path, s))
    sunset = [r.text for r in ex.rows if r.data.get("flow") == "sunset"]
    assert sunset == ["sunset: leaves marketing on 2027-05-05 unless they order or click",
                      "sunset: left marketing on 2027-05-05 (no order or click for 180 days)",
                      "sunset: back in marketing: ordered on 2027-05-20; leaves marketing on 2027-11-16 unless they "
                      "order or click"]
    dropped = _texts(ex, "dropped")
    assert dropped and all(t.endswith("not sent — left marketing on 2027-05-05 (no order or click for 180 days)")
                           for t in dropped)
    assert not any("series finished" in r.text or "sunset start" in r.text for r in ex.rows if "sunset" in r.text)


def test_sunsets_timer_is_shown_apart_from_the_mail_steps_in_the_next_due_list(tmp_path):
    from rich.console import Console

    from streams.cli.explain import _print

    s = _settings()
    path = _write(tmp_path, [customer("gus"), cart("gus", T0), *_ticks("gus", s, days=1)[:2]], s)
    ex = explain_file(s, "gus", path)
    assert [p.flow for p in ex.pending] == ["abandoned_cart", "sunset"]
    assert [p.flow for p in ex.mail_steps] == ["abandoned_cart"]
    assert [p["flow"] for p in ex.as_json()["pending"]] == ["abandoned_cart"]
    assert ex.as_json()["sunset"]["text"] == "leaves marketing on 2027-05-05 unless they order or click"
    console = Console(record=True, width=150)
    _print(console, ex)
    text = console.export_text()
    due_table = text[text.index("next due"):]
    assert "sunset" not in due_table.splitlines()[2]  # the one mail row
    assert text.rstrip().endswith("sunset: leaves marketing on 2027-05-05 unless they order or click")
    header = next(ln for ln in text.splitlines() if "next due" in ln)
    # no empty column
    assert [c.strip() for c in header.strip().strip("┃").split("┃")] == ["next due", "flow", "step"]


def test_the_workers_customer_query_says_when_the_customer_leaves_or_left_marketing():
    from streams.core.decisions import customer_state

    s = _settings()
    eng = PartitionEngine(s, 0)
    for t, r in [customer("sam"), cart("sam", T0), tick(T0 + 2 * HOUR_MS)]:
        eng.process(t, r)
    doc = customer_state("sam", eng.customers["sam"], eng.flows, eng.clock_ms)
    assert "leaves marketing on 2027-05-05 unless they order or click" in doc["state"]
    assert [d["flow"] for d in doc["next_due"]] == ["abandoned_cart"]
    assert doc["sunset"]["at"] == "2027-05-05T08:00:00+00:00" and not doc["sunset"]["left"]
    assert doc["clock"] == "2026-11-06T11:00:00+00:00" and doc["next_due"][0]["due"] == "2026-11-07T09:00:00+00:00"
    eng.process(*tick(T0 + 190 * DAY_MS))
    doc = customer_state("sam", eng.customers["sam"], eng.flows, eng.clock_ms)
    assert "left marketing on 2027-05-05 (no order or click for 180 days)" in doc["state"] and doc["sunset"]["left"]


def test_explains_json_times_are_iso_8601_with_seconds_and_offset_beside_the_epoch_values(tmp_path):
    import re

    s = _settings()
    path = _write(tmp_path, [customer("ann", tz=WARSAW), cart("ann", T0 + 12 * HOUR_MS), *_ticks("ann", s)], s)
    doc = explain_file(s, "ann", path).as_json()
    iso_8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?[+-]\d\d:\d\d$")
    for row in doc["timeline"]:
        assert iso_8601.match(row["at"]), row
        for k in ("due", "until"):
            if k in row:
                assert iso_8601.match(row[k]) and isinstance(row[f"{k}_ms"], int), row
    deferred = next(r for r in doc["timeline"] if r["kind"] == "deferred")
    assert deferred["until"] == "2026-11-07T08:00:00+01:00" and deferred["until_ms"] == T0 + 22 * HOUR_MS
    assert all(iso_8601.match(p["due"]) for p in doc["pending"]) and iso_8601.match(doc["sunset"]["at"])


def test_identical_rows_collapse_into_one_that_says_how_many():
    from streams.tools.explain import Row, collapse

    drop = Row(T0, "dropped", "price_drop step 1 not sent — no marketing consent given", {"flow": "price_drop"})
    other = Row(T0, "fact", "orders placed", {})
    again = Row(drop.at, drop.kind, drop.text, dict(drop.data))
    rows = collapse([drop, other, again, Row(T0 + 1, "dropped", drop.text)])
    assert [(r.at, r.text) for r in rows] == [
        (T0, "price_drop step 1 not sent — no marketing consent given ×2"), (T0, "orders placed"),
        (T0 + 1, "price_drop step 1 not sent — no marketing consent given")]
    assert rows[0].data["count"] == 2 and "count" not in rows[2].data


def test_explain_shows_a_progress_bar_on_a_terminal_and_none_with_quiet_or_when_piped(tmp_path, monkeypatch):
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = _settings()
    path = _write(tmp_path, [customer("ann"), cart("ann", T0), *_ticks("ann", s)], s)
    shown = {}
    for case, stream, quiet in (("tty", Tty(), False), ("quiet", Tty(), True), ("piped", io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        explain_file(s, "ann", path, quiet=quiet)
        shown[case] = stream.getvalue()
    assert "explaining ann" in shown["tty"] and "ETA" in shown["tty"]
    assert shown["quiet"] == "" and shown["piped"] == ""


def _box_tables(text: str) -> list[list[str]]:
    """The rich tables printed in a document: runs of lines from a top border (┏) to a bottom one (└)."""
    tables: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("┏"):
            current = [line]
        elif current is not None:
            current.append(line)
            if line.startswith("└"):
                tables.append(current)
                current = None
    return tables


@pytest.mark.parametrize("doc", ["docs/explain.md", "docs/data-tools.md"])
def test_every_table_in_the_docs_has_one_column_count_and_no_column_left_empty(doc):
    root = Path(__file__).resolve().parent.parent
    text = (root / doc).read_text()
    for table in _box_tables(text):
        counts = set()
        cells: list[list[str]] = []
        for line in table:
            if line[0] in "┏┡└":
                counts.add(sum(line.count(c) for c in "┳╇┴") + 1)
            else:
                row = line.strip()[1:-1].split(line.strip()[0])
                counts.add(len(row))
                cells.append([c.strip() for c in row])
        assert len(counts) == 1, (doc, table[:3])
        for i in range(counts.pop()):
            assert any(row[i] for row in cells), (doc, f"column {i + 1} is empty", table[:3])
    pipe_rows = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in pipe_rows}) <= 1


def _cart_soon_after_the_last_cart_mail(s: Settings) -> list[tuple[str, dict]]:
    """A series that sent all three steps (the last at +72 h), then another cart 3 h later."""
    return [customer("kim"), cart("kim", T0, cart_id="k1"), cart("kim", T0 + 75 * HOUR_MS, cart_id="k9"),
            *_ticks("kim", s, days=5)]


def test_a_cart_soon_after_the_last_cart_mail_says_it_starts_no_series_and_why(tmp_path):
    s = _settings()
    ex = explain_file(s, "kim", _write(tmp_path, _cart_soon_after_the_last_cart_mail(s), s))
    assert len([r for r in ex.rows if r.kind == "fired"]) == 3
    assert _texts(ex, "dropped") == [
        "abandoned_cart: cart k9 starts no series — every step of the last series went out, the last at "
        "2026-11-09 09:00 +00:00 (3 h before); cart activity within 1 d of the last cart mail starts none"]


def test_the_workers_customer_query_says_a_cart_soon_after_the_last_cart_mail_has_no_series():
    from streams.core.decisions import customer_state

    s = _settings()
    eng = PartitionEngine(s, partition_for("kim", s.topics.partitions))
    for t, r in sorted(_cart_soon_after_the_last_cart_mail(s), key=lambda e: e[1].get("occurred_at", e[1].get("tick_at"))):
        eng.process(t, r)
    doc = customer_state("kim", eng.customers["kim"], eng.flows, eng.clock_ms)
    assert ("open cart k9 with 1 line(s), last activity 2026-11-09 12:00 +00:00: no series for it — the last cart "
            "series sent its last step at 2026-11-09 09:00 +00:00, 3 h before; cart activity from "
            "2026-11-10 09:00 +00:00 starts a new series") in doc["state"]
    assert not any("every step" in line for line in doc["state"])


def test_a_duplicate_is_cited_at_its_own_line_and_one_past_the_duplicate_memory_says_it_was_applied_again(tmp_path):
    s = _settings()
    first = cart("dee", T0, event_id="dee-cart-1")
    ticks = _ticks("dee", s, days=4)
    path = tmp_path / "dup.jsonl"
    write_jsonl(path, [customer("dee"), first, first, *ticks, first], s)  # lines 1, 2, 3, …, the last
    ex = explain_file(s, "dee", path)
    carts = [r.text for r in ex.rows if r.kind == "fact" and "carts" in r.text]
    where = f"{s.topics.name('carts')}[{partition_for('dee', s.topics.partitions)}] line"
    assert carts[0].endswith(f"({where} 2; on time)")
    assert carts[1].endswith(f"({where} 3; duplicate of {where} 2: ignored)")
    last = len(ticks) + 4
    assert carts[2].endswith(f"({where} {last}; late by 3 d 23 h: applied at once; its event id came before at "
                             f"{where} 2, no longer remembered: applied again)")


def test_an_unknown_time_zone_is_said_to_be_unknown_and_times_are_in_utc(tmp_path):
    from streams.core.decisions import customer_state

    s = _settings()
    events = [customer("moe", tz="Mars/Phobos"), cart("moe", T0), *_ticks("moe", s, days=1)]
    ex = explain_file(s, "moe", _write(tmp_path, events, s))
    assert ex.zone_words == "UTC (time zone 'Mars/Phobos' unknown)"
    doc = ex.as_json()
    assert (doc["timezone"], doc["timezone_unknown"]) == ("UTC", "Mars/Phobos")
    assert doc["timeline"][0]["at"].endswith("+00:00")
    eng = PartitionEngine(s, partition_for("moe", s.topics.partitions))
    for t, r in events[:2]:
        eng.process(t, r)
    state = customer_state("moe", eng.customers["moe"], eng.flows, eng.clock_ms)
    assert state["timezone"] == "UTC"
    assert state["state"][0] == "email known, locale en, time zone UTC (time zone 'Mars/Phobos' unknown)"


def test_a_flows_start_keeps_step_0_in_the_json_timeline():
    from streams.core.decisions import Entry

    start = Entry("scheduled", T0, "wes", "win_back", 0, due=T0 + DAY_MS, cause="orders:placed")
    assert start.as_dict()["step"] == 0
    assert "step" not in Entry("fact", T0, "wes", topic="carts").as_dict()
