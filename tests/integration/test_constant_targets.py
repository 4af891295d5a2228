"""A target with one distinct value is refused at upload (issue 14, item 12): nothing can be
learned from it, and a numeric one was stored as a constant regression."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests import faults


def csv_upload(client: TestClient, values: list[str]) -> dict[str, Any]:
    lines = ["a,b,y"] + [f"{i},{i % 7},{v}" for i, v in enumerate(values)]
    data = ("\n".join(lines) + "\n").encode()
    response = client.post("/v1/datasets", files={"file": ("d.csv", data)}, data={"target": "y"})
    return {"status": response.status_code, **response.json()}


@pytest.mark.parametrize("value", ["3.5", "0", "1", "-2"])
def test_a_numeric_csv_target_with_one_value_is_refused_on_target(
    app_client: TestClient, value: str
) -> None:
    body = csv_upload(app_client, [value] * 40)
    assert body["status"] == 422, body
    [error] = body["errors"]
    assert error["field"] == "target"
    assert "'y' has one distinct value" in error["message"] and "40 rows" in error["message"]
    assert app_client.get("/v1/datasets").json()["items"] == []


def test_a_text_csv_target_with_one_label_is_refused_on_target(app_client: TestClient) -> None:
    body = csv_upload(app_client, ["cat"] * 40)
    assert body["status"] == 422, body
    [error] = body["errors"]
    assert error["field"] == "target" and "at least 2 classes" in error["message"]


def test_a_target_with_two_values_is_accepted(app_client: TestClient) -> None:
    body = csv_upload(app_client, ["3.5"] * 39 + ["4.5"])
    assert body["status"] == 201, body
    assert body["task"] == "regression"


def test_an_npz_with_one_class_is_refused(app_client: TestClient) -> None:
    rng = np.random.default_rng(0)
    data = faults.npz_of(
        x_train=rng.normal(size=(30, 4)).astype(np.float32),
        y_train=np.full(30, 2),
        x_val=rng.normal(size=(8, 4)).astype(np.float32),
        y_val=np.full(8, 2),
    )
    response = app_client.post("/v1/datasets", files={"file": ("d.npz", data)})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "file" and "at least 2 classes" in error["message"]
