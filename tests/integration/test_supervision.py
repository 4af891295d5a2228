"""Issue 14 items 7 and 8: `serve` restarts a worker that died, `/readyz` and `/metrics` say
whether any worker is live to run queued work, and nothing listens publicly without auth
unless told (LRSEARCH_ALLOW_INSECURE)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from search import store
from service.cli import main
from service.cli.server import stop_processes
from service.demo import free_port, wait_ready
from tests.servers import ROOT, serve

# --- /readyz and /metrics --------------------------------------------------------------------


def _register(db_url: str, worker_id: str) -> None:
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            store.register_worker(
                session, worker_id, host="h", pid=1, device="cpu", plugins={"keras": "1"}
            )
    finally:
        engine.dispose()


def _metric(client: TestClient, name: str) -> str:
    lines = [ln for ln in client.get("/metrics").text.splitlines() if ln.startswith(f"{name} ")]
    assert len(lines) == 1, lines
    return lines[0].split()[1]


def test_readyz_reports_live_workers_and_whether_queued_work_can_run(
    app_client: TestClient, db_url: str
) -> None:
    ready = app_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["workers"] == {
        "live": 0,
        "queued_studies": 0,
        "runnable_trial_slots": 0,
        "ready_for_work": True,
    }
    assert _metric(app_client, "lrsearch_ready_for_work") == "1"

    response = app_client.post("/v1/studies", json={"n_trials": 3, "task": {"epochs": 1}})
    assert response.status_code == 201, response.text
    ready = app_client.get("/readyz")
    # Still 200: the API stays in rotation while workers are scaled to zero.
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["workers"] == {
        "live": 0,
        "queued_studies": 1,
        "runnable_trial_slots": 3,
        "ready_for_work": False,
    }
    assert _metric(app_client, "lrsearch_ready_for_work") == "0"

    _register(db_url, "w1")
    workers = app_client.get("/readyz").json()["workers"]
    assert workers["live"] == 1 and workers["ready_for_work"] is True
    assert _metric(app_client, "lrsearch_ready_for_work") == "1"
    assert _metric(app_client, "lrsearch_live_workers") == "1"


# --- insecure binds --------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("LRSEARCH_") or var == "DATABASE_URL":
            monkeypatch.delenv(var)


@pytest.mark.parametrize("command", ["api", "serve", "dashboard"])
def test_public_bind_without_auth_is_refused(
    command: str, clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    argv = ["--database-url", url, command, "--host", "0.0.0.0", "--port", str(free_port())]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "0.0.0.0" in err
    assert "LRSEARCH_ALLOW_INSECURE=true" in err
    assert not (tmp_path / "x.db").exists(), "refused before touching the database"


def test_public_bind_with_auth_on_is_not_refused_by_the_check() -> None:
    from service.cli.exposure import refuse_insecure_bind

    assert not refuse_insecure_bind("the API", "0.0.0.0", authenticated=True, allowed=False)
    assert not refuse_insecure_bind("the API", "127.0.0.1", authenticated=False, allowed=False)
    assert refuse_insecure_bind("the API", "::", authenticated=False, allowed=False)


def test_api_starts_publicly_without_auth_when_told(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSEARCH_")}
    env.pop("DATABASE_URL", None)
    env |= {
        "LRSEARCH_ALLOW_INSECURE": "true",
        "LRSEARCH_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
        "LRSEARCH_DATA_DIR": str(tmp_path),
    }
    log = tmp_path / "api.log"
    argv = [sys.executable, "-m", "service.cli", "api", "--host", "0.0.0.0", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout_s=60, server=proc, log=log)
    finally:
        stop_processes([proc])
    assert "without authentication (LRSEARCH_ALLOW_INSECURE=true)" in log.read_text()


# --- supervision -----------------------------------------------------------------------------


def test_serve_restarts_a_worker_killed_with_sigkill(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as served:
        deadline = time.monotonic() + 30
        while not (pids := served.worker_pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        (first,) = pids
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = served.worker_pids()
            if now and first not in now:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no new worker after {first} was killed: {now}")
        (second,) = now
        text = served.log.read_text(errors="replace")
        assert f"(pid {first}) exited with code -9" in text
        assert f"restarted (pid {second}, was {first}" in text
        assert httpx.get(f"{served.url}/readyz").status_code == 200


def test_metrics_can_require_a_token(client_factory: Any, db_url: str) -> None:
    from service import tokens

    engine = store.make_engine(db_url)
    with client_factory(auth=True, metrics_token_required=True) as client:
        with store.session_factory(engine)() as session:
            token = tokens.create_token(session, "ops")
        engine.dispose()
        anonymous = client.get("/metrics")
        assert anonymous.status_code == 401 and "Bearer" in anonymous.json()["detail"]
        wrong = client.get("/metrics", headers={"Authorization": "Bearer lrs_wrong"})
        assert wrong.status_code == 401
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and "lrsearch_live_workers" in ok.text
        assert client.get("/readyz").status_code == 200, "probes stay anonymous"
    with client_factory(auth=True) as client:
        assert client.get("/metrics").status_code == 200, "anonymous by default"
