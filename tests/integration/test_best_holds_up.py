"""A real worker re-runs the best candidate on fresh seeds and searches the initial rate in
the range its range test found; /best and the status report the mean over seeds."""

from __future__ import annotations

import statistics
from pathlib import Path

import optuna
import pytest
from fastapi.testclient import TestClient

from search import selection
from tests.integration.test_worker import status, submit, wait_for, worker_thread

pytestmark = pytest.mark.slow
TASK = {
    "dataset": "digits",
    "model": {"kind": "mlp", "hidden": [16]},
    "epochs": 4,
    "batch_size": 64,
}


def test_the_last_slots_rerun_the_best_candidate_and_best_is_its_mean(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    study_id = submit(app_client, task=TASK, n_trials=8, strategies=["constant", "linear"])
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, study_id)["status"] == "completed", 300, "done")
    detail = status(app_client, study_id)
    storage = optuna.storages.RDBStorage(db_url)
    trials = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage).trials
    replicates = [t for t in trials if selection.REPLICATE_OF in t.system_attrs]
    assert [t.number for t in replicates] == [6, 7]  # the last quarter of 8 slots
    original = {t.system_attrs[selection.REPLICATE_OF] for t in replicates}
    assert len(original) == 1  # 2 replicates: one candidate, two more seeds
    number = original.pop()
    seeds = {t.system_attrs[selection.INIT_SEED] for t in replicates}
    assert len(seeds) == 2 and 0 not in seeds
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in replicates)
    assert all(t.params == trials[number].params for t in replicates)
    values = [trials[number].value, *(t.value for t in replicates)]
    assert len(set(values)) == 3  # other initialisations, other results

    best = app_client.get(f"/v1/studies/{study_id}/best").json()
    assert best["trial_number"] == number
    assert best["value"] == pytest.approx(statistics.fmean(values))
    assert best["selection"]["seeds"] == 3 and best["selection"]["trials"] == [number, 6, 7]
    assert best["selection"]["sd"] == pytest.approx(statistics.stdev(values))
    assert detail["best_trial"] == number and detail["best_seeds"] == 3
    assert detail["best_value"] == pytest.approx(best["value"])


def test_the_initial_rate_is_searched_in_the_range_the_range_test_found(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    study_id = submit(app_client, task=TASK, n_trials=6, strategies=["cosine", "exponential"])
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, study_id)["status"] == "completed", 300, "done")
    found = status(app_client, study_id)["lr_range"]
    assert found is not None and 1e-5 <= found["low"] < found["high"] <= 1.0
    assert found["high"] == pytest.approx(found["edge"])
    storage = optuna.storages.RDBStorage(db_url)
    trials = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage).trials
    sampled = [t for t in trials if "fixed_params" not in t.system_attrs]
    assert sampled, "every trial was a seeded one"
    for t in sampled:
        lr = t.params[f"{t.params['strategy']}.initial_lr"]
        assert found["low"] <= lr <= found["high"], (t.number, lr)
    off = submit(app_client, task=TASK, n_trials=2, range_test=False, strategies=["constant"])
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, off)["status"] == "completed", 300, "done")
    assert status(app_client, off)["lr_range"] is None
