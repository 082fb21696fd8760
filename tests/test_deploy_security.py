"""deploy/ for secured clusters: processors' state on PersistentVolumeClaims, Kafka credentials from
Secrets (SCRAM over TLS on Strimzi, IAM on MSK), one KafkaUser per component whose ACLs are generated
from the topic list — and a check that each component's code touches only topics its ACLs grant."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from streams.config import Settings, load_settings
from streams.kafka.io import security_config
from streams.kafka.topics import INPUT_TOPICS, component_access, topic_specs
from streams.kafka.strimzi import kafka_users, render_users, user_acls
from tests.support.deploy import DEPLOY, ROOT, needs_kubectl, one, rendered

WORKLOAD_OVERLAYS = ["dev", "prod", "prod-msk-iam"]
CONTAINER_COMPONENT = {"processor": "processors", "sink": "sink", "ses-bridge": "ses-bridge", "tracking": "tracking",
                       "unsubscribe": "unsubscribe"}


@needs_kubectl
def test_the_msk_iam_overlay_validates_against_kubernetes_schemas() -> None:
    import kubernetes_validate

    for obj in rendered("prod-msk-iam"):
        if obj["kind"] not in ("ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"):
            kubernetes_validate.validate(obj, "1.32", strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", WORKLOAD_OVERLAYS)
def test_processors_keep_their_state_on_a_persistent_volume_claim_not_an_empty_dir(overlay: str) -> None:
    sts = one(rendered(overlay), "StatefulSet")
    spec = sts["spec"]
    mounts = {m["name"]: m["mountPath"] for m in spec["template"]["spec"]["containers"][0]["volumeMounts"]}
    claims = {c["metadata"]["name"]: c["spec"] for c in spec["volumeClaimTemplates"]}
    assert "state" in claims and mounts["state"] == "/var/lib/shopmail"
    assert "state" not in {v["name"] for v in spec["template"]["spec"]["volumes"]}  # the claim, not a pod volume
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    if overlay.startswith("prod"):
        assert claims["state"]["storageClassName"] and claims["state"]["resources"]["requests"]["storage"] == "50Gi"


def _workloads(objects: list[dict]) -> list[tuple[dict, dict]]:
    return [(o["spec"]["template"]["spec"], o["spec"]["template"]["spec"]["containers"][0]) for o in objects
            if o["kind"] in ("Deployment", "StatefulSet")]


@needs_kubectl
def test_prod_workloads_authenticate_as_their_own_kafka_user_with_the_password_from_its_secret() -> None:
    objects = rendered("prod")
    config = one(objects, "ConfigMap", "shopmail-config")["data"]
    users = {u["metadata"]["name"] for u in rendered("prod-kafka-users")}
    assert config["SHOPMAIL_KAFKA__SECURITY__PROTOCOL"] == "SASL_SSL" and config["KAFKA_BOOTSTRAP_SERVERS"].endswith(":9093")
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in config), "no literal secret in a ConfigMap"
    seen = set()
    for pod, container in _workloads(objects):
        component = CONTAINER_COMPONENT[container["name"]]
        env = {e["name"]: e.get("value") for e in container["env"]}
        user = env["SHOPMAIL_KAFKA__SECURITY__SASL_USERNAME"]
        assert user == f"shopmail-{component}" and user in users
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert volumes["kafka-user"]["secret"]["secretName"] == user  # the Secret Strimzi writes for the user
        password = Path(mounts["kafka-user"]) / volumes["kafka-user"]["secret"]["items"][0]["path"]
        assert str(password) == config["SHOPMAIL_KAFKA__SECURITY__SASL_PASSWORD_FILE"]
        ca = Path(mounts["kafka-ca"]) / volumes["kafka-ca"]["secret"]["items"][0]["path"]
        assert str(ca) == config["SHOPMAIL_KAFKA__SECURITY__SSL_CA_LOCATION"]
        seen.add(component)
    assert seen == {"processors", "sink", "ses-bridge", "tracking", "unsubscribe"}


@needs_kubectl
@pytest.mark.parametrize("overlay", ["prod", "prod-msk-iam"])
def test_the_security_settings_in_each_overlay_are_real_settings_that_build_a_client_config(
        overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = one(rendered(overlay), "ConfigMap", "shopmail-config")["data"]
    env = {k: v for k, v in data.items() if k.startswith("SHOPMAIL_KAFKA__")}
    for key in ("SASL_PASSWORD_FILE", "SSL_CA_LOCATION"):  # the mounted Secrets, here as files
        name = f"SHOPMAIL_KAFKA__SECURITY__{key}"
        if name in env:
            (tmp_path / key).write_text("x")
            env[name] = str(tmp_path / key)
    env["SHOPMAIL_KAFKA__SECURITY__SASL_USERNAME"] = "shopmail-sink"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    cfg = security_config(load_settings(env=env).kafka.security)  # unknown names → ConfigError
    assert cfg["security.protocol"] == "SASL_SSL"
    assert cfg["sasl.mechanism"] == ("OAUTHBEARER" if overlay == "prod-msk-iam" else "SCRAM-SHA-512")
    if overlay == "prod-msk-iam":
        egress = {p["port"] for o in rendered(overlay) if o["kind"] == "NetworkPolicy"
                  for r in o["spec"].get("egress", []) for p in r["ports"]}
        assert 9098 in egress


def test_committed_kafka_users_equal_the_generator_output() -> None:
    committed = (DEPLOY / "overlays" / "prod-kafka-users" / "kafka-users.yaml").read_text()
    assert committed == render_users(load_settings(env={}), "shopmail-kafka"), (
        "regenerate: python -m streams.kafka.strimzi --users > deploy/overlays/prod-kafka-users/kafka-users.yaml")


def _auth_params(objects: list[dict], auth: dict) -> dict[str, str]:
    """A TriggerAuthentication's parameters as KEDA resolves them: ConfigMap values from the render,
    Secret references as "secret:<name>/<key>" (Strimzi writes those Secrets)."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    params = {ref["parameter"]: maps[ref["name"]][ref["key"]] for ref in auth["spec"].get("configMapTargetRef", [])}
    params |= {ref["parameter"]: f"secret:{ref['name']}/{ref['key']}" for ref in auth["spec"].get("secretTargetRef", [])}
    return params


