"""The data-team commands read well and say so when the input is wrong: ISO times with offsets and
``+1 h`` durations, per-flow tables and JSON, progress bars only on a terminal, Parquet exports with
the records' Kafka coordinates, replay topics that can be cleaned up, and a clear message with a
non-zero exit for a missing file, an unknown topic or an empty range."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas import serde
from streams.cli.main import app
from streams.config import DAY_MS, HOUR_MS, MINUTE_MS
from streams.kafka.io import ConsumedRecord, produce_records, read_topic
from streams.tools.readable import change_text, duration, flow_summary, iso, progress_enabled, readable_record
from tests.test_simulate import shop_log, write_jsonl

T = 1_768_396_530_768  # 2026-01-14 13:15:30.768 UTC, the issue's example


def cli_env(settings: Any = None, bootstrap: str | None = None) -> dict[str, str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap or "", "SHOPMAIL_WORKER__STORE": "memory://", "COLUMNS": "250"}
    if settings is not None:
        env.update({"SHOPMAIL_TOPICS__PREFIX": settings.topics.prefix,
                    "SHOPMAIL_TOPICS__PARTITIONS": str(settings.topics.partitions),
                    "SHOPMAIL_WORKER__APP_ID": settings.worker.app_id})
    return env


def flat(text: str) -> str:
    """Output as one line of words: rich's boxes and line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def invoke(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, args, env=env or cli_env(), input=stdin)


# ---- times, durations, tables ---------------------------------------------------------------------

def test_a_time_reads_as_iso_8601_with_its_offset_in_utc_or_the_customers_zone():
    assert iso(T) == "2026-01-14T13:15:30.768+00:00"
    assert iso(T - 768) == "2026-01-14T13:15:30+00:00"
    assert iso(T - 768, "Europe/Warsaw") == "2026-01-14T14:15:30+01:00"
    assert iso(T - 768, "America/New_York") == "2026-01-14T08:15:30-05:00"
    assert iso(T - 768, "Not/AZone") == "2026-01-14T13:15:30+00:00"


@pytest.mark.parametrize(("ms", "text"), [
    (HOUR_MS, "+1 h"), (90 * MINUTE_MS, "+1 h 30 min"), (-(2 * DAY_MS + 3 * HOUR_MS), "−2 d 3 h"),
    (DAY_MS + 5 * MINUTE_MS, "+1 d"), (250, "+250 ms"), (45_000, "+45 s"), (0, "0")])
def test_a_duration_reads_as_signed_units_the_two_largest_at_most(ms, text):
    assert duration(ms) == text


def test_a_changed_send_time_reads_as_two_iso_times_and_the_shift_between_them():
    assert change_text("send_at", T, T + HOUR_MS) == \
        "send_at: 2026-01-14T13:15:30.768+00:00 → 2026-01-14T14:15:30.768+00:00 (+1 h)"
    assert change_text("variant", "A", "B") == "variant: A → B"
    assert change_text("send_at", T, T + HOUR_MS, "Europe/Warsaw").endswith("15:15:30.768+01:00 (+1 h)")


def test_a_record_for_people_carries_iso_times_beside_the_epoch_values():
    assert readable_record({"send_at": T, "step": 2}) == {"send_at": "2026-01-14T13:15:30.768+00:00",
                                                          "send_at_ms": T, "step": 2}


def test_the_replay_diff_shows_the_issues_example_as_two_iso_times_and_plus_one_hour_and_json_says_the_same(tmp_path):
    from rich.console import Console

    from streams.cli.replay import _diff_doc, _print_diff
    from streams.tools.replay import ReplayResult, diff_commands

    old = {"command_id": "c1", "flow": "abandoned_cart", "step": 1, "customer_id": "ann", "send_at": 1768396530768}
    new = dict(old, send_at=1768400130768)
    result = ReplayResult({"carts": 1}, [new], diff_commands([old], [new]), "replay-jan.")
    console = Console(record=True, width=200)
    _print_diff(console, result, show=10)
    text = console.export_text()
    assert "send_at: 2026-01-14T13:15:30.768+00:00 → 2026-01-14T14:15:30.768+00:00 (+1 h)" in text
    assert "1768396530768" not in text
    doc = _diff_doc(result)
    assert doc["changed"][0]["deltas"] == {"send_at": "+1 h"} and doc["summary"]["changed"] == 1
    assert doc["changed"][0]["production"]["send_at"] == 1768396530768  # the topics' value, for machines


