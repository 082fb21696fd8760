"""The domain core imports nothing outside itself but its typed settings and the schemas' canonical JSON:
no Kafka, no HTTP, no service (a tracking link, for one, is signed by the sink, not built by a flow)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "streams" / "core"
ALLOWED_PROJECT = ("streams.core", "streams.config", "schemas.serde")  # settings and canonical JSON: no I/O
ALLOWED_LIBRARIES = ("msgspec", "orjson")  # pure data libraries


def imports_of(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def outside_the_core(root: Path) -> dict[str, list[str]]:
    """Each module of ``root`` with the imports it may not have."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        bad = []
        for name in imports_of(path):
            top = name.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names or top in ALLOWED_LIBRARIES:
                continue
            if any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED_PROJECT):
                continue
            bad.append(name)
        if bad:
            found[str(path.relative_to(root))] = bad
    return found


def test_the_core_imports_nothing_outside_the_core():
    assert outside_the_core(CORE) == {}


def test_the_check_would_catch_a_flow_that_imports_a_service(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "shipping.py").write_text(
        "from streams.tracking.tokens import tracking_page_url\nimport confluent_kafka\nimport json\n")
    assert outside_the_core(tmp_path) == {"flows/shipping.py": ["streams.tracking.tokens", "confluent_kafka"]}
