"""`lrsearch dashboard`: the real optuna-dashboard, as a subprocess on a free loopback port,
reading a database filled through the service (study via the API, finished trials via Optuna's
public API exactly as a worker leaves them), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from search import store
from service.cli.server import stop_processes
from service.demo import free_port

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90


def add_finished_trials(db_url: str, study_id: str, values: list[float]) -> None:
    storage = store.optuna_storage(db_url)
    try:
        study = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage)
        for i, value in enumerate(values):
            lr = 0.001 * (i + 1)
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.COMPLETE,
                    value=value,
                    params={"strategy": "constant", "constant.initial_lr": lr},
                    distributions={
                        "strategy": CategoricalDistribution(["constant", "cosine"]),
                        "constant.initial_lr": FloatDistribution(1e-4, 1e-1, log=True),
                    },
                    user_attrs={
                        "strategy": "constant",
                        "params": {"initial_lr": lr},
                        "lr": [lr] * 2,
                        "history": {"val_loss": [value + 0.1, value]},
                        "epochs_run": 2,
                        "seconds": 0.4,
                        "export": {"schedule": None, "callbacks": [], "initial_lr": lr},
                    },
                    intermediate_values={0: value + 0.1, 1: value},
                )
            )
    finally:
        storage.engine.dispose()


@contextmanager
def dashboard(db_url: str, *extra: str) -> Iterator[str]:
    """`lrsearch dashboard` on a free port; yields its base URL once /api/studies answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env["LRSEARCH_DATABASE_URL"] = db_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dashboard", "--port", str(port), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, base)
        yield base
    finally:
        stop_processes([proc], timeout_s=20)


def _wait_until_up(proc: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"dashboard exited with {proc.returncode}: {stderr[-3000:]}")
        try:
            if httpx.get(f"{base}/api/studies", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"dashboard not answering at {base} after {START_TIMEOUT_S}s")


def test_dashboard_shows_the_services_studies_read_only(
    app_client: TestClient, db_url: str
) -> None:
    created = app_client.post("/v1/studies", json={"name": "seen", "n_trials": 5})
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    add_finished_trials(db_url, study_id, [0.5, 0.2, 0.4])

    with dashboard(db_url) as base:
        summaries = httpx.get(f"{base}/api/studies", timeout=10).json()["study_summaries"]
        ours = [s for s in summaries if s["study_name"] == f"lrsearch-{study_id}"]
        assert len(ours) == 1 and ours[0]["directions"] == ["minimize"]
        dashboard_id = ours[0]["study_id"]

        detail: dict[str, Any] = httpx.get(f"{base}/api/studies/{dashboard_id}", timeout=30).json()
        assert [t["number"] for t in detail["trials"]] == [0, 1, 2]
        assert [t["values"] for t in detail["best_trials"]] == [[0.2]]
        assert {a["key"] for a in detail["union_user_attrs"]} >= {"strategy", "lr", "history"}

        rebound = httpx.get(f"{base}/api/studies", headers={"Host": "evil.example"}, timeout=10)
        assert rebound.status_code == 403, "a page that rebinds its name must not read studies"
        assert "LRSEARCH_ALLOWED_HOSTS" in rebound.json()["reason"]
        local = httpx.get(f"{base}/api/studies", headers={"Host": "localhost"}, timeout=10)
        assert local.status_code == 200

        refused = httpx.delete(f"{base}/api/studies/{dashboard_id}", timeout=10)
        assert refused.status_code == 405 and "read-only" in refused.json()["reason"]
        assert httpx.post(f"{base}/incompatible-rdb-schema", timeout=10).status_code == 405

    assert app_client.get(f"/v1/studies/{study_id}").json()["best_value"] == 0.2
