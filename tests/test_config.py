"""Configuration: defaults of DESIGN.md, TOML file, environment overrides, typed errors."""

from __future__ import annotations

import pytest

from streams.config import DAY_MS, HOUR_MS, ConfigError, load_settings


def test_defaults_are_the_ones_design_md_documents():
    s = load_settings(env={})
    assert s.flows.abandoned_cart.delays_ms == [HOUR_MS, 24 * HOUR_MS, 72 * HOUR_MS]
    assert s.flows.win_back.lapse_days == {"vip": 90, "repeat": 90, "one_time": 90}
    assert s.flows.guards.frequency_cap_ms == 20 * HOUR_MS
    assert (s.flows.guards.quiet_start_hour, s.flows.guards.quiet_end_hour) == (22, 8)
    assert s.metrics.click_window_ms == 5 * DAY_MS and s.metrics.open_window_ms == DAY_MS
    assert s.worker.late_grace_ms == 10 * 60_000 and s.worker.tick_interval_s == 30
    assert s.topics.name("carts") == "shop.carts" and s.topics.dlq("orders") == "shop.orders.dlq"


def test_toml_file_then_environment_override_defaults(tmp_path):
    cfg = tmp_path / "shopmail.toml"
    cfg.write_text('[topics]\nprefix = "replay."\npartitions = 12\n'
                   '[flows.abandoned_cart]\ndelays_ms = [7200000, 86400000, 259200000]\n')
    s = load_settings(cfg, env={"SHOPMAIL_TOPICS__PARTITIONS": "3", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"})
    assert s.topics.prefix == "replay." and s.topics.partitions == 3
    assert s.flows.abandoned_cart.delays_ms[0] == 2 * HOUR_MS
    assert s.kafka.bootstrap_servers == "k:9092"
    assert s.topics.name("commands") == "replay.email.commands"


def test_environment_lists_and_maps_are_parsed():
    s = load_settings(env={"SHOPMAIL_FLOWS__WIN_BACK__LAPSE_DAYS": "vip=60,repeat=75,one_time=90",
                           "SHOPMAIL_FLOWS__ABANDONED_CART__DELAYS_MS": "1000,2000,3000"})
    assert s.flows.win_back.lapse_days == {"vip": 60, "repeat": 75, "one_time": 90}
    assert s.flows.abandoned_cart.delays_ms == [1000, 2000, 3000]


def test_unknown_settings_and_bad_values_are_clear_errors(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[topics]\npartitons = 3\n")
    with pytest.raises(ConfigError, match="partitons"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="topics.partitions"):
        load_settings(env={"SHOPMAIL_TOPICS__PARTITIONS": "many"})


def test_experiments_are_declared_in_config(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[[flows.experiments]]\nname = "subject-2026"\nflow = "abandoned_cart"\nstep = 1\n'
                   'holdout = 0.1\nvariants = { A = 0.5, B = 0.5 }\n')
    (exp,) = load_settings(cfg, env={}).flows.experiments
    assert exp.name == "subject-2026" and exp.variants == {"A": 0.5, "B": 0.5} and exp.holdout == 0.1


def test_a_renamed_setting_still_works_under_its_old_name_and_the_log_names_the_new_one(tmp_path, caplog):
    path = tmp_path / "shop.toml"
    path.write_text("[flows.transactional]\nfeedback_delay_ms = 3600000\nfeedback_coupon_percent = 15\n")
    s = load_settings(path, env={"SHOPMAIL_FLOWS__TRANSACTIONAL__FEEDBACK_COUPON_PERCENT": "20"})
    assert s.flows.delivery_feedback.delay_ms == HOUR_MS
    assert s.flows.delivery_feedback.coupon_percent == 20  # the environment still overrides the file
    assert "flows.transactional.feedback_delay_ms is now flows.delivery_feedback.delay_ms" in caplog.text
    both = load_settings(env={}, overrides={"flows": {"transactional": {"feedback_delay_ms": 1},
                                                      "delivery_feedback": {"delay_ms": 2}}})
    assert both.flows.delivery_feedback.delay_ms == 2  # the new name wins where both are given
