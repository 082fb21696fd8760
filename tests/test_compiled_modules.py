"""The hot path's modules run compiled (streams/compiled.py), and compiled they do exactly what their
source does."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.compiled import MODULES, stale
from streams.config import load_settings
from streams.tools.traffic import TrafficSpec, write_jsonl

ROOT = Path(__file__).resolve().parent.parent

# a child that runs the CLI and says where the engine was imported from
_RUN = """
import runpy, sys
sys.argv = ["shopmail"] + sys.argv[1:]
try:
    runpy.run_module("streams.cli", run_name="__main__")
finally:
    print("engine from", sys.modules["streams.core.engine"].__file__, file=sys.stderr)
"""

# the same child, importing every compiled module from its .py instead
_FROM_SOURCE = """
import importlib.util, sys
from streams.compiled import MODULES, source_path

class FromSource:
    @staticmethod
    def find_spec(name, path=None, target=None):
        return importlib.util.spec_from_file_location(name, source_path(name)) if name in MODULES else None

sys.meta_path.insert(0, FromSource)
""" + _RUN


def test_every_module_of_the_hot_path_is_imported_compiled() -> None:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    interpreted = [m for m in MODULES if not str(importlib.import_module(m).__file__).endswith(suffixes)]
    assert not interpreted, f"run from source, not compiled (run `make compiled`): {interpreted}"


def test_a_compiled_module_older_than_its_source_is_named_stale(tmp_path: Path) -> None:
    module = "streams.core.engine"
    source = tmp_path / "streams" / "core" / "engine.py"
    source.parent.mkdir(parents=True)
    source.write_text("")
    built = source.with_suffix(importlib.machinery.EXTENSION_SUFFIXES[0])
    built.write_bytes(b"")
    os.utime(built, (1_000, 1_000))
    os.utime(source, (2_000, 2_000))
    assert stale(tmp_path) == [module]
    os.utime(built, (3_000, 3_000))  # rebuilt after the edit
    assert stale(tmp_path) == []
    built.unlink()  # never built: the source runs, nothing is stale
    assert stale(tmp_path) == []


def test_a_compiled_module_older_than_its_class_layout_or_a_layout_it_cimports_is_named_stale(tmp_path: Path) -> None:
    core = tmp_path / "streams" / "core"
    core.mkdir(parents=True)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in ("engine", "due_queue"):
        (core / f"{name}.py").write_text("")
        os.utime(core / f"{name}.py", (1_000, 1_000))
        (core / f"{name}{suffix}").write_bytes(b"")
        os.utime(core / f"{name}{suffix}", (2_000, 2_000))
    (core / "engine.pxd").write_text("from streams.core.due_queue cimport DueQueue\n")
    (core / "due_queue.pxd").write_text("cdef class DueQueue:\n    cdef public list near\n")
    for pxd in ("engine.pxd", "due_queue.pxd"):
        os.utime(core / pxd, (1_500, 1_500))
    assert stale(tmp_path) == []
    os.utime(core / "due_queue.pxd", (3_000, 3_000))  # a layout edited: both modules built with it are stale
    assert stale(tmp_path) == ["streams.core.due_queue", "streams.core.engine"]
    os.utime(core / "due_queue.pxd", (1_500, 1_500))
    os.utime(core / "engine.pxd", (3_000, 3_000))  # the engine's own layout: the queue is not built with it
    assert stale(tmp_path) == ["streams.core.engine"]


def test_a_compiled_module_that_is_no_longer_listed_or_has_no_source_is_named_stale(tmp_path: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    unlisted = tmp_path / "streams" / "tools" / "readable.py"
    unlisted.parent.mkdir(parents=True)
    unlisted.write_text("")
    unlisted.with_suffix(suffix).write_bytes(b"")
    removed = tmp_path / "streams" / "core" / "ids.py"  # listed, but its source is gone
    removed.parent.mkdir(parents=True)
    removed.with_suffix(suffix).write_bytes(b"")
    found = stale(tmp_path)
    assert [s.split(" ")[0] for s in found] == ["streams.core.ids", "streams.tools.readable"]
    assert all("no longer compiled: delete streams/" in s for s in found)


def test_the_compiled_modules_write_byte_for_byte_what_their_source_writes(tmp_path: Path) -> None:
    traffic = tmp_path / "traffic.jsonl"
    with open(traffic, "w") as f:  # 200 days: a win-back lapse (90 days after an order) falls inside
        write_jsonl(TrafficSpec(customers=300, days=200, seed=5), f, load_settings(env={}).topics.name)
    outputs = {}
    for name, code in (("compiled", _RUN), ("source", _FROM_SOURCE)):
        out = tmp_path / f"{name}.jsonl"
        run = subprocess.run([sys.executable, "-c", code, "simulate", "--input", str(traffic), "--output", str(out),
                              "--workers", "1"], capture_output=True, text=True, cwd=ROOT, check=False,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert run.returncode == 0, run.stderr[-2000:]
        engine_file = run.stderr.strip().splitlines()[-1]
        assert engine_file.endswith(".py") == (name == "source"), engine_file
        outputs[name] = out.read_bytes()
    flows = {json.loads(line)["flow"] for line in outputs["compiled"].splitlines()}
    assert flows >= {"abandoned_cart", "win_back", "order_confirmation", "shipping_confirmation", "tracking_update",
                     "delivery_feedback"}, flows  # every flow this traffic reaches decided mail
    assert outputs["compiled"] == outputs["source"]
