"""A study's final status does not lie: a study with no completed trial is failed with the
reasons, and repeated worker losses fail it instead of costing workers for ever.

The fast tests play the worker's side by hand, with the real store and sweep: claim a slot,
`ask` Optuna for the trial, end it (or leave it RUNNING without a heartbeat, as a worker
killed before its first beat does: the sweep fails it at once with `slot_leak_s=0`). The
slow test runs a real worker whose trials all fail.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from search import store
from search.outcome import FailureKind, failure_attrs
from search.store.cancelled import CANCELLED_WAITING
from search.worker import Worker, WorkerConfig
from search.worker.resources import WorkerResources
from search.worker.sweep import Sweeper
from search.worker.trial_run import TrialRunner

TASK = {"epochs": 1, "batch_size": 128}
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")


@pytest.fixture
def resources(db_url: str, tmp_path: Path, app_client: TestClient) -> Iterator[WorkerResources]:
    """A worker's resources on the API's database; a trial with no heartbeat is lost at once."""
    config = WorkerConfig(db_url, tmp_path / "data", heartbeat_interval=1, slot_leak_s=0.0)
    res = WorkerResources(config, threading.Event())
    try:
        yield res
    finally:
        res.engine.dispose()


def submit(client: TestClient, n_trials: int) -> str:
    body = {"n_trials": n_trials, "strategies": ["constant"], "task": TASK, "range_test": False}
    response = client.post("/v1/studies", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def start_trial(res: WorkerResources, study_id: str) -> tuple[optuna.Study, optuna.Trial]:
    """Claim a slot and ask for its trial (a queued retry first), as a worker does."""
    with res.sessions() as session:
        assert store.claim_slot(session, study_id) is not None
        row = store.get_study(session, study_id)
        assert row is not None
        name = row.optuna_study_name
    study = res.load_study(name)
    return study, study.ask()


def fail_trial(res: WorkerResources, study_id: str, reason: str) -> None:
    study, trial = start_trial(res, study_id)
    for key, value in failure_attrs(FailureKind.BAD_INPUT, reason).items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def sweep(res: WorkerResources) -> None:
    """One sweep of every active study (a fresh Sweeper: its first sweep is always due)."""
    Sweeper(res).sweep_if_due()


def study(client: TestClient, study_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/studies/{study_id}").json())


def test_a_study_whose_every_trial_failed_ends_failed_with_the_reasons(
    app_client: TestClient, resources: WorkerResources
) -> None:
    """n_trials <= 2: the '3 failures in a row' rule cannot fire; it was 'completed'."""
    study_id = submit(app_client, n_trials=2)
    fail_trial(resources, study_id, "FileNotFoundError: data.npz")
    Sweeper(resources).maybe_finish(study_id)
    assert study(app_client, study_id)["status"] == "running"  # one slot left
    fail_trial(resources, study_id, "FileNotFoundError: data.npz")
    Sweeper(resources).maybe_finish(study_id)
    body = study(app_client, study_id)
    assert body["status"] == "failed"
    assert body["error"] == "no trial completed (2 failed): FileNotFoundError: data.npz (2 trials)"
    assert body["finished_at"] is not None
    assert app_client.get(f"/v1/studies/{study_id}/best").status_code == 409


def test_a_study_with_one_complete_trial_still_completes(
    app_client: TestClient, resources: WorkerResources
) -> None:
    study_id = submit(app_client, n_trials=2)
    fail_trial(resources, study_id, "ValueError: once")
    optuna_study, trial = start_trial(resources, study_id)
    optuna_study.tell(trial, 0.25)
    Sweeper(resources).maybe_finish(study_id)
    body = study(app_client, study_id)
    assert (body["status"], body["error"]) == ("completed", None)
    assert app_client.get(f"/v1/studies/{study_id}/best").status_code == 200


def test_a_study_whose_trials_keep_killing_workers_fails(
    app_client: TestClient, resources: WorkerResources
) -> None:
    """Each trial kills its worker: lost, retried, lost again, next trial... It used to go on
    for two workers per slot (n_trials=500: a thousand). Now three losses end it."""
    study_id = submit(app_client, n_trials=500)
    for _ in range(2):  # trial 0, then its retry (#1)
        start_trial(resources, study_id)
        sweep(resources)
    assert study(app_client, study_id)["status"] == "running"
    start_trial(resources, study_id)  # trial 2
    sweep(resources)
    body = study(app_client, study_id)
    assert body["status"] == "failed", body
    assert body["error"].startswith("3 workers lost in a row")
    trials = app_client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in trials[:3]] == ["fail", "fail", "fail"]
    assert all(t["fail_reason"].startswith("worker lost") for t in trials[:3])
    assert body["progress"]["waiting"] == 0  # trial 2's queued retry will never run
    assert trials[3]["state"] == "fail" and trials[3]["fail_reason"] == "not run: the study failed"


def test_a_node_going_away_does_not_fail_a_healthy_study(
    app_client: TestClient, resources: WorkerResources
) -> None:
    """Three trials lost at once (their node died), none of them a retry: the retries run
    elsewhere and the study completes."""
    study_id = submit(app_client, n_trials=3)
    for _ in range(3):
        start_trial(resources, study_id)
    sweep(resources)
    body = study(app_client, study_id)
    assert body["status"] == "running" and body["progress"]["waiting"] == 3
    for _ in range(3):
        optuna_study, trial = start_trial(resources, study_id)
        optuna_study.tell(trial, 0.5)
    Sweeper(resources).maybe_finish(study_id)
    body = study(app_client, study_id)
    assert (body["status"], body["error"]) == ("completed", None)
    assert body["progress"]["complete"] == 3 and body["progress"]["retried"] == 3


@pytest.mark.slow
def test_a_real_worker_fails_a_two_trial_study_whose_data_is_gone(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    """A real worker, both trials failing (the uploaded file was removed under the study):
    the study ends failed with the reason, and its best is 409. No training happens."""
    import io

    import numpy as np

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=rng.normal(size=(64, 4)),
        y_train=np.arange(64) % 2,
        x_val=rng.normal(size=(16, 4)),
        y_val=np.arange(16) % 2,
    )
    upload = app_client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())})
    assert upload.status_code == 201, upload.text
    body = {
        "n_trials": 2,
        "strategies": ["constant"],
        "range_test": False,
        "task": {**TASK, "dataset": upload.json()["id"], "batch_size": 16},
    }
    response = app_client.post("/v1/studies", json=body)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    stored = [p for p in (tmp_path / "data").rglob("*.npz") if p.is_file()]
    assert stored
    for path in stored:
        path.unlink()
    config = WorkerConfig(db_url, tmp_path / "data", heartbeat_interval=1, poll_s=0.2)
    worker = Worker(config)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while study(app_client, study_id)["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, study(app_client, study_id)
            time.sleep(0.2)
    finally:
        worker.stop.set()
        thread.join(timeout=60)
    final = study(app_client, study_id)
    assert final["status"] == "failed", final
    assert final["error"].startswith("no trial completed (2 failed): ")
    assert "(2 trials)" in final["error"]
    assert final["progress"]["failed"] == 2
    assert app_client.get(f"/v1/studies/{study_id}/best").status_code == 409


def test_a_study_cancelled_while_its_slot_is_opened_starts_no_trial(
    app_client: TestClient, resources: WorkerResources
) -> None:
    """The cancel lands after a worker claimed a slot, before the slot's trial was asked
    (the range test takes a while): the seeded trials it then queues fail as cancelled and
    no trial starts. Before, trial 0 started after the cancel and the other seeded trials
    waited forever."""
    body = {"n_trials": 4, "strategies": ["constant", "cosine"], "task": TASK}
    study_id = app_client.post("/v1/studies", json=body).json()["id"]
    with resources.sessions() as session:
        assert store.claim_slot(session, study_id) == 1
    assert app_client.post(f"/v1/studies/{study_id}/cancel").status_code == 200
    TrialRunner(resources).run(study_id, 1)
    with resources.sessions() as session:
        row = store.get_study(session, study_id)
        assert row is not None
        name = row.optuna_study_name
    trials = resources.load_study(name).get_trials(deepcopy=False)
    assert trials, "the seeded trials were queued"
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.FAIL, trial
        assert trial.user_attrs["fail_reason"] == CANCELLED_WAITING
    assert study(app_client, study_id)["status"] == "cancelled"
