"""A worker with a population (`--population K`): K slots of one study claimed at once, their
trials asked together and trained through `Trainer.run_many`, each told as a solo trial; on
SQLite and PostgreSQL. (kill -9 mid-population: test_reliability.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient

from search import store
from search.worker import Worker, WorkerConfig
from tests import faults
from tests.integration.test_api import _study_row

N_TRIALS, EPOCHS, POPULATION = 6, 3, 4


def test_claim_slots_takes_whole_batches_and_never_over_claims(db_url: str) -> None:
    """Racing populations each get consecutive slots (one transaction), together exactly the
    budget; a batch is cut to what the study has left."""
    store.upgrade(db_url)
    study_id = _study_row(db_url, n_trials=10)
    engine = store.make_engine(db_url)
    sessions = store.session_factory(engine)
    batches: list[list[int]] = []
    lock = threading.Lock()

    def population() -> None:
        while True:
            with sessions() as session:
                slots = store.claim_slots(session, study_id, 3)
            if not slots:
                return
            with lock:
                batches.append(slots)

    threads = [threading.Thread(target=population) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(s for batch in batches for s in batch) == list(range(1, 11))
        assert all(batch == list(range(batch[0], batch[0] + len(batch))) for batch in batches)
        assert sorted(len(batch) for batch in batches) == [1, 3, 3, 3]
        with sessions() as session:
            row = store.get_study(session, study_id)
            assert row is not None and (row.status, row.trials_claimed) == ("running", 10)
            assert store.claim_slots(session, study_id, 4) == []
            assert store.claim_slot(session, study_id) is None
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_population_worker_runs_the_whole_budget_with_every_epoch_reported(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    """6 trials with a population of 4: 4 together, then the 2 the study has left (the
    claim is cut to the budget); every trial reported each epoch, none over-claimed."""
    spec = faults.tiny_spec(N_TRIALS, EPOCHS, strategies=["constant", "exponential"])
    created = app_client.post("/v1/studies", json=spec)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    config = WorkerConfig(
        db_url,
        tmp_path / "data",
        heartbeat_interval=1,
        grace_period=10,
        poll_s=0.2,
        idle_exit_s=1.0,
        population=POPULATION,
    )
    worker = Worker(config)
    ran = worker.run()
    body = app_client.get(f"/v1/studies/{study_id}").json()
    items = app_client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert ran == N_TRIALS
    assert body["status"] == "completed", body
    progress = body["progress"]
    assert progress["complete"] + progress["pruned"] + progress["failed"] == N_TRIALS
    assert progress["retried"] == progress["running"] == progress["waiting"] == 0
    assert progress["complete"] > 0
    assert sorted(t["number"] for t in items) == list(range(N_TRIALS))
    for trial in items:
        if trial["state"] == "complete":
            assert trial["epochs_run"] == EPOCHS == len(trial["lr"])
            assert [p["step"] for p in trial["intermediate_values"]] == list(range(EPOCHS))
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            row = store.get_study(session, study_id)
            assert row is not None and row.trials_claimed == row.n_trials == N_TRIALS
            name = row.optuna_study_name
    finally:
        engine.dispose()
    trials = optuna.load_study(study_name=name, storage=db_url).get_trials()
    first, rest = trials[:POPULATION], trials[POPULATION:]
    # one population: all its members were asked before the first of them was told
    assert max(_started(t) for t in first) <= min(_completed(t) for t in first)
    # the next one was claimed after the first was told, and held what the budget had left
    assert min(_started(t) for t in rest) >= max(_completed(t) for t in first)
    assert len(rest) == N_TRIALS - POPULATION


def _started(trial: optuna.trial.FrozenTrial) -> float:
    assert trial.datetime_start is not None
    return trial.datetime_start.timestamp()


def _completed(trial: optuna.trial.FrozenTrial) -> float:
    assert trial.datetime_complete is not None
    return trial.datetime_complete.timestamp()
