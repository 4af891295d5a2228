"""task.preprocess end to end: refused at submit where it cannot apply, applied by the worker
(statistics of the stored training split, in /best's export), and worth it on raw wine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from fastapi.testclient import TestClient

from search.data import Dataset, load_dataset, read_csv
from search.data.preprocess import standardized
from search.spec import parse_spec
from search.training.trainer import Trainer
from tests.integration.test_worker import status, wait_for, worker_thread

optuna.logging.set_verbosity(optuna.logging.WARNING)
WINE = Path(__file__).resolve().parents[2] / "examples" / "wine.csv"
TASK = {"model": {"kind": "mlp", "hidden": [32]}, "epochs": 3, "batch_size": 16}


def upload_wine(client: TestClient) -> str:
    with WINE.open("rb") as handle:
        response = client.post(
            "/v1/datasets",
            files={"file": ("wine.csv", handle, "text/csv")},
            data={"target": "cultivar", "name": "wine"},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def submit(client: TestClient, dataset: str, **preprocess: bool) -> Any:
    task = {**TASK, "dataset": dataset, "preprocess": preprocess}
    body = {"task": task, "n_trials": 2, "strategies": ["constant"]}
    return client.post("/v1/studies", json=body)


def refused(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    return [e["message"] for e in errors if e["field"] == "task.preprocess"]


def test_submit_refuses_what_cannot_be_standardised(app_client: TestClient) -> None:
    (images,) = refused(submit(app_client, "digits", standardize=True))
    assert "tabular" in images and "(8, 8)" in images
    wine = upload_wine(app_client)
    (target,) = refused(submit(app_client, wine, standardize=True, standardize_target=True))
    assert "regression" in target and "classification" in target
    assert submit(app_client, wine, standardize=True).status_code == 201


@pytest.mark.slow
def test_the_worker_trains_on_standardised_data_and_exports_its_statistics(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    wine = upload_wine(app_client)
    response = submit(app_client, wine, standardize=True)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    with worker_thread(db_url, tmp_path / "data"):
        wait_for(lambda: status(app_client, study_id)["status"] == "completed", 240, "completed")
    export = app_client.get(f"/v1/studies/{study_id}/best").json()["export"]
    stored = load_dataset(wine, tmp_path / "data")  # the split the worker trained on
    stats = export["preprocess"]
    np.testing.assert_allclose(stats["mean"], stored.x_train.mean(axis=0, dtype="f8"), rtol=1e-7)
    np.testing.assert_allclose(stats["std"], stored.x_train.std(axis=0, dtype="f8"), rtol=1e-7)
    assert stats["target_mean"] is None
    assert "std = np.array(" in export["python"] and "(x - mean) / std" in export["python"]


@pytest.mark.slow
def test_standardising_raw_wine_gives_a_much_lower_val_loss() -> None:
    raw = read_csv(WINE, "cultivar", name="wine")
    spec = parse_spec(
        {
            "strategies": ["constant"],
            "task": {**TASK, "epochs": 30, "preprocess": {"standardize": True}},
        }
    )
    trainer = Trainer()

    def val_loss(data: Dataset, rate: float) -> float:
        study = optuna.create_study(pruner=optuna.pruners.NopPruner())
        study.enqueue_trial({"strategy": "constant", "constant.initial_lr": rate})
        study.optimize(trainer.objective(spec, data), n_trials=1)
        return float(study.trials[0].value or np.inf)

    scaled = standardized(raw, features=True, target=False)
    for rate in (1e-3, 1e-2):
        assert val_loss(scaled, rate) < val_loss(raw, rate) / 3, rate
