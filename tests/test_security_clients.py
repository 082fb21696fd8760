"""Every Kafka client the product makes is configured by ``streams.kafka.io.client_config`` (directly or
through ``producer_config`` / ``consumer_config``), so the cluster's TLS/SASL settings reach all of
them. A client built from a hand-written dict (or any other expression) would connect without them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("streams", "sinks", "bench", "schemas")
CLIENTS = {"Consumer", "Producer", "AdminClient"}
BUILDERS = {"client_config", "producer_config", "consumer_config"}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def clients_built_without_client_config(source: str, filename: str) -> list[str]:
    """``file:line`` of each Consumer/Producer/AdminClient(...) whose config is not a builder call."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call) and _name(node.func) in CLIENTS:
            config = node.args[0] if node.args else None
            if not (isinstance(config, ast.Call) and _name(config.func) in BUILDERS):
                found.append(f"{filename}:{node.lineno}")
    return found


def test_the_scan_catches_hand_built_clients_and_accepts_the_builders() -> None:
    src = (
        "c = Consumer({'bootstrap.servers': b, 'group.id': 'g'})\n"
        "a = admin.AdminClient(cfg)\n"
        "p = Producer(producer_config(s, b))\n"
        "q = Consumer(client_config(s.kafka, b, **{'group.id': 'g'}))\n"
    )
    assert clients_built_without_client_config(src, "x.py") == ["x.py:1", "x.py:2"]


def test_every_kafka_client_in_the_product_goes_through_client_config() -> None:
    offenders = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            offenders += clients_built_without_client_config(path.read_text(), str(path.relative_to(ROOT)))
    assert not offenders, ("Kafka clients built without streams.kafka.io.client_config (they would ignore "
                           "kafka.security): " + ", ".join(offenders))