def test_a_changed_context_reads_as_the_members_that_differ_in_the_table_and_in_the_json(tmp_path):
    from rich.console import Console

    from streams.cli.replay import _diff_doc, _print_diff
    from streams.tools.replay import ReplayResult, diff_commands

    url = "https://shop.example.com/cart/" + "k" * 40
    context = {"first_name": "Ann", "cart": {"url": url + "1", "total": "9.00",
                                             "items": [{"sku": "MUG", "price": "9.00"}]}}
    changed = {"first_name": "Ann", "coupon": {"code": "SAVE10"},
               "cart": {"url": url + "2", "total": "12.00", "items": [{"sku": "MUG", "price": "12.00"}]}}
    old = {"command_id": "c1", "flow": "abandoned_cart", "step": 1, "customer_id": "ann", "send_at": T,
           "context": json.dumps(context)}
    new = dict(old, context=json.dumps(changed))
    result = ReplayResult({"carts": 1}, [new], diff_commands([old], [new]), "replay-jan.")
    expected = ("context: cart.items[0].price: 9.00 → 12.00; cart.total: 9.00 → 12.00; "
                "cart.url: …kkkkkkkkkkkk1 → …kkkkkkkkkkkk2; coupon: (absent) → {\"code\":\"SAVE10\"}")
    assert _diff_doc(result)["changed"][0]["changes"] == [expected]
    console = Console(record=True, width=250)
    _print_diff(console, result, show=10)
    assert expected in flat(console.export_text())


def test_engine_counters_sum_into_one_row_per_flow_with_dropped_steps_by_reason():
    rows = flow_summary({"command:abandoned_cart": 5, "holdout:abandoned_cart": 2,
                         "dropped:abandoned_cart:no_consent": 3, "dropped:abandoned_cart:expired": 1, "command:win_back": 1, "late_applied:carts": 9})
    assert rows == [{"flow": "abandoned_cart", "commands": 5, "holdouts": 2, "dropped": 4,
                     "dropped_by_reason": {"no_consent": 3, "expired": 1}},
                    {"flow": "win_back", "commands": 1, "holdouts": 0, "dropped": 0, "dropped_by_reason": {}}]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_tables_are_wide_enough_that_no_time_or_reason_is_split_mid_value(monkeypatch):
    from streams.tools.readable import PIPE_WIDTH, console_for, flow_table, table

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # piped: not a terminal
    console = console_for(stderr=True, record=True)
    assert console.width == PIPE_WIDTH
    console.print(flow_table("Per flow", {"command:abandoned_cart": 226_429, "dropped:abandoned_cart:no_consent": 30,
                                          "dropped:abandoned_cart:expired_by_frequency_cap": 12}))
    console.print(table("Commands", ("command_id", "customer", "detail"),
                        [("9f1c2e4a-7b1d-4c55-9d7e-2b8f0a6c1e33", "c0000085",
                          f"send_at {iso(T)} → {iso(T + HOUR_MS)} (+1 h)")]))
    text = console.export_text()
    assert "expired_by_frequency_cap 12, no_consent 30" in text and "226,429" in text
    assert f"send_at {iso(T)} → {iso(T + HOUR_MS)} (+1 h)" in text
    assert "9f1c2e4a-7b1d-4c55-9d7e-2b8f0a6c1e33" in text


def test_progress_bars_show_only_on_a_terminal_and_never_with_quiet():
    assert progress_enabled(False, _Tty())
    assert not progress_enabled(True, _Tty())
    assert not progress_enabled(False, io.StringIO())


# ---- simulate -------------------------------------------------------------------------------------

