"""deploy/: every overlay renders with kubectl kustomize, validates offline against Kubernetes schemas,
and keeps the security, probes, scaling and topic contracts. The NetworkPolicies are evaluated against
the rendered pods (selectors matched, traffic allowed or not); every PromQL expression of the alerts
and the dashboard parses and names only metrics the code (or the cluster's exporters) export."""

from __future__ import annotations

import re

import pytest
import yaml

from streams.config import load_settings
from streams.kafka.strimzi import render
from tests.support.deploy import DEPLOY, needs_kubectl, pod_specs, rendered

OVERLAYS = ["dev", "prod"]
WORKLOAD_OVERLAYS = ["dev", "prod", "prod-msk-iam"]
CRDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "KafkaTopic", "TriggerAuthentication"}
WORKLOADS = {"shopmail-processors", "shopmail-sink", "shopmail-ses-bridge", "shopmail-tracking", "shopmail-unsubscribe"}


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
@pytest.mark.parametrize("overlay", WORKLOAD_OVERLAYS)
def test_every_pod_is_non_root_read_only_without_capabilities_and_has_probes_and_resources(overlay):
    objects = rendered(overlay)
    specs = pod_specs(objects)
    assert {name for name, _ in specs} == WORKLOADS
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"], name
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            for env in c.get("env", []):  # secrets come from mounted files (…_FILE / …_DIR name the path)
                if env["name"].endswith(("_FILE", "_DIR")):
                    assert env["value"].startswith("/"), f"{name}: {env['name']}"
                    continue
                assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", env["name"]), f"{name}: {env['name']}"
    assert not [o for o in objects if o["kind"] == "Secret"]


@needs_kubectl
@pytest.mark.parametrize("overlay", WORKLOAD_OVERLAYS)
def test_each_component_has_its_own_service_account_without_an_api_token_and_aws_roles_only_where_aws_is_called(
        overlay):
    objects = rendered(overlay)
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    for name, spec in pod_specs(objects):
        assert spec["serviceAccountName"] == name, f"{name} runs as {spec['serviceAccountName']}"
        assert spec["automountServiceAccountToken"] is False, name
    assert set(accounts) == WORKLOADS
    roles = {name: sa.get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn")
             for name, sa in accounts.items()}
    assert all(sa["automountServiceAccountToken"] is False for sa in accounts.values())
    if overlay == "prod-msk-iam":  # every component signs its MSK connections with a role of its own
        assert all(arn and arn.startswith("arn:aws:iam::") for arn in roles.values())
        assert len(set(roles.values())) == len(roles)
    else:  # only the sink calls AWS (SES); the bridge receives SNS posts and calls nothing
        assert roles["shopmail-sink"].startswith("arn:aws:iam::")
        assert {name for name, arn in roles.items() if arn} == {"shopmail-sink"}


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
@pytest.mark.parametrize("overlay", [*OVERLAYS, "prod-msk-iam"])
def test_keda_never_scales_a_workload_below_the_replicas_its_overlay_asks_for(overlay):
    objects = rendered(overlay)
    replicas = {(o["kind"], o["metadata"]["name"]): o["spec"]["replicas"] for o in objects
                if o["kind"] in ("Deployment", "StatefulSet")}
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    assert scaled
    for so in scaled:
        target = so["spec"]["scaleTargetRef"]
        wanted = replicas[(target["kind"], target["name"])]
        assert so["spec"]["minReplicaCount"] == wanted <= so["spec"]["maxReplicaCount"], so["metadata"]["name"]


@needs_kubectl
def test_network_policy_allows_only_kafka_https_dns_and_scraping():
    policies = [o for o in rendered("prod") if o["kind"] == "NetworkPolicy"]
    egress_ports = {p["port"] for pol in policies for rule in pol["spec"].get("egress", []) for p in rule["ports"]}
    assert egress_ports == {9092, 9093, 443, 53}
    deny = next(p for p in policies if p["metadata"]["name"] == "shopmail-default-deny")
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny["spec"]


MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
INGRESS_CONTROLLER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                      "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}


