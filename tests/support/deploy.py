"""Rendering deploy/ overlays for the manifest tests (kubectl kustomize, cached per overlay)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")


@functools.lru_cache(maxsize=None)
def _kustomize(overlay: str) -> str:
    return subprocess.run(["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)], capture_output=True,
                          text=True, timeout=60, check=True).stdout


def rendered(overlay: str) -> list[dict]:
    """The overlay's objects, freshly parsed (callers may change them)."""
    return [d for d in yaml.safe_load_all(_kustomize(overlay)) if d]


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects
            if o["kind"] in ("Deployment", "StatefulSet")]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    (obj,) = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return obj