def _simulate(args: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", "simulate", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_the_simulate_summary_is_a_per_flow_table_and_its_json_holds_the_same_counts(tmp_path, settings):
    from streams.config import load_settings

    plain = load_settings(env={})
    write_jsonl(tmp_path / "in.jsonl", shop_log(plain.topics.partitions), plain)
    run = _simulate(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                     "--json", str(tmp_path / "s.json"), "--workers", "1"])
    assert run.returncode == 0, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("simulate: ")  # the one-line summary stays last (bench reads it)
    assert "Per flow" in run.stderr and "dropped by reason" in run.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["flows"] == flow_summary(stats["counters"]) and stats["flows"]
    for row in stats["flows"]:
        line = next(ln for ln in lines if ln.strip().startswith(row["flow"] + " "))
        assert line.split()[1:3] == [f"{row['commands']:,}", f"{row['holdouts']:,}"]
    quiet = _simulate(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "q.jsonl"), "--quiet"])
    assert quiet.returncode == 0 and "Per flow" not in quiet.stderr
    assert (tmp_path / "q.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_simulate_of_a_missing_input_file_says_so_and_exits_2(tmp_path, what):
    path = tmp_path / "nowhere.jsonl" if what == "missing" else tmp_path
    run = _simulate(["--input", str(path), "--output", str(tmp_path / "o.jsonl")])
    assert run.returncode == 2
    assert f"simulate: error: {path} " + ("does not exist" if what == "missing" else "is a directory") in run.stderr
    assert "Traceback" not in run.stderr


def test_simulate_on_a_terminal_shows_a_progress_bar_with_an_eta_on_stderr(tmp_path):
    from streams.config import load_settings

    plain = load_settings(env={})
    write_jsonl(tmp_path / "in.jsonl", shop_log(plain.topics.partitions) * 20, plain)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "simulate", "--input", str(tmp_path / "in.jsonl"),
                             "--output", str(tmp_path / "o.jsonl"), "--workers", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
                            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(60) in (0, 3)
    text = seen.decode("utf-8", "replace")
    assert "simulating in.jsonl" in text and "ETA" in text
    assert "simulate: " in text


# ---- export: Parquet (broker-free part) -----------------------------------------------------------

def _orders(n: int, at: int = T) -> list[dict[str, Any]]:
    return [serde.from_json("OrderEvent", {
        "event_id": f"e{i}", "customer_id": f"ann{i % 2}", "occurred_at": at + i * DAY_MS, "type": "placed",
        "order_id": f"o{i}", "total": f"{i + 5}.25", "currency": "EUR",
        "items": [{"sku": "MUG", "name": "Mug", "price": "9.00", "quantity": i + 1}]}) for i in range(n)]


def test_a_parquet_file_has_kafka_coordinates_utc_timestamps_and_decimal_money(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from schemas.logical import export_schema, to_export
    from streams.tools.parquet import write_parquet

    raw = serde.registry().get("OrderEvent").raw
    convert = to_export(raw)
    rows = [(ConsumedRecord("shop.orders", i % 2, 10 + i, f"ann{i % 2}".encode(), b"", T + i), convert(rec))
            for i, rec in enumerate(_orders(3))]
    write_parquet(tmp_path / "o.parquet", export_schema(raw), rows, "shop.orders")
    table = pq.read_table(tmp_path / "o.parquet")
    schema = table.schema
    assert schema.names[:4] == ["kafka_partition", "kafka_offset", "kafka_key", "kafka_timestamp"]
    assert schema.field("kafka_timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("occurred_at").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("total").type == pa.decimal128(18, 4)
    assert schema.metadata[b"shopmail.topic"] == b"shop.orders"
    got = table.to_pylist()
    assert [(r["kafka_partition"], r["kafka_offset"], r["kafka_key"]) for r in got] == \
        [(0, 10, "ann0"), (1, 11, "ann1"), (0, 12, "ann0")]
    assert [r["total"] for r in got] == [Decimal("5.25"), Decimal("6.25"), Decimal("7.25")]
    assert got[1]["occurred_at"].isoformat() == "2026-01-15T13:15:30.768000+00:00"
    assert got[2]["items"][0]["price"] == Decimal("9.0000") and got[2]["items"][0]["quantity"] == 3


def test_duckdb_reads_the_parquet_export_with_its_types_and_no_extension(tmp_path):
    pytest.importorskip("pyarrow")
    duckdb = pytest.importorskip("duckdb")
    from schemas.logical import export_schema, to_export
    from streams.tools.parquet import write_parquet

    raw = serde.registry().get("OrderEvent").raw
    rows = [(ConsumedRecord("shop.orders", 0, i, b"ann", b"", T), to_export(raw)(rec))
            for i, rec in enumerate(_orders(4))]
    write_parquet(tmp_path / "o.parquet", export_schema(raw), rows, "shop.orders")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM '{tmp_path / 'o.parquet'}'").fetchall()}
    assert types["total"] == "DECIMAL(18,4)" and types["occurred_at"] == "TIMESTAMP WITH TIME ZONE"
    query = f"SELECT sum(total), min(occurred_at)::VARCHAR FROM '{tmp_path / 'o.parquet'}'"
    total, first = con.execute(query).fetchone()
    assert total == Decimal("27.0000") and first.startswith("2026-01-14 13:15:30.768")


def test_export_without_pyarrow_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = invoke(["export", "--format", "parquet", "--out", str(tmp_path)], cli_env(bootstrap="localhost:1"))
    assert result.exit_code == 2
    assert "pip install 'shopmail[parquet]'" in result.output


# ---- bad input (broker-free) ----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["export", "--out", "X", "--format", "xml"], "'xml' is not a format"),
    (["export", "--out", "X", "--from", "2026-01-02", "--to", "2026-01-01"], "the time range is empty"),
    (["export", "--out", "X", "--from", "yesterday"], "neither epoch milliseconds nor ISO-8601"),
    (["export", "--out", "X", "--topics", ","], "name at least one topic"),
    (["export", "--out", "X"], "set KAFKA_BOOTSTRAP_SERVERS"),
    (["replay", "--prefix", "r.", "--from", "2026-01-02", "--to", "2026-01-02"], "the range is empty"),
    (["replay", "--from", "2026-01-01"], "give the replay's topic prefix"),
    (["replay", "--prefix", "shop.", "--cleanup"], "matches production topics"),
    (["report"], "set KAFKA_BOOTSTRAP_SERVERS or use --input-dir"),
])
def test_a_bad_argument_is_a_clear_message_and_exit_2(tmp_path, args, message):
    args = [str(tmp_path / "x") if a == "X" else a for a in args]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert message in flat(result.output)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("out", "message"), [
    ("events.jsonl", "--out {tmp}/events.jsonl is a file, not a directory (the export writes one file per topic "
                     "into it)"),
    ("events.jsonl/exports", "--out {tmp}/events.jsonl/exports: {tmp}/events.jsonl is a file, not a directory")])
