"""The modules compiled with Cython at install, as they are: plain Python source, compiled to C so the
interpreter's per-bytecode work on the hot path goes (the engine, its flows and state, the partition task
and the serde around it). The ``.py`` stays the source of truth and runs as it is wherever the build has not
run; the compiled module built next to it (``<name>.cpython-*.so``) is what Python imports when both exist.

``setup.py`` builds ``MODULES``; ``make test``, ``make test-fast`` and ``make demo`` rebuild the ones whose
source changed (``make compiled``). ``stale()`` names a compiled module Python would import in place of the
current source: older than its ``.py`` or than this list, or no longer listed, or with no ``.py`` at all. A
test session refuses to start with one (tests/conftest.py); the CLI of a source checkout warns.
Standard library only: setup.py imports it before anything is installed.

A module may have a ``.pxd`` next to it (Cython's augmenting declarations): it gives the module's classes a C
layout, each instance attribute a typed slot, so the compiled code reads them as struct fields instead of
looking them up by name; the ``.py`` stays plain Python and is what runs uncompiled. Such a class is an
extension type: it takes no attribute its layout does not declare (unless it declares ``__dict__``), and a
slot typed ``dict``/``list``/``set`` refuses anything else, a subclass included. A compiled module is stale
also when older than its ``.pxd`` or a ``.pxd`` that one cimports (``layout_files``), and when its generated C
was made with a ``.pxd`` since removed (``built_layouts``). Compiled, such a class also cannot be patched at
run time, takes no weak reference, and reads a slot never set as ``None``.

Compiled, the code means what it means in Python, with what a debugger sees changed: cProfile, pdb and
coverage do not see inside these modules (py-spy and callgrind do, by C function); log records made in
them carry the caller's function and line; a signal is handled between calls into them, not between
bytecodes.
"""

from __future__ import annotations

import importlib.machinery
import re
from pathlib import Path

__all__ = ["DIRECTIVES", "MODULES", "built_layouts", "layout_files", "stale", "stale_in_checkout", "stale_message"]

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
# ``from a.b cimport X``, ``from .b cimport X``, ``cimport a.b`` (a line may be indented)
_CIMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([\w][\w.]*)|from[ \t]+(\.+[\w.]*)|cimport[ \t]+([\w][\w.]*))"
                      r"(?:[ \t]+cimport\b|[ \t]*$|[ \t]+as\b|[ \t]*,)", re.MULTILINE)
_C_FILE_TABLE = re.compile(r"__pyx_f\[\] = \{\n(.*?)\n\};", re.DOTALL)
_C_TABLE_WITHIN = 1 << 20  # the table is in the generated C's first part (about 60 kB in)
_C_CHUNK = 1 << 16


def source_path(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def stale(root: Path = _ROOT) -> list[str]:
    """The compiled modules Python would import in place of the current source (a module never built is not
    stale: its source runs). Compared by modification time, as the build itself decides what to rebuild."""
    listed = set(MODULES)
    this_list = Path(__file__).stat().st_mtime if root == _ROOT else 0.0
    out = []
    for built in _built_files(root):
        module = _module_of(built, root)
        source = source_path(module, root)
        if module not in listed or not source.exists():
            out.append(f"{module} (no longer compiled: delete {built.relative_to(root)})")
        elif any(not (root / used).exists() for used in built_layouts(module, root)):
            out.append(f"{module} (built with a layout since removed)")
        elif built.stat().st_mtime < max([source.stat().st_mtime, this_list]
                                         + [p.stat().st_mtime for p in layout_files(module, root)]):
            out.append(module)
    return sorted(out)


def built_layouts(module: str, root: Path = _ROOT) -> list[str]:
    """The ``.pxd`` files (relative to ``root``) that the module's generated C was made with, as Cython's
    table of source files names them; none when there is no generated C. A layout since deleted makes the
    module stale, and ``setup.py`` has its C generated again (Cython regenerates only for a newer file)."""
    c = source_path(module, root).with_suffix(".c")
    if not c.exists():
        return []
    head = ""
    with open(c, encoding="utf-8", errors="replace") as f:  # read only as far as the table (every CLI start)
        while len(head) < _C_TABLE_WITHIN:
            chunk = f.read(_C_CHUNK)
            head += chunk
            table = _C_FILE_TABLE.search(head)
            if table:
                return re.findall(r'"([^"]+\.pxd)"', table.group(1))
            if not chunk:
                break
    return []


def layout_files(module: str, root: Path = _ROOT) -> list[Path]:
    """The ``.pxd`` files a compiled module is built with: its own (the C layout of its classes, next to
    the ``.py``) and, through their ``cimport`` lines, those of the modules whose classes it types."""
    found: list[Path] = []
    todo = [module]
    while todo:
        pxd = source_path(todo.pop(), root).with_suffix(".pxd")
        if pxd.exists() and pxd not in found:
            found.append(pxd)
            for absolute, relative, plain in _CIMPORT.findall(pxd.read_text()):
                if relative:  # ``from .x cimport`` / ``from ..x cimport``: within the module's package
                    dots = len(relative) - len(relative.lstrip("."))
                    package = _module_of(pxd, root).split(".")[:-dots]
                    if relative.lstrip("."):  # (``from . cimport x`` names modules after ``cimport``: not used here)
                        todo.append(".".join(package + [relative.lstrip(".")]))
                else:
                    todo.append(absolute or plain)
    return found


def _built_files(root: Path) -> list[Path]:
    """Every compiled module built in place under the packages that hold listed modules."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = [p for p in (root / "streams").rglob("*.so") if p.name.endswith(suffixes)]
    found += [p for p in (root / "schemas").glob("serde*.so") if p.name.endswith(suffixes)]
    return found


def _module_of(path: Path, root: Path) -> str:
    """The module a file under ``root`` belongs to (a compiled ``.so``, a ``.pxd``)."""
    relative = path.relative_to(root)
    return ".".join(relative.parent.parts + (relative.name.split(".", 1)[0],))


def stale_in_checkout() -> list[str]:
    """``stale()`` in a source checkout, where modules are edited; nothing for an installed package, whose
    files carry the times the installer gave them."""
    return stale() if (_ROOT / ".git").exists() else []


def stale_message(old: list[str]) -> str:
    """What to say about ``stale()``'s modules, and what to run."""
    return f"compiled modules older than their source run in its place: {', '.join(old)}; run `make compiled`"
