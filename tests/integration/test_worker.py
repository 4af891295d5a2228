"""Real workers against a real database and the real API: lifecycle, races, cancel, delete."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from search.worker import Worker, WorkerConfig

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "dataset": "digits",
    "model": {"kind": "mlp", "hidden": [16]},
    "epochs": 2,
    "batch_size": 128,
}


def submit(client: TestClient, **spec: Any) -> str:
    body = {"name": "t", "task": TINY, "n_trials": 3, "seed": 0, **spec}
    response = client.post("/v1/studies", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "queued"
    return str(response.json()["id"])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status(client: TestClient, study_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/studies/{study_id}").json())


@contextmanager
def worker_thread(db_url: str, data_dir: Path, **kw: Any) -> Iterator[Worker]:
    settings: dict[str, Any] = {"heartbeat_interval": 1, "grace_period": 10, "poll_s": 0.2, **kw}
    worker = Worker(WorkerConfig(db_url, data_dir, **settings))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive(), "worker did not stop"


def test_study_goes_queued_running_completed_and_best_deserialises(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    import keras

    study_id = submit(app_client, strategies=["exponential", "cosine", "step"], n_trials=3)
    assert app_client.get(f"/v1/studies/{study_id}/best").status_code == 409
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, study_id)["status"] != "queued", 60, "running")
        wait_for(lambda: status(app_client, study_id)["status"] == "completed", 240, "completed")
    body = status(app_client, study_id)
    finished = sum(body["progress"][k] for k in ("complete", "pruned", "failed"))
    assert finished == 3 and body["progress"]["running"] == 0
    best = app_client.get(f"/v1/studies/{study_id}/best").json()
    assert best["strategy"] in ("exponential", "cosine", "step")
    if best["export"]["schedule"] is not None:
        schedule = keras.optimizers.schedules.deserialize(best["export"]["schedule"])
        assert float(schedule(0)) == pytest.approx(
            best["params"]["initial_lr"]
            if best["strategy"] != "cosine" or not best["params"]["warmup_steps"]
            else 0.0
        )
    trials = app_client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert sorted(t["number"] for t in trials) == [0, 1, 2]
    assert all(len(t["lr"]) == t["epochs_run"] > 0 for t in trials if t["state"] == "complete")


def test_cancel_stops_running_trials_at_the_next_epoch(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    study_id = submit(
        app_client, strategies=["constant"], n_trials=50, task={**TINY, "epochs": 200}
    )
    with worker_thread(db_url, tmp_path / "data") as worker:
        wait_for(lambda: status(app_client, study_id)["progress"]["running"] == 1, 90, "a trial")
        assert app_client.post(f"/v1/studies/{study_id}/cancel").status_code == 200
        wait_for(
            lambda: status(app_client, study_id)["progress"]["running"] == 0,
            60,
            "the running trial to stop",
        )
        assert not worker.stop.is_set()
    body = status(app_client, study_id)
    assert body["status"] == "cancelled"
    trials = app_client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert len(trials) == 1 and trials[0]["state"] == "fail"
    assert "cancelled" in trials[0]["fail_reason"]
    assert trials[0]["epochs_run"] < 200


def test_delete_mid_run_leaves_the_worker_alive(
    app_client: TestClient, db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """...and logs it as what it is, not as an error with a traceback."""
    doomed = submit(app_client, strategies=["constant"], n_trials=50, task={**TINY, "epochs": 200})
    caplog.set_level(logging.INFO, logger="lrsearch.worker")
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, doomed)["progress"]["running"] == 1, 90, "a trial")
        assert app_client.delete(f"/v1/studies/{doomed}").status_code == 204
        assert app_client.get(f"/v1/studies/{doomed}").status_code == 404
        survivor = submit(app_client, strategies=["constant"], n_trials=1)
        wait_for(
            lambda: status(app_client, survivor)["status"] == "completed",
            120,
            "the next study to complete on the same worker",
        )
    worker_errors = [r for r in caplog.records if r.name.startswith("lrsearch.worker")]
    assert not [r.getMessage() for r in worker_errors if r.levelno >= logging.ERROR]


def test_a_study_past_its_timeout_claims_no_more_trials_and_completes(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    study_id = submit(app_client, n_trials=500, timeout_s=2)
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, study_id)["status"] == "completed", 120, "completed")
    progress = status(app_client, study_id)["progress"]
    assert 0 < sum(progress[k] for k in ("complete", "pruned", "failed", "retried")) < 500
    assert progress["running"] == progress["waiting"] == 0
    trials = app_client.get(f"/v1/studies/{study_id}/trials?limit=200").json()["items"]
    assert {t["state"] for t in trials} <= {"complete", "pruned", "fail"}
    dropped = [t for t in trials if t["state"] == "fail"]
    assert all(t["fail_reason"] == "not run: the study's timeout passed" for t in dropped)
    assert any(t["state"] != "fail" for t in trials)


def test_a_study_whose_trials_keep_failing_ends_failed_with_the_reason(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    """The model fits the 3-class upload it was submitted for (the API refuses one that does
    not), then the stored file is replaced by a 4-class one: every trial's model is refused
    by the worker for its output size."""
    import io

    import keras
    import numpy as np

    def npz(n_classes: int) -> bytes:
        rng, buf = np.random.default_rng(0), io.BytesIO()
        x_train, x_val = rng.normal(size=(40, 8, 8)), rng.normal(size=(12, 8, 8))
        y_train, y_val = np.arange(40) % n_classes, np.arange(12) % n_classes
        np.savez(buf, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
        return buf.getvalue()

    uploaded = app_client.post("/v1/datasets", files={"file": ("d.npz", npz(3))})
    assert uploaded.status_code == 201, uploaded.text
    inputs = keras.Input((8, 8))
    fits = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    study_id = submit(
        app_client,
        n_trials=10,
        strategies=["constant"],
        task={
            **TINY,
            "dataset": uploaded.json()["id"],
            "model": {"kind": "keras_json", "config": fits.to_json()},
        },
    )
    stored = [p for p in (tmp_path / "data" / "datasets").glob("*.npz") if p.is_file()]
    assert len(stored) == 1
    stored[0].write_bytes(npz(4))
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, study_id)["status"] == "failed", 120, "failed")
    body = status(app_client, study_id)
    assert "output" in body["error"].lower()
    assert body["progress"]["failed"] == 3


def _spawn_worker(db_url: str, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LRSEARCH_DATABASE_URL": db_url,
        "LRSEARCH_DATA_DIR": str(data_dir),
        "LRSEARCH_TF_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--idle-exit", "8"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.postgres
@pytest.mark.serial
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_four_worker_processes_finish_exactly_n_trials_on_postgres(
    client_factory: Any, db_url: str, tmp_path: Path
) -> None:
    pg_url = db_url
    with client_factory() as client:
        study_id = submit(
            client,
            n_trials=12,
            strategies=["constant", "exponential"],
            pruner="none",
            task={**TINY, "epochs": 1},
        )
        workers = [_spawn_worker(pg_url, tmp_path / "data") for _ in range(4)]
        try:
            wait_for(lambda: status(client, study_id)["status"] == "completed", 400, "completed")
        finally:
            for w in workers:
                w.terminate()
            errors = [w.communicate(timeout=60)[1].decode()[-2000:] for w in workers]
        body = status(client, study_id)
    assert body["progress"]["complete"] == 12, errors
    study = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=pg_url)
    assert sorted(t.number for t in study.trials) == list(range(12))


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_an_idle_worker_starts_a_new_study_at_once_on_postgres(
    client_factory: Any, db_url: str, tmp_path: Path
) -> None:
    """Woken by the API's NOTIFY, not by its next poll (30 s here)."""
    # the API first (it creates the tables), then the worker
    with client_factory() as client, worker_thread(db_url, tmp_path / "data", poll_s=30):
        time.sleep(1.5)  # found no work: idle and listening
        posted = time.monotonic()
        study_id = submit(client, n_trials=1)
        wait_for(lambda: status(client, study_id)["status"] != "queued", 20, "picked up")
        assert time.monotonic() - posted < 10