def test_export_to_an_out_that_cannot_be_a_directory_is_one_line_and_exit_2_before_reading_a_topic(tmp_path, out,
                                                                                                  message):
    (tmp_path / "events.jsonl").write_text("{}\n")
    result = invoke(["export", "--topics", "orders", "--out", str(tmp_path / out), "--format", "avro"],
                    cli_env(bootstrap="localhost:1"))  # nothing listens there: reaching the cluster would fail
    assert result.exit_code == 2
    assert result.output.strip() == "export: " + message.format(tmp=tmp_path)
    assert (tmp_path / "events.jsonl").read_text() == "{}\n"


@pytest.mark.parametrize(("files", "found"), [
    (["shop.orders.parquet", "email.commands.parquet"], "it holds only Parquet files (email.commands.parquet, "
                                                        "shop.orders.parquet): write the Avro ones with "
                                                        "`shopmail export --format avro --out"),
    (["notes.txt"], "it holds 1 other file(s) (notes.txt)"),
    ([], "it holds nothing (an empty directory)")])
def test_report_on_a_directory_without_avro_exports_says_what_it_expected_and_what_it_found(tmp_path, files, found):
    for name in files:
        (tmp_path / name).write_bytes(b"PAR1")
    result = invoke(["report", "--input-dir", str(tmp_path)])
    assert result.exit_code == 1
    text = flat(result.output)
    assert f"holds none of email.commands.avro, email.outcomes.avro, email.feedback.avro, shop.orders.avro " \
           f"(the Avro exports report reads): {found}" in text, text


