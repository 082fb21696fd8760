"""Alerts and the Grafana dashboard: every PromQL expression parses, and names only metrics the code
exports (or the cluster's exporters: Strimzi's Kafka Exporter, kube-state-metrics, Prometheus' own
``up``); every workload has a down alert per namespace; runbook links are absolute and land on a section
of deploy/RUNBOOK.md; the dashboard ConfigMap carries the label the Grafana sidecar loads."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.support.deploy import DEPLOY, ROOT, needs_kubectl, one, rendered

# metrics the code does not export, from exporters an SRE runs next to it (listed, never guessed)
EXTERNAL_METRICS = {
    "kafka_consumergroup_lag",  # Strimzi Kafka Exporter: committed offset vs. log end, per group/topic/partition
    "up",  # Prometheus: the scrape target answered
    "kube_pod_status_ready",  # kube-state-metrics
    "kube_deployment_spec_replicas",  # kube-state-metrics
    "kube_statefulset_replicas",  # kube-state-metrics
}
WORKLOAD_JOBS = {"shopmail-processors", "shopmail-sink", "shopmail-ses-bridge", "shopmail-tracking", "shopmail-unsubscribe"}


def exported_metrics() -> set[str]:
    """Series names the code's prometheus_client metrics expose (counters as <name>_total, histograms
    as _bucket/_sum/_count)."""
    names: set[str] = set()
    for path in list((ROOT / "streams").rglob("*.py")) + list((ROOT / "sinks").rglob("*.py")):
        for kind, name in re.findall(r'\b(Counter|Gauge|Histogram)\(\s*"(shopmail_[a-z_]+)"', path.read_text()):
            if kind == "Counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (parsed, not pattern-matched)."""
    import promql_parser

    names: set[str] = set()

    def visit(node: object) -> bool:
        if type(node).__name__ == "VectorSelector":
            name = getattr(node, "name", None)
            assert name, f"a selector without a metric name hides what it reads: {expr}"
            names.add(name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - exported_metrics() - EXTERNAL_METRICS


def alert_rules() -> list[dict]:
    rule = yaml.safe_load((DEPLOY / "base" / "prometheusrule.yaml").read_text())
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard() -> dict:
    return json.loads((DEPLOY / "base" / "dashboard" / "shopmail.json").read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in dashboard()["panels"] for t in panel.get("targets", [])]


def test_the_metric_check_catches_a_name_the_code_does_not_export():
    assert unknown_metrics('sum(rate(shopmail_processor_events_total[5m])) / sum(rate(shopmail_no_such_total[5m]))') == {
        "shopmail_no_such_total"}
    assert unknown_metrics("histogram_quantile(0.9, sum by (le) (rate(shopmail_sink_send_latency_seconds_bucket[5m])))") == set()
    with pytest.raises(Exception):
        metric_names("sum(rate(shopmail_processor_events_total[5m])")  # unbalanced: not PromQL


@pytest.mark.parametrize("expr", [r["expr"] for r in alert_rules()] + dashboard_exprs())
def test_every_alert_and_dashboard_expression_parses_and_reads_only_exported_metrics(expr):
    assert metric_names(expr), expr
    assert unknown_metrics(expr) == set(), f"not exported by the code nor a listed exporter: {expr}"


def test_lag_comes_from_the_cluster_and_every_workload_has_a_down_alert_per_namespace():
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    assert all("shopmail_consumer_lag" not in expr for expr in rules.values()), "lag alerts read the Kafka Exporter"
    assert any("kafka_consumergroup_lag" in expr and "shopmail-processors" in expr for expr in rules.values())
    assert any("kafka_consumergroup_lag" in expr and "shopmail-sink" in expr for expr in rules.values())
    down_jobs = {job for expr in rules.values()
                 for kind, wanted, job in re.findall(r'\(kube_(deployment_spec|statefulset)_replicas\{\w+="([a-z-]+)"\} > 0\) '
                                                     r'unless on \(namespace\) \(up\{job="([a-z-]+)"\} == 1\)', expr)
                 if wanted == job}
    assert down_jobs == WORKLOAD_JOBS


def _groupings(expr: str) -> list[tuple[str, list[str]]]:
    """(metric names below it, its ``by`` labels) for every aggregation of an expression."""
    import promql_parser

    found: list[tuple[str, list[str]]] = []

    def visit(node: object) -> bool:
        if type(node).__name__ == "AggregateExpr":
            modifier = node.modifier  # type: ignore[attr-defined]
            labels = list(modifier.labels) if modifier is not None and str(modifier).startswith("by") else []
            found.append((" ".join(sorted(metric_names(node.prettify()))), labels))  # type: ignore[attr-defined]
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_the_namespace_check_catches_an_alert_that_sums_across_namespaces():
    assert _groupings("sum(rate(shopmail_sink_sends_total[5m])) > 1") == [("shopmail_sink_sends_total", [])]
    assert _groupings("max by (namespace, provider) (shopmail_deliverability_status) == 2") == [
        ("shopmail_deliverability_status", ["namespace", "provider"])]


def test_every_alert_on_shopmails_own_series_is_per_namespace():
    """One Prometheus often scrapes a dev and a prod release: an alert that summed across namespaces would
    let one hide the other's outage or add their failures together."""
    for rule in alert_rules():
        for metrics, labels in _groupings(rule["expr"]):
            if "shopmail_" in metrics:
                assert "namespace" in labels, f"{rule['alert']} aggregates {metrics} across namespaces"
        assert "absent(up" not in rule["expr"], f"{rule['alert']}: absent() cannot say which namespace is down"


def test_the_dashboard_shows_what_on_call_needs():
    exprs = " ".join(dashboard_exprs())
    for metric in ("kafka_consumergroup_lag", "shopmail_processor_events_total", "shopmail_processor_commands_total",
                   "shopmail_sink_sends_total", "shopmail_feedback_total", "shopmail_dlq_records_total",
                   "shopmail_processor_restore_seconds_bucket", "shopmail_processor_aborted_transactions_total"):
        assert metric in exprs, metric
    assert 'type="bounced"' in exprs and 'type="complained"' in exprs
    assert "sum by (flow)" in exprs and "sum by (outcome)" in exprs
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)


