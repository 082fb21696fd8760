"""The layers show in the imports: every arrow points down, the core imports only the core and the ground,
nothing imports the CLI, and no module imports itself through others (function-level imports count)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streams", "sinks", "schemas", "bench")

# (layer, module prefixes), top first; a module belongs to the first layer with a prefix it starts with
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("top", ("streams.cli", "bench")),
    ("tools", ("streams.tools",)),
    ("edges", ("sinks", "streams.tracking", "streams.analytics", "streams.web", "streams.services")),
    ("runtime", ("streams.runtime", "streams.kafka")),
    ("core", ("streams.core",)),
    ("ground", ("streams", "schemas")),  # streams/config.py and the other top-level helpers, the contracts
]


def layer(module: str) -> int:
    """0 for the ground, higher is further up."""
    for depth, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return len(LAYERS) - 1 - depth
    raise AssertionError(f"{module} is in no layer")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports() -> dict[str, set[str]]:
    """module → the project modules it imports anywhere in its body (relative imports resolved)."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                resolved = resolve(target)
                if resolved and resolved != name and resolved.split(".")[0] in PACKAGES:
                    graph[name].add(resolved)
        graph.setdefault(name, set())
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


# programs of their own (``python -m …``), imported by nothing: they may start the CLI
ENTRY_POINTS = {"bench.traced"}


def in_cli(module: str) -> bool:
    return module == "streams.cli" or module.startswith("streams.cli.")


def test_no_module_imports_itself_through_others():
    assert cycles(imports()) == []


def test_every_import_points_down_or_stays_in_its_layer():
    upward = [f"{m} ({LAYERS[len(LAYERS) - 1 - layer(m)][0]}) → {t} ({LAYERS[len(LAYERS) - 1 - layer(t)][0]})"
              for m, targets in sorted(imports().items()) for t in sorted(targets) if layer(t) > layer(m)]
    assert upward == []


def test_the_core_imports_only_the_core_and_the_ground():
    outside = [f"{m} → {t}" for m, targets in sorted(imports().items()) if m.startswith("streams.core")
               for t in sorted(targets) if layer(t) > layer("streams.core")]
    assert outside == []


def test_nothing_imports_the_cli():
    into_cli = [f"{m} → {t}" for m, targets in sorted(imports().items()) if not in_cli(m) and m not in ENTRY_POINTS
                for t in sorted(targets) if in_cli(t)]
    assert into_cli == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("streams.core.engine") < layer("streams.runtime.task") < layer("sinks.service")
    assert layer("streams.config") == layer("schemas.serde") == 0 and layer("streams.cli.main") == len(LAYERS) - 1