@pytest.mark.parametrize(("prefix", "why"), [
    ("", "an empty prefix would match every topic"), ("shop.", "matches production topics"),
    ("email.commands", "matches production topics"), ("__", "internal topics")])
def test_replay_cleanup_refuses_a_prefix_that_could_delete_production_topics(prefix, why):
    result = invoke(["replay", "cleanup", prefix, "--yes"], cli_env(bootstrap="localhost:1"))
    assert result.exit_code == 2
    assert why in flat(result.output)


@pytest.mark.parametrize(("prefix", "why"), [
    ("shop.", "matches production topics"), ("email.", "matches production topics"),
    ("shop.x.", "would nest inside production's 'shop.' topics"),
    ("audience.z.", "would nest inside production's 'audience.' topics")])
def test_a_replay_prefix_among_production_topics_is_refused_at_start_in_one_line_with_exit_2(prefix, why):
    result = invoke(["replay", "--prefix", prefix, "--from", "2026-01-01", "--to", "2026-02-01"],
                    cli_env(bootstrap="localhost:1"))
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"replay: refusing prefix {prefix!r}: ") and why in result.output


def test_only_the_names_a_replay_creates_count_as_its_topics_not_every_name_with_its_prefix(settings):
    from streams.kafka.topics import topic_specs
    from streams.tools.replay import is_replay_topic, replay_settings

    prefix = settings.topics.prefix + "atk"
    created = [s.name for s in topic_specs(replay_settings(settings, prefix))]
    assert len(created) == len(topic_specs(settings)) and all(is_replay_topic(settings, prefix, n) for n in created)
    assert not is_replay_topic(settings, prefix, prefix + "team-risk-events")
    assert not is_replay_topic(settings, prefix, prefix + "shop.carts-archive")


def test_a_prefix_without_its_trailing_dot_does_not_claim_the_dotted_replays_changelog(settings):
    from streams.kafka.topics import topic_specs
    from streams.tools.replay import is_replay_topic, replay_settings

    dotted = settings.topics.prefix + "atk1."
    changelogs = [s.name for s in topic_specs(replay_settings(settings, dotted)) if s.logical.startswith("changelog.")]
    assert changelogs and all(is_replay_topic(settings, dotted, n) for n in changelogs)
    assert not any(is_replay_topic(settings, dotted[:-1], n) for n in changelogs)  # `replay cleanup atk1` keeps them


# ---- against the broker ---------------------------------------------------------------------------

def _topic(kafka: str, name: str) -> None:
    from streams.kafka.topics import TopicSpec, ensure_topics

    assert ensure_topics(kafka, [TopicSpec(name, "other", 1, 1, {"cleanup.policy": "delete"}, "input")]).healthy

@pytest.mark.integration
def test_export_of_an_unknown_topic_says_so_exits_2_and_writes_nothing(kafka, settings, tmp_path):
    from streams.kafka.topics import ensure_topics, topic_specs

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    result = invoke(["export", "--topics", "orders,no_such_topic", "--out", str(tmp_path / "out")],
                    cli_env(settings, kafka))
    assert result.exit_code == 2
    assert "no such topic: no_such_topic" in flat(result.output)
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_export_of_a_range_without_records_says_so_and_exits_1(kafka, settings, tmp_path):
    from streams.kafka.topics import ensure_topics, topic_specs

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", _orders(2))
    out = tmp_path / "out"
    result = invoke(["export", "--topics", "orders", "--out", str(out), "--from", "2020-01-01",
                     "--to", "2020-02-01"], cli_env(settings, kafka))
    assert result.exit_code == 1
    assert flat(result.output) == (f"export: nothing matched: no record in {settings.topics.name('orders')} from "
                                   "2020-01-01T00:00:00+00:00 to 2020-02-01T00:00:00+00:00; no file written")
    assert not out.exists()  # no empty file, not even the directory