@needs_kubectl
@pytest.mark.parametrize("overlay", ["dev", "prod", "prod-msk-iam"])
def test_rendered_alerts_link_absolute_runbook_sections_and_grafana_loads_the_dashboard(overlay):
    objects = rendered(overlay)
    runbook = (DEPLOY / "RUNBOOK.md").read_text().lower()
    rule = one(objects, "PrometheusRule")
    for r in (r for g in rule["spec"]["groups"] for r in g["rules"]):
        url = r["annotations"]["runbook_url"]
        assert re.fullmatch(r"https://[^#\s]+/RUNBOOK\.md#[a-z0-9-]+", url), f"{r['alert']}: {url}"
        anchor = url.split("#")[1]
        assert f'<a id="{anchor}"></a>' in runbook, f"RUNBOOK.md lacks the section {anchor}"
    board = one(objects, "ConfigMap", "shopmail-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["shopmail.json"]) == dashboard()
    assert not [o for o in objects if o["metadata"]["name"] == "shopmail-runbook"], "local-config is never applied"


def test_the_deliverability_alerts_say_on_how_many_partitions_a_provider_is_paused():
    """Each partition's guard decides on its own customers' feedback: a pause on 1 of 6 partitions holds a
    sixth of the mail, and the alert says so instead of calling the provider paused."""
    rules = {r["alert"]: r for r in alert_rules()}
    for name, status in (("ShopmailDeliverabilityStopped", "== 2"), ("ShopmailDeliverabilityWarn", ">= 1")):
        expr = rules[name]["expr"]
        assert expr == f"count by (namespace, provider) (shopmail_deliverability_status {status}) > 0"
        assert _groupings(expr) == [("shopmail_deliverability_status", ["namespace", "provider"])]
        summary = rules[name]["annotations"]["summary"]
        assert "{{ $value }} of" in summary and "partitions" in summary
        inner = summary.split("printf `")[1].split("`")[0].replace("%q", '"prod"')
        assert metric_names(inner) == {"shopmail_deliverability_status"}  # the denominator's query parses
