"""deploy/base/tracking.yaml: valid Kubernetes objects, hardened pod with probes on the public port,
and a NetworkPolicy that admits the public port from the ingress namespace only."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "base" / "tracking.yaml"


def objects() -> dict[str, dict]:
    return {o["kind"]: o for o in yaml.safe_load_all(MANIFEST.read_text()) if o}


def test_the_tracking_objects_validate_against_kubernetes_schemas():
    import kubernetes_validate

    objs = objects()
    assert set(objs) == {"Service", "Deployment", "PodDisruptionBudget", "NetworkPolicy"}
    for obj in objs.values():
        kubernetes_validate.validate(obj, "1.32", strict=True)


def test_the_pod_is_hardened_and_probed_on_its_ops_port():
    pod = objects()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["args"] == ["tracking"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # /healthz and /readyz are served on the ops port only, never on the public one
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SHOPMAIL_TRACKING__BIND_HOST"] == "0.0.0.0" and "SHOPMAIL_TRACKING__SECRET" not in env  # key from a file


def test_only_the_ingress_controller_reaches_the_public_port():
    rules = objects()["NetworkPolicy"]["spec"]["ingress"]
    public = [r for r in rules if any(p["port"] == 8080 for p in r["ports"])]
    assert len(public) == 1
    assert public[0]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}]
    assert all(8080 not in [p["port"] for p in r["ports"]] for r in rules if r is not public[0])
