"""`shopmail demo` runs the whole pipeline and exits 0 (also on Ctrl-C); workers serve /healthz and /metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from streams.runtime.metrics import ProcessorMetrics, health
from streams.web import OpsServer
from tests.support.runtime import running_processor
from tests.test_processor_skeleton import order
from streams.kafka.io import produce_records, read_topic

pytestmark = pytest.mark.integration


def test_demo_runs_the_whole_pipeline_and_prints_what_was_sent():
    env = dict(os.environ)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    run = subprocess.run([sys.executable, "-m", "streams.cli", "demo", "--customers", "10", "--timeout", "90"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "What the sink did" in out and "stopped broker" in out
    for flow in ("abandoned_cart", "order_confirmation", "shipping_confirmation", "browse_abandonment"):
        assert flow in out
    assert "failed" not in out
    assert "Attribution by flow, step and variant" in out
    if "holdout" in out.split("Attribution by flow, step and variant")[1]:  # 20 % holdout: not always drawn
        assert "Experiments vs holdout" in out
    assert "chart:" in out and "SES events through the bridge" in out
    assert "tracking page from a shipping mail opens (HTTP 200" in out
    assert re.search(r"audience export: [1-9]\d* hashed emails of abandoned_cart_open", out), out[-3000:]


def test_ctrl_c_shuts_the_demo_down_cleanly():
    env = dict(os.environ)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "demo", "--customers", "4"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline and "produced" not in seen:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, seen + out
    assert "stopped broker, SES emulator, worker, sink and tracking page" in out
    time.sleep(0.5)
    children = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children == [], f"left behind: {children}"


def test_a_worker_serves_health_and_prometheus_metrics(kafka, settings):
    metrics = ProcessorMetrics(lag_interval_s=0)
    with running_processor(settings, kafka) as runtime:
        runtime.observer = metrics
        server = OpsServer(0, lambda: health(runtime), host="127.0.0.1").start()
        try:
            produce_records(settings, kafka, settings.topics.name("orders"), "OrderEvent", [order("ops-1")])
            read_topic(kafka, settings.topics.name("commands"), expect=1, timeout_s=20)
            time.sleep(0.3)
            base = f"http://127.0.0.1:{server.port}"
            assert b'"ok": true' in urllib.request.urlopen(base + "/healthz", timeout=5).read()
            text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        finally:
            server.shutdown()
    assert 'shopmail_processor_commands_total{flow="order_confirmation"}' in text
    assert f'shopmail_processor_events_total{{topic="{settings.topics.name("orders")}"}}' in text
    assert "shopmail_consumer_lag{" in text and "shopmail_processor_clock_skew_seconds{" in text