@needs_kubectl
@pytest.mark.parametrize("overlay", WORKLOAD_OVERLAYS)
def test_the_sns_port_admits_only_the_ingress_controller_and_the_ops_ports_only_monitoring(overlay):
    policies = [o for o in rendered(overlay) if o["kind"] == "NetworkPolicy"]
    admitted: dict[int, list[tuple[str, dict]]] = {}
    for pol in policies:
        for rule in pol["spec"].get("ingress", []):
            assert rule.get("from"), f"{pol['metadata']['name']}: an ingress rule without `from` admits anyone"
            for port in rule["ports"]:
                admitted.setdefault(port["port"], []).extend((pol["metadata"]["name"], peer) for peer in rule["from"])
    assert {port: [peer for _, peer in peers] for port, peers in admitted.items()} == {
        6066: [MONITORING], 6067: [MONITORING], 6069: [MONITORING, MONITORING],  # bridge and tracking ops
        6070: [MONITORING],  # the unsubscribe server's ops port
        6068: [INGRESS_CONTROLLER],  # SNS posts
        8080: [INGRESS_CONTROLLER, INGRESS_CONTROLLER]}  # the tracking page and webhooks; unsubscribe links
    (sns_policy,) = {name for name, _ in admitted[6068]}
    selector = next(p["spec"]["podSelector"] for p in policies if p["metadata"]["name"] == sns_policy)
    assert selector == {"matchLabels": {"app.kubernetes.io/name": "shopmail-ses-bridge"}}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_bind_their_listeners_on_all_interfaces_at_the_ports_probes_and_policies_use(overlay, tmp_path):
    defaults = load_settings(env={})
    assert defaults.ops.bind_host == defaults.bridge.bind_host == "127.0.0.1"  # local runs stay on loopback
    objects = rendered(overlay)
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shopmail-config")
    toml = tmp_path / "shopmail.toml"
    toml.write_text(config["data"]["shopmail.toml"])
    shared_env = {k: v for k, v in config["data"].items() if k.startswith("SHOPMAIL_") and k != "SHOPMAIL_CONFIG"}
    ops_port = {"shopmail-processors": lambda s: s.worker.web_port, "shopmail-sink": lambda s: s.sink.web_port,
                "shopmail-ses-bridge": lambda s: s.bridge.web_port}
    for name, spec in pod_specs(objects):
        (container,) = spec["containers"]
        env = {**shared_env, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}}
        settings = load_settings(toml, env=env)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        probes = {container[p]["httpGet"]["port"] for p in ("livenessProbe", "readinessProbe")}
        if name == "shopmail-tracking":  # a public server of its own; probes on its ops port ("metrics")
            assert settings.tracking.bind_host == "0.0.0.0" and ports["http"] == settings.tracking.port
            assert ports["metrics"] == settings.tracking.web_port and probes == {"metrics"}
            continue
        if name == "shopmail-unsubscribe":  # a public server of its own; probes on its ops port
            assert settings.unsubscribe.bind_host == "0.0.0.0" and ports["http"] == settings.unsubscribe.port
            assert settings.ops.bind_host == "0.0.0.0" and ports["ops"] == settings.unsubscribe.web_port
            assert probes == {"ops"}
            continue
        assert settings.ops.bind_host == "0.0.0.0" and ports["ops"] == ops_port[name](settings), name
        assert container["livenessProbe"]["httpGet"]["port"] == container["readinessProbe"]["httpGet"]["port"] == "ops"
        if name == "shopmail-processors":  # not ready while restoring or unassigned; not live when stalled
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        if name == "shopmail-ses-bridge":
            args = container["args"]
            assert settings.bridge.bind_host == "0.0.0.0"
            assert int(args[args.index("--http-port") + 1]) == ports["sns"] == 6068


@pytest.mark.parametrize("overlay,rf", [("dev", 1), ("prod", 3)])
def test_committed_kafka_topics_equal_the_generator_output(overlay, rf):
    committed = (DEPLOY / "overlays" / overlay / "kafka-topics.yaml").read_text()
    assert committed == render(load_settings(env={}), rf, "shopmail-kafka"), \
        f"regenerate: python -m streams.kafka.strimzi --replication {rf} > deploy/overlays/{overlay}/kafka-topics.yaml"
    topics = [d for d in yaml.safe_load_all(committed) if d]
    assert all(t["spec"]["replicas"] == rf for t in topics)
    compacted = {t["spec"]["topicName"] for t in topics if t["spec"]["config"]["cleanup.policy"] == "compact"}
    assert {"email.sink-ledger", "shopmail-processors-state-changelog", "shop.customers"} <= compacted