@pytest.mark.integration
def test_replay_of_a_range_without_records_says_the_range_is_empty_and_exits_1(kafka, settings, tmp_path):
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.tools.replay import topics_with_prefix
    from tests.test_replay import _recorded_log

    settings.worker.tick_interval_s = 0
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    _recorded_log(settings, kafka)  # November 2026: nothing in January 2020
    prefix = settings.topics.prefix + "r-empty."
    result = invoke(["replay", "--prefix", prefix, "--from", "2020-01-01", "--to", "2020-02-01",
                     "--json", str(tmp_path / "d.json")], cli_env(settings, kafka))
    assert result.exit_code == 1, result.output
    assert flat(result.output) == ("replay: the range is empty: no input record from 2020-01-01T00:00:00+00:00 "
                                   "to 2020-02-01T00:00:00+00:00")
    assert topics_with_prefix(kafka, prefix) == [] and not (tmp_path / "d.json").exists()


@pytest.mark.integration
def test_export_to_parquet_carries_partition_offset_key_and_timestamp_read_by_pyarrow_pandas_and_duckdb(
        kafka, settings, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from streams.kafka.topics import ensure_topics, topic_specs

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    topic = settings.topics.name("orders")
    produce_records(settings, kafka, topic, "OrderEvent", _orders(5))
    result = invoke(["export", "--topics", "orders", "--out", str(tmp_path), "--format", "parquet",
                     "--from", iso(T + DAY_MS), "--to", iso(T + 4 * DAY_MS), "--json", str(tmp_path / "m.json")],
                    cli_env(settings, kafka))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["topics"] == [
        {"topic": topic, "file": str(tmp_path / f"{topic}.parquet"), "records": 3, "skipped": 0}]
    consumed = {(r.partition, r.offset): r for r in read_topic(kafka, topic, idle_s=0.5)}
    rows = pq.read_table(tmp_path / f"{topic}.parquet").to_pylist()
    assert sorted(r["order_id"] for r in rows) == ["o1", "o2", "o3"]
    for r in rows:
        kafka_record = consumed[(r["kafka_partition"], r["kafka_offset"])]
        assert serde.decode(kafka_record.value, topic=topic).record["order_id"] == r["order_id"]
        assert r["kafka_key"] == kafka_record.key.decode() == r["customer_id"]
        assert int(r["kafka_timestamp"].timestamp() * 1000) == kafka_record.timestamp_ms
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_parquet(tmp_path / f"{topic}.parquet")
    assert str(frame["occurred_at"].dtype) == "datetime64[ms, UTC]"
    assert sorted(frame["total"].map(str)) == ["6.2500", "7.2500", "8.2500"]
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    n, = con.execute(f"SELECT count(*) FROM '{tmp_path / f'{topic}.parquet'}' WHERE kafka_offset >= 0").fetchone()
    assert n == 3


@pytest.mark.integration
def test_replay_cleanup_lists_and_deletes_only_the_topics_of_its_prefix(kafka, settings):
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.tools.replay import replay_settings, topics_with_prefix

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    prefix = settings.topics.prefix + "old-replay."
    replay = replay_settings(settings, prefix)
    assert ensure_topics(kafka, topic_specs(replay)).healthy
    unrelated = prefix + "team-risk-events"  # starts with the prefix, is no replay's
    created = [n for n in topics_with_prefix(kafka, prefix) if n != unrelated]
    _topic(kafka, unrelated)
    assert len(created) == len(topic_specs(replay))
    env = cli_env(settings, kafka)
    unconfirmed = invoke(["replay", "cleanup", prefix], env)  # no terminal to confirm on, no --yes
    assert unconfirmed.exit_code == 2 and "--yes" in unconfirmed.output
    declined = invoke(["replay", "cleanup", prefix], env, stdin="n\n")
    assert topics_with_prefix(kafka, prefix) == sorted(created + [unrelated])
    result = invoke(["replay", "cleanup", prefix, "--yes"], env)
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in created)
    assert f"left alone: 1 topic(s) starting with {prefix!r} that a replay does not create: {unrelated}" \
        in flat(result.output)
    assert topics_with_prefix(kafka, prefix) == [unrelated]
    assert set(topics_with_prefix(kafka, settings.topics.prefix)) >= {s.name for s in topic_specs(settings)}
    again = invoke(["replay", "cleanup", prefix, "--yes"], env)
    assert again.exit_code == 1 and "no replay topic under" in again.output
    assert declined.exit_code in (1, 2)


