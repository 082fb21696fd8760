"""deploy/: every overlay renders with kubectl kustomize, validates offline against Kubernetes schemas,
and keeps the security, probes, scaling and topic contracts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.config import load_settings
from streams.topics_k8s import render

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["dev", "prod"]
CRDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "KafkaTopic"}

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")


def rendered(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects
            if o["kind"] in ("Deployment", "StatefulSet")]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_core_objects_validate_against_kubernetes_schemas(overlay):
    import kubernetes_validate

    objects = rendered(overlay)
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Deployment", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy",
            "ServiceMonitor", "ScaledObject", "PrometheusRule", "KafkaTopic"} <= kinds
    for obj in objects:
        if obj["kind"] in CRDS:
            assert obj["apiVersion"] and obj["metadata"]["name"] and obj["spec"], obj["kind"]
            continue
        kubernetes_validate.validate(obj, "1.32", strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_non_root_read_only_without_capabilities_and_has_probes_and_resources(overlay):
    objects = rendered(overlay)
    specs = pod_specs(objects)
    assert {name for name, _ in specs} == {"shopmail-processors", "shopmail-sink", "shopmail-ses-bridge"}
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["serviceAccountName"] == "shopmail", name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"], name
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            for env in c.get("env", []):
                assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", env["name"]), f"{name}: {env['name']}"
    sa = next(o for o in objects if o["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert not [o for o in objects if o["kind"] == "Secret"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_pdb_and_scaling_never_exceeds_the_input_partitions(overlay):
    objects = rendered(overlay)
    pdbs = [o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for o in objects
            if o["kind"] == "PodDisruptionBudget"]
    workloads = [o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for o in objects
                 if o["kind"] in ("Deployment", "StatefulSet")]
    assert sorted(pdbs) == sorted(workloads)
    partitions = load_settings(env={}).topics.partitions
    for so in (o for o in objects if o["kind"] == "ScaledObject"):
        assert so["spec"]["maxReplicaCount"] <= partitions
        assert all(t["type"] == "kafka" and int(t["metadata"]["lagThreshold"]) > 0 for t in so["spec"]["triggers"])


@needs_kubectl
def test_network_policy_allows_only_kafka_https_dns_and_scraping():
    policies = [o for o in rendered("prod") if o["kind"] == "NetworkPolicy"]
    egress_ports = {p["port"] for pol in policies for rule in pol["spec"].get("egress", []) for p in rule["ports"]}
    assert egress_ports == {9092, 9093, 443, 53}
    deny = next(p for p in policies if p["metadata"]["name"] == "shopmail-default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny["spec"]


@pytest.mark.parametrize("overlay,rf", [("dev", 1), ("prod", 3)])
def test_committed_kafka_topics_equal_the_generator_output(overlay, rf):
    committed = (DEPLOY / "overlays" / overlay / "kafka-topics.yaml").read_text()
    assert committed == render(load_settings(env={}), rf, "shopmail-kafka"), \
        f"regenerate: python -m streams.topics_k8s --replication {rf} > deploy/overlays/{overlay}/kafka-topics.yaml"
    topics = [d for d in yaml.safe_load_all(committed) if d]
    assert all(t["spec"]["replicas"] == rf for t in topics)
    compacted = {t["spec"]["topicName"] for t in topics if t["spec"]["config"]["cleanup.policy"] == "compact"}
    assert {"email.sink-ledger", "shopmail-processors-state-changelog", "shop.customers"} <= compacted


def metric_names_in_code() -> set[str]:
    names = set()
    for path in list((ROOT / "streams").rglob("*.py")) + list((ROOT / "sinks").rglob("*.py")):
        names.update(re.findall(r'(?:Counter|Gauge|Histogram)\(\s*"(shopmail_[a-z_]+)"', path.read_text()))
    return names


def test_alert_rules_parse_as_promql_and_only_use_metrics_the_code_exports():
    import promql_parser

    rule = yaml.safe_load((DEPLOY / "base" / "prometheusrule.yaml").read_text())
    exported = metric_names_in_code()
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(rules) >= 6
    for r in rules:
        promql_parser.parse(r["expr"])
        used = set(re.findall(r"\b(shopmail_[a-z_]+)", r["expr"]))
        assert used and used <= exported, f"{r['alert']}: {used - exported} not exported"
        assert r["annotations"]["runbook"].startswith("RUNBOOK.md#")
    runbook = (DEPLOY / "RUNBOOK.md").read_text().lower()
    for r in rules:
        anchor = r["annotations"]["runbook"].split("#")[1]
        assert f'<a id="{anchor}"></a>' in runbook, f"RUNBOOK.md lacks the section {anchor}"