@needs_kubectl
@pytest.mark.parametrize("overlay", WORKLOAD_OVERLAYS)
def test_keda_reads_lag_of_every_input_topic_and_the_commands_from_the_brokers_the_workloads_use(overlay: str) -> None:
    s = load_settings(env={})
    objects = rendered(overlay)
    config = one(objects, "ConfigMap", "shopmail-config")["data"]
    workloads = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
    watched: dict[str, set[str]] = {}
    for so in (o for o in objects if o["kind"] == "ScaledObject"):
        target = so["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) in workloads
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert meta["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"], so["metadata"]["name"]
            watched.setdefault(meta["consumerGroup"], set()).add(meta["topic"])
    assert watched == {s.worker.app_id: {s.topics.name(lt) for lt in INPUT_TOPICS},
                       s.sink.group_id: {s.topics.name("commands")}}


@needs_kubectl
@pytest.mark.parametrize("overlay", ["prod", "prod-msk-iam"])
def test_keda_authenticates_on_a_secured_cluster(overlay: str) -> None:
    objects = rendered(overlay)
    config = one(objects, "ConfigMap", "shopmail-config")["data"]
    auths = {o["metadata"]["name"]: o for o in objects if o["kind"] == "TriggerAuthentication"}
    triggers = [t for o in objects if o["kind"] == "ScaledObject" for t in o["spec"]["triggers"]]
    names = {t.get("authenticationRef", {}).get("name") for t in triggers}
    (name,) = names
    assert name in auths, f"every trigger must name an existing TriggerAuthentication, got {names}"
    params = _auth_params(objects, auths[name])
    assert params["tls"] == "enable"
    if overlay == "prod":  # SCRAM over TLS as KafkaUser shopmail-keda, trusting the cluster CA the pods trust
        users = {u["metadata"]["name"]: u for u in rendered("prod-kafka-users")}
        assert params["sasl"] == "scram_sha512" and params["username"] in users
        assert params["password"] == f"secret:{params['username']}/password"
        ca_secret = next(v["secret"]["secretName"] for o in objects if o["kind"] == "StatefulSet"
                         for v in o["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-ca")
        assert params["ca"] == f"secret:{ca_secret}/ca.crt"
        assert config["KAFKA_BOOTSTRAP_SERVERS"].endswith(":9093")
    else:  # MSK IAM: a role assumed by the KEDA operator, region from the workloads' config
        identity = auths[name]["spec"]["podIdentity"]
        assert identity["provider"] == "aws" and identity["roleArn"].startswith("arn:aws:iam::111111111111:")
        assert (params["sasl"], params["saslTokenProvider"]) == ("oauthbearer", "aws_msk_iam")
        assert {t["metadata"]["awsRegion"] for t in triggers} == {config["SHOPMAIL_KAFKA__SECURITY__AWS_REGION"]}


def test_the_keda_user_may_only_describe_the_scaled_groups_and_their_topics() -> None:
    s = load_settings(env={})
    users = {u["metadata"]["name"]: u for u in kafka_users(s, "shopmail-kafka")}
    acls = users["shopmail-keda"]["spec"]["authorization"]["acls"]
    assert {op for a in acls for op in a["operations"]} == {"Describe"}
    assert {a["resource"]["name"] for a in acls if a["resource"]["type"] == "group"} == {s.worker.app_id, s.sink.group_id}
    assert {a["resource"]["name"] for a in acls if a["resource"]["type"] == "topic"} == (
        {s.topics.name(lt) for lt in INPUT_TOPICS} | {s.topics.name("commands")})
    assert all(a["resource"].get("patternType") == "literal" for a in acls)


def granted(settings: Settings, component: str) -> dict[tuple[str, str], set[str]]:
    access = next(a for a in component_access(settings) if a.component == component)
    return {(a["resource"]["type"], a["resource"].get("name", "")): set(a["operations"])
            for a in user_acls(settings, access)}


def test_each_user_reads_only_what_it_consumes_and_writes_only_what_it_produces() -> None:
    s = load_settings(env={})
    t = s.topics
    processors, sink, bridge = granted(s, "processors"), granted(s, "sink"), granted(s, "ses-bridge")
    assert {"Read"} <= processors[("topic", t.name("orders"))] and "Write" not in processors[("topic", t.name("orders"))]
    assert "Write" in processors[("topic", t.name("commands"))] and "Write" in processors[("topic", t.dlq("orders"))]
    assert not {"Read", "Write"} & processors[("topic", t.name("outcomes"))]  # only verified at start-up
    assert "Read" in sink[("topic", t.name("commands"))] and "Write" not in sink[("topic", t.name("commands"))]
    assert "Write" in sink[("topic", t.name("outcomes"))] and "Write" not in sink[("topic", t.name("feedback"))]
    assert set(bridge) == {("topic", t.name("feedback")), ("topic", t.dlq("feedback")), ("cluster", "")}
    assert "Read" not in bridge[("topic", t.name("feedback"))]
    assert processors[("group", s.worker.app_id)] == {"Read", "Describe"}
    assert processors[("transactionalId", s.worker.app_id)] == {"Write", "Describe"}
    assert sink[("transactionalId", s.sink.group_id)] == {"Write", "Describe"}
    assert ("group", s.sink.group_id) not in processors and ("group", s.worker.app_id) not in sink


def test_every_declared_topic_exists_in_the_topic_list() -> None:
    s = load_settings(env={})
    logical = {spec.logical for spec in topic_specs(s)}
    for access in component_access(s):
        assert set(access.reads) | set(access.writes) <= logical, access.component


# ---- what the code really touches -------------------------------------------------------------------
COMPONENT_MODULES = {
    "processors": ["streams/runtime/worker.py"],
    "sink": ["sinks/service.py", "sinks/stores.py"],
    "ses-bridge": ["sinks/ses_bridge_cli.py", "sinks/ses_bridge.py"],
    "tracking": ["streams/tracking/builder.py", "streams/tracking/follower.py", "streams/tracking/ingest.py",
                 "streams/tracking/service.py"],
    "unsubscribe": ["sinks/unsubscribe_service.py"],
    "replay": ["streams/tools/replay.py"],
}
REPLAY = "<replay prefix>"
PRODUCE_WRAPPERS = ("_produce", "_write")  # methods that produce to the topic their caller passes first


class TopicUse(ast.NodeVisitor):
    """Logical topics a module names (``topics.name("x")``, ``topics.dlq("x")``, ``changelog_topic(_, "t")``,
    ``INPUT_TOPICS``), subscribes to and produces to, following simple assignments (``self.x = t.name(…)``).
    Topics named through a settings object called ``replay`` are the replay's own (prefixed) topics."""

    def __init__(self) -> None:
        self.aliases: dict[str, set[str]] = {}
        self.touched: set[str] = set()
        self.produced: set[str] = set()
        self.subscribed: set[str] = set()
        self.dead_letters_consumed = False  # produce(<message>.topic() + ".dlq")

    def refs(self, node: ast.AST) -> set[str]:
        found: set[str] = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in ("name", "dlq"):
                receiver = ast.unparse(sub.func.value)
                if not (receiver == "t" or receiver.endswith("topics")):
                    continue
                if receiver.startswith("replay"):
                    found.add(REPLAY)
                elif sub.args and isinstance(sub.args[0], ast.Constant):
                    found.add(str(sub.args[0].value) + (".dlq" if sub.func.attr == "dlq" else ""))
            elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "view_topic_name":
                found.add("tracking_view")
            elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "changelog_topic":
                found.add(f"changelog.{ast.literal_eval(sub.args[1])}")
            elif isinstance(sub, ast.Name) and sub.id == "INPUT_TOPICS":
                found |= set(INPUT_TOPICS)
            elif isinstance(sub, (ast.Name, ast.Attribute)):
                found |= self.aliases.get(ast.unparse(sub), set())
        return found

    def visit_Assign(self, node: ast.Assign) -> None:  # noqa: N802
        pairs = [(target, node.value) for target in node.targets]
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple) and isinstance(node.value, ast.Tuple):
            pairs = list(zip(node.targets[0].elts, node.value.elts))
        for target, value in pairs:
            names = self.refs(value)
            if names:
                self.aliases.setdefault(ast.unparse(target), set()).update(names)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802
        if node.name not in PRODUCE_WRAPPERS:  # a wrapper's callers name the topic
            self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        if isinstance(node.func, ast.Attribute) and node.func.attr == "subscribe" and node.args:
            self.subscribed |= self.refs(node.args[0])
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("produce", *PRODUCE_WRAPPERS) and node.args:
            target = node.args[0]
            if isinstance(target, ast.BinOp) and isinstance(target.right, ast.Constant) and target.right.value == ".dlq":
                self.dead_letters_consumed = True
            else:
                names = self.refs(target)
                assert names, f"cannot tell which topic `{ast.unparse(node)}` produces to"
                self.produced |= names
        self.generic_visit(node)


def topic_use(paths: list[str]) -> TopicUse:
    use = TopicUse()
    for path in paths:
        tree = ast.parse((ROOT / path).read_text())
        for _ in range(2):  # aliases first, then uses that follow them
            use.visit(tree)
        use.touched |= use.refs(tree)
    return use


def check_component(access_by_name: dict, component: str, use: TopicUse) -> list[str]:
    access = access_by_name[component]
    allowed = set(access.reads) | set(access.writes) | ({REPLAY} if access.topic_prefix else set())
    writable = set(access.writes) | ({REPLAY} if access.topic_prefix else set())
    problems = [f"{component} touches {t!r} but its ACLs grant neither Read nor Write" for t in use.touched - allowed]
    problems += [f"{component} produces to {t!r} but its ACLs do not grant Write" for t in use.produced - writable]
    if use.dead_letters_consumed:  # a record it consumed goes to <its topic>.dlq
        problems += [f"{component} dead-letters {t!r} records to {t}.dlq without Write on it"
                     for t in sorted(use.subscribed) if f"{t}.dlq" not in writable]
    return problems


def test_the_topic_scan_notices_a_component_writing_where_its_acls_do_not_allow() -> None:
    use = TopicUse()
    use.visit(ast.parse("t = settings.topics\nself.out = t.name('outcomes')\nproducer.produce(self.out, value=v)\n"))
    access = {a.component: a for a in component_access(load_settings(env={}))}
    assert check_component(access, "processors", use) == ["processors produces to 'outcomes' but its ACLs do not grant Write"]


@pytest.mark.parametrize("component", sorted(COMPONENT_MODULES))
def test_each_components_code_touches_only_topics_its_acls_grant(component: str) -> None:
    access = {a.component: a for a in component_access(load_settings(env={}))}
    use = topic_use(COMPONENT_MODULES[component])
    assert use.touched, f"the scan found no topic use in {COMPONENT_MODULES[component]}"
    assert check_component(access, component, use) == []