@pytest.mark.integration
def test_replay_prints_iso_times_and_a_summary_table_and_cleanup_removes_its_topics(kafka, settings, tmp_path):
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.tools.replay import topics_with_prefix
    from tests.test_replay import T0, _recorded_log

    settings.worker.tick_interval_s = 0
    assert ensure_topics(kafka, topic_specs(settings)).healthy
    _recorded_log(settings, kafka)  # production never ran: every replay command is "added"
    prefix = settings.topics.prefix + "r1"
    unrelated = prefix + "team-risk-events"  # starts with the prefix; the replay did not create it
    _topic(kafka, unrelated)
    result = invoke(["replay", "--prefix", prefix, "--from", iso(T0 - 2 * HOUR_MS), "--to", iso(T0 + 100 * HOUR_MS),
                     "--cleanup", "--json", str(tmp_path / "d.json")], cli_env(settings, kafka))
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["summary"] == {"added": 5, "removed": 0, "changed": 0, "unchanged": 0}
    text = result.output
    assert f"send_at {iso(T0 + HOUR_MS)}" in text  # A's first reminder, an hour after the cart
    assert "1793" not in text and "added" in text and "unchanged" in text
    assert f"cleanup: deleted the {len(topic_specs(settings))} topics this replay created under {prefix!r}" in text
    assert topics_with_prefix(kafka, prefix) == [unrelated]


@pytest.mark.integration
def test_a_replay_refused_because_its_prefix_holds_data_deletes_nothing_with_cleanup(kafka, settings):
    from streams.kafka.topics import ensure_topics, topic_specs
    from streams.tools.replay import replay_settings, topics_with_prefix

    assert ensure_topics(kafka, topic_specs(settings)).healthy
    prefix = settings.topics.prefix + "earlier."
    earlier = replay_settings(settings, prefix)  # an earlier replay's topics, holding its copy of the inputs
    assert ensure_topics(kafka, topic_specs(earlier)).healthy
    produce_records(earlier, kafka, earlier.topics.name("orders"), "OrderEvent", _orders(1))
    before = topics_with_prefix(kafka, prefix)
    result = invoke(["replay", "--prefix", prefix, "--from", "2026-01-01", "--to", "2026-02-01", "--cleanup"],
                    cli_env(settings, kafka))
    assert result.exit_code == 1
    assert "already holds data" in flat(result.output)
    assert f"cleanup: nothing to delete: this replay created no topic under {prefix!r}" in flat(result.output)
    assert topics_with_prefix(kafka, prefix) == before


# ---- every command: a file that is not there, a choice that does not exist ------------------------

def _shopmail(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args", [
    ["generate", "--customers", "3", "-o", "{tmp}/no/such/dir/events.jsonl"],
    ["audiences", "list", "--from-file", "{tmp}/nowhere.jsonl"],
    ["audiences", "export", "lapsed", "--from-file", "{tmp}/nowhere.jsonl"],
    ["preview", "--context", "{tmp}/nowhere.json", "--no-png", "--out", "{tmp}/preview"],
    ["simulate", "--input", "{tmp}/empty.jsonl", "--output", "{tmp}/no/such/dir/out.jsonl"],
])
def test_a_file_that_cannot_be_opened_is_one_line_naming_it_and_exit_2_with_no_traceback(tmp_path, args):
    (tmp_path / "empty.jsonl").write_text("")
    run = _shopmail(*(a.format(tmp=tmp_path) for a in args))
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"shopmail: error: {tmp_path}/")


