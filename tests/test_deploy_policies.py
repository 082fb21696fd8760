"""The NetworkPolicies of every overlay, evaluated against the rendered pods the way the API server's
network plugin does (selectors matched against pod template and namespace labels; a pod selected by
any policy of a direction is isolated in it and admits only what some rule allows): the default-deny
selects every workload, each allow rule matches the peers it names, Prometheus reaches every scraped
port, and nothing else reaches the workloads."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.support.deploy import needs_kubectl, rendered

OVERLAYS = ["dev", "prod", "prod-msk-iam"]
WORKLOADS = {"shopmail-processors", "shopmail-sink", "shopmail-ses-bridge", "shopmail-tracking", "shopmail-unsubscribe"}


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[tuple[str, int], ...] = ()  # (name, containerPort)

    def port(self, name: str) -> int:
        return next(number for port_name, number in self.ports if port_name == name)


# the pods around the workloads, as the charts the manifests name label them
PROMETHEUS = Pod("prometheus-0", "monitoring", {"app.kubernetes.io/name": "prometheus"})
INGRESS_NGINX = Pod("ingress-nginx-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
KAFKA_BROKER = Pod("shopmail-kafka-0", "kafka", {"strimzi.io/cluster": "shopmail-kafka"})
COREDNS = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"})
STRANGERS = [Pod("curl", "default", {"app": "curl"}), Pod("grafana", "monitoring", {"app.kubernetes.io/name": "grafana"}),
             Pod("shopmail-kafka-0", "kafka", {"strimzi.io/cluster": "shopmail-kafka"}),
             Pod("exporter", "monitoring-extra", {"app.kubernetes.io/name": "prometheus"})]


def matches(selector: dict | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector ({} selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def peer_matches(peer: dict, policy_namespace: str, pod: Pod) -> bool:
    assert "ipBlock" not in peer, "ipBlock peers are not modelled: add them to this test"
    if "namespaceSelector" in peer:
        in_namespace = matches(peer["namespaceSelector"], namespace_labels(pod.namespace))
    else:  # a podSelector alone means the policy's own namespace
        in_namespace = pod.namespace == policy_namespace
    return in_namespace and ("podSelector" not in peer or matches(peer["podSelector"], pod.labels))


def port_listed(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return ports is None or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def selecting(policies: list[dict], pod: Pod, direction: str) -> list[dict]:
    return [p for p in policies if p["metadata"]["namespace"] == pod.namespace
            and matches(p["spec"]["podSelector"], pod.labels) and direction in p["spec"]["policyTypes"]]


def ingress_allowed(policies: list[dict], source: Pod, target: Pod, port: int) -> bool:
    isolating = selecting(policies, target, "Ingress")
    return not isolating or any(
        port_listed(rule, port, "TCP") and ("from" not in rule or any(
            peer_matches(peer, pol["metadata"]["namespace"], source) for peer in rule["from"]))
        for pol in isolating for rule in pol["spec"].get("ingress", []))


def egress_allowed(policies: list[dict], source: Pod, target: Pod | None, port: int, protocol: str = "TCP") -> bool:
    """``target`` None: an address outside the cluster (matched only by rules without ``to``)."""
    isolating = selecting(policies, source, "Egress")
    return not isolating or any(
        port_listed(rule, port, protocol) and ("to" not in rule or (target is not None and any(
            peer_matches(peer, pol["metadata"]["namespace"], target) for peer in rule["to"])))
        for pol in isolating for rule in pol["spec"].get("egress", []))


def workload_pods(objects: list[dict]) -> dict[str, Pod]:
    pods = {}
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            template = o["spec"]["template"]
            ports = tuple((p["name"], p["containerPort"]) for c in template["spec"]["containers"] for p in c.get("ports", []))
            pods[o["metadata"]["name"]] = Pod(o["metadata"]["name"], o["metadata"]["namespace"],
                                              template["metadata"]["labels"], ports)
    return pods


def scraped_ports(objects: list[dict], pods: dict[str, Pod]) -> dict[str, int]:
    """Workload → the container port a ServiceMonitor has Prometheus scrape."""
    services = [o for o in objects if o["kind"] == "Service"]
    out: dict[str, int] = {}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        for service in (s for s in services if matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))):
            for endpoint in monitor["spec"]["endpoints"]:
                svc_port = next((p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]), None)
                if svc_port is None:
                    continue
                for name, pod in pods.items():
                    if matches({"matchLabels": service["spec"]["selector"]}, pod.labels):
                        target = svc_port["targetPort"]
                        out[name] = pod.port(target) if isinstance(target, str) else target
    return out


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[list[dict], dict[str, Pod], list[dict]]:
    objects = rendered(request.param)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    return objects, workload_pods(objects), policies


@needs_kubectl
def test_every_policy_selects_the_workloads_it_is_meant_for_and_the_default_deny_selects_them_all(overlay):
    objects, pods, policies = overlay
    assert set(pods) == WORKLOADS
    selected = {p["metadata"]["name"]: {name for name, pod in pods.items()
                                        if p["metadata"]["namespace"] == pod.namespace
                                        and matches(p["spec"]["podSelector"], pod.labels)} for p in policies}
    assert selected["shopmail-default-deny"] == WORKLOADS
    assert selected["shopmail-egress"] == WORKLOADS and selected["shopmail-ingress"] == WORKLOADS
    assert selected["shopmail-sns-ingress"] == {"shopmail-ses-bridge"}
    assert selected["shopmail-tracking-ingress"] == {"shopmail-tracking"}
    assert selected["shopmail-unsubscribe-ingress"] == {"shopmail-unsubscribe"}
    assert all(selected.values()), f"policies that select no pod: {[n for n, s in selected.items() if not s]}"


@needs_kubectl
def test_each_allow_rule_matches_the_peers_it_names(overlay):
    _, _, policies = overlay
    known = [PROMETHEUS, INGRESS_NGINX, KAFKA_BROKER, COREDNS]
    for pol in policies:
        for rule in pol["spec"].get("ingress", []) + pol["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                assert any(peer_matches(peer, pol["metadata"]["namespace"], pod) for pod in known), (
                    f"{pol['metadata']['name']}: the peer {peer} matches no pod it is meant for")


@needs_kubectl
def test_prometheus_reaches_every_scraped_port_and_the_public_ports_only_the_ingress_controller(overlay):
    objects, pods, policies = overlay
    scraped = scraped_ports(objects, pods)
    assert set(scraped) == WORKLOADS, f"not scraped: {WORKLOADS - set(scraped)}"
    for name, port in scraped.items():
        assert ingress_allowed(policies, PROMETHEUS, pods[name], port), f"Prometheus cannot scrape {name}:{port}"
    public = {("shopmail-ses-bridge", 6068), ("shopmail-tracking", 8080), ("shopmail-unsubscribe", 8080)}
    for name, pod in pods.items():
        for _, port in pod.ports:
            reachable = ingress_allowed(policies, INGRESS_NGINX, pod, port)
            assert reachable == ((name, port) in public), f"ingress controller → {name}:{port}: {reachable}"


@needs_kubectl
def test_nothing_else_reaches_the_workloads(overlay):
    _, pods, policies = overlay
    neighbours = list(pods.values())  # shopmail pods do not talk to each other
    for pod in pods.values():
        for _, port in pod.ports:
            for stranger in STRANGERS + neighbours:
                assert not ingress_allowed(policies, stranger, pod, port), f"{stranger.name} reaches {pod.name}:{port}"


@needs_kubectl
def test_workloads_reach_kafka_dns_and_https_and_nothing_else(overlay):
    objects, pods, policies = overlay
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shopmail-config")
    bootstrap_ports = {int(server.rsplit(":", 1)[1]) for server in config["data"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")}
    in_cluster_kafka = config["data"]["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0].endswith(".svc")
    msk_iam = config["data"].get("SHOPMAIL_KAFKA__SECURITY__OAUTH_PROVIDER") == "aws-msk-iam"
    for pod in pods.values():
        for port in bootstrap_ports:
            assert egress_allowed(policies, pod, KAFKA_BROKER if in_cluster_kafka else None, port), (pod.name, port)
        assert egress_allowed(policies, pod, COREDNS, 53, "UDP") and egress_allowed(policies, pod, COREDNS, 53)
        # HTTPS only where AWS is called: SES (sink), SNS certificates (bridge); on MSK with IAM every pod
        # fetches its signing credentials from STS
        calls_aws = pod.name in ("shopmail-sink", "shopmail-ses-bridge") or msk_iam
        assert egress_allowed(policies, pod, None, 443) == calls_aws, (pod.name, "443")
        assert not egress_allowed(policies, pod, None, 5432)
        assert not egress_allowed(policies, pod, STRANGERS[0], 8080)
        assert not egress_allowed(policies, pod, None, 53, "UDP"), "DNS only through the cluster's resolver"
