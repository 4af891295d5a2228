"""An objective the task never reports is refused at submit (422 on `objective.metric`,
listing what the task reports), instead of failing every trial on a worker."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search.task_metrics import COMPILED_METRIC, reported_metrics

PROBLEM = "application/problem+json"
TASK = {"epochs": 3, "batch_size": 16}


def regression_npz() -> bytes:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(60, 4)),
        "y_train": rng.normal(size=60) * 3.7,
        "x_val": rng.normal(size=(20, 4)),
        "y_val": rng.normal(size=20) * 3.7,
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def regression_dataset(client: TestClient) -> str:
    response = client.post(
        "/v1/datasets",
        files={"file": ("r.npz", regression_npz(), "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    assert response.json()["task"] == "regression"
    return str(response.json()["id"])


def submit(client: TestClient, metric: str, dataset: str = "digits") -> Any:
    body = {
        "n_trials": 2,
        "task": {**TASK, "dataset": dataset},
        "objective": {"metric": metric},
    }
    return client.post("/v1/studies", json=body)


def refused(response: Any) -> str:
    """The one error of a 422 on objective.metric: its message."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["objective.metric"], errors
    return str(errors[0]["message"])


@pytest.mark.parametrize("metric", ["val_mae", "mae", "val_auc", "val_precision"])
def test_a_metric_classification_never_reports_is_refused(
    app_client: TestClient, metric: str
) -> None:
    message = refused(submit(app_client, metric))
    assert repr(metric) in message and "classification" in message
    assert "loss, accuracy, val_loss, val_accuracy" in message
    assert app_client.get("/v1/studies").json()["items"] == []  # nothing was created


@pytest.mark.parametrize("metric", ["val_accuracy", "accuracy", "val_auc"])
def test_a_metric_regression_never_reports_is_refused(app_client: TestClient, metric: str) -> None:
    dataset = regression_dataset(app_client)
    message = refused(submit(app_client, metric, dataset))
    assert repr(metric) in message and "regression" in message
    assert "loss, mae, val_loss, val_mae" in message


def test_the_metrics_each_task_reports_are_accepted(app_client: TestClient) -> None:
    regression = regression_dataset(app_client)
    for dataset, task in (("digits", "classification"), (regression, "regression")):
        for metric in reported_metrics(task):
            response = submit(app_client, metric, dataset)
            assert response.status_code == 201, (metric, task, response.text)


def test_the_table_is_what_training_compiles() -> None:
    """The submit check and the trainer read one table: both kinds, named as Keras logs them."""
    assert COMPILED_METRIC == {"classification": "accuracy", "regression": "mae"}
    assert reported_metrics("regression") == ("loss", "mae", "val_loss", "val_mae")


def test_the_check_joins_the_other_field_errors(app_client: TestClient) -> None:
    body = {"n_trials": 2, "task": {"epochs": 2, "batch_size": 16}, "objective": {"metric": "x"}}
    body["ranges"] = {"decay_steps": {"low": 1, "high": 100_000}}
    body["strategies"] = ["exponential"]
    response = app_client.post("/v1/studies", json=body)
    assert response.status_code == 422, response.text
    assert {"objective.metric", "ranges.decay_steps"} <= {
        e["field"] for e in response.json()["errors"]
    }


def test_a_plugin_study_is_not_held_to_the_built_in_metrics(client_factory: Any) -> None:
    """A task plugin reports the metrics it defines (checked on a worker, not here)."""
    with client_factory(require_live_plugin=False) as client:
        body = {"n_trials": 1, "task": {"plugin": "anything"}, "objective": {"metric": "val_auc"}}
        response = client.post("/v1/studies", json=body)
    assert response.status_code == 201, response.text