def test_simulate_of_an_empty_event_file_says_it_holds_no_event_and_exits_1(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    run = _simulate(["--input", str(tmp_path / "empty.jsonl"), "--output", str(tmp_path / "o.jsonl")])
    assert run.returncode == 1
    assert f"simulate: error: {tmp_path / 'empty.jsonl'} holds no event" in run.stderr


def test_simulate_of_an_empty_input_leaves_an_existing_output_untouched_and_prints_no_zero_summary(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "o.jsonl").write_text('{"command_id": "from an earlier run"}\n')
    (tmp_path / "a.jsonl").write_text('{"audience": "lapsed"}\n')
    result = invoke(["simulate", "--input", str(tmp_path / "empty.jsonl"), "--output", str(tmp_path / "o.jsonl"),
                     "--audiences", str(tmp_path / "a.jsonl"), "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"simulate: error: {tmp_path / 'empty.jsonl'} holds no event (one JSON object a "
                                     'line: {"topic": ..., "value": {...}})')
    assert (tmp_path / "o.jsonl").read_text() == '{"command_id": "from an earlier run"}\n'
    assert (tmp_path / "a.jsonl").read_text() == '{"audience": "lapsed"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "empty.jsonl", "o.jsonl"]  # no temporary file


def test_a_simulate_output_replaces_the_file_only_when_committed_and_keeps_its_mode(tmp_path):
    from streams.tools.simulate import OutputFile

    target = tmp_path / "o.jsonl"
    target.write_text("old\n")
    target.chmod(0o640)
    failed = OutputFile(target)
    failed.open().write(b"half a run\n")
    assert target.read_text() == "old\n"  # written beside it, not into it
    failed.discard()
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    done = OutputFile(target)
    done.open().write(b"new\n")
    done.commit()
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o640
    assert sorted(tmp_path.iterdir()) == [target]
    devnull = OutputFile(Path(os.devnull))  # a device is written to, never replaced by a file
    devnull.open().write(b"x\n")
    devnull.commit()
    assert Path(os.devnull).is_char_device()


def test_simulate_prints_its_summary_counts_with_thousands_separators(tmp_path):
    from streams.config import load_settings
    from streams.tools.traffic import TrafficSpec
    from streams.tools.traffic import write_jsonl as generate_jsonl

    with open(tmp_path / "e.jsonl", "w") as f:
        assert generate_jsonl(TrafficSpec(customers=600, days=30, seed=1), f, load_settings(env={}).topics.name) >= 1000
    result = invoke(["simulate", "--input", str(tmp_path / "e.jsonl"), "--output", str(tmp_path / "o.jsonl"),
                     "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-1]
    events = int(re.search(r"simulate: ([\d,]+) events", summary).group(1).replace(",", ""))
    assert events >= 1000 and f"simulate: {events:,} events, " in summary


@pytest.mark.parametrize(("args", "message"), [
    (["generate", "--customers", "0"], "greater than or equal to 1"),
    (["generate", "--days", "-3"], "greater than or equal to 1"),
    (["bench", "--tiny", "--parts", "core,nosuch"], "no benchmark called nosuch"),
])
def test_a_count_or_choice_that_cannot_be_is_refused_before_any_work(args, message):
    result = invoke(args)
    assert result.exit_code == 2
    assert message in flat(result.output)


def test_preview_without_a_browser_is_one_line_with_the_way_round_it(tmp_path):
    run = subprocess.run([sys.executable, "-m", "streams.cli", "preview", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PATH": str(tmp_path)})  # no chromium on it
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "shopmail: error: no headless Chromium found (install Debian's `chromium` package) "
        "(`preview --no-png` renders without a browser)")


def test_every_topic_schema_writes_to_parquet_and_reads_back_row_for_row(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from schemas.logical import export_schema, to_export
    from streams.kafka.topics import VALUE_SCHEMA
    from streams.tools.parquet import ArrowSchema, write_parquet
    from tests.core_events import inventory, view

    for name in serde.registry().current:  # every schema has an Arrow form
        assert len(ArrowSchema().type_of(export_schema(serde.registry().get(name).raw))[0]) > 0
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for logical, record in shop_log(2) + [view("cust-1", T), inventory("MUG", T, "restocked")]:
        by_topic.setdefault(logical, []).append(record)
    assert {"carts", "orders", "shipments", "customers", "feedback", "clock", "product_views", "inventory"} <= set(
        by_topic)
    for logical, records in by_topic.items():
        raw = serde.registry().get(VALUE_SCHEMA[logical]).raw
        rows = [(ConsumedRecord(logical, 0, i, None, b"", T), to_export(raw)(r)) for i, r in enumerate(records)]
        write_parquet(tmp_path / f"{logical}.parquet", export_schema(raw), rows, logical)
        table = pq.read_table(tmp_path / f"{logical}.parquet")
        assert table.num_rows == len(records)
        assert table.column("kafka_offset").to_pylist() == list(range(len(records)))
