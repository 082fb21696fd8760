"""The modules compiled with Cython at install, as they are: plain Python source, compiled to C so the
interpreter's per-bytecode work on the hot path goes (the engine, its flows and state, the partition task
and the serde around it). The ``.py`` stays the source of truth and runs as it is wherever the build has not
run; the compiled module built next to it (``<name>.cpython-*.so``) is what Python imports when both exist.

``setup.py`` builds ``MODULES``; ``make test`` and ``make test-fast`` rebuild the ones whose source changed
(``make compiled``). ``stale()`` names a compiled module older than its source: Python would import it and
run the old code, so the test session refuses to start (tests/conftest.py). Standard library only: setup.py
imports it before anything is installed.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

__all__ = ["DIRECTIVES", "MODULES", "compiled_path", "stale"]

# the per-record path of the worker, simulate and replay (measured in docs/scaling.md)
MODULES: tuple[str, ...] = (
    "schemas.serde",
    "streams.core.audiences",
    "streams.core.context",
    "streams.core.customer",
    "streams.core.decisions",
    "streams.core.deliverability",
    "streams.core.due_queue",
    "streams.core.engagement",
    "streams.core.engine",
    "streams.core.flows.abandoned_cart",
    "streams.core.flows.back_in_stock",
    "streams.core.flows.base",
    "streams.core.flows.browse_abandonment",
    "streams.core.flows.delivery_feedback",
    "streams.core.flows.price_drop",
    "streams.core.flows.registry",
    "streams.core.flows.sunset",
    "streams.core.flows.transactional",
    "streams.core.flows.win_back",
    "streams.core.guards",
    "streams.core.ids",
    "streams.core.segments",
    "streams.core.state",
    "streams.core.sunset",
    "streams.core.tables",
    "streams.core.timed_flows",
    "streams.core.timetext",
    "streams.core.variants",
    "streams.kafka.partitioning",
    "streams.runtime.checkpoint",
    "streams.runtime.intake",
    "streams.runtime.limits",
    "streams.runtime.merge",
    "streams.runtime.outputs",
    "streams.runtime.task",
    "streams.runtime.tasks",
)

# Python's semantics kept: annotations are documentation (not C types Cython would check at each call),
# functions are real function objects (introspection, pickling, decorators see what they would see).
DIRECTIVES: dict[str, object] = {"language_level": "3", "annotation_typing": False, "binding": True}

_ROOT = Path(__file__).resolve().parent.parent


def source_path(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_path(module: str, root: Path = _ROOT) -> Path | None:
    """The compiled module built next to the source, if there is one (this interpreter's suffix)."""
    source = source_path(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def stale(root: Path = _ROOT) -> list[str]:
    """The modules whose compiled file is older than their source (a missing one is not stale: the source runs)."""
    out = []
    for module in MODULES:
        built = compiled_path(module, root)
        if built is not None and built.stat().st_mtime < source_path(module, root).stat().st_mtime:
            out.append(module)
    return out
