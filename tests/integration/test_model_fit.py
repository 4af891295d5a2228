"""A user model that does not fit its data is refused at submit (issue 14, item 10): a 422 on
`task.model` (`task.model.id` for a model file) naming both shapes, as the worker would have
refused it at each trial. No Keras here: the API reads the shapes from the JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests import faults
from tests.keras_files import _layer, archive
from tests.keras_files import sequential as file_sequential


def upload(client: TestClient, features: int, y_train: Any, y_val: Any) -> str:
    rng = np.random.default_rng(0)
    data = faults.npz_of(
        x_train=rng.normal(size=(len(y_train), features)).astype(np.float32),
        y_train=y_train,
        x_val=rng.normal(size=(len(y_val), features)).astype(np.float32),
        y_val=y_val,
    )
    response = client.post("/v1/datasets", files={"file": ("d.npz", data)})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def classes(client: TestClient, n: int, features: int = 30) -> str:
    return upload(client, features, np.arange(24) % n, np.arange(8) % n)


def regression(client: TestClient, targets: int = 1) -> str:
    rng = np.random.default_rng(1)
    shape = (24,) if targets == 1 else (24, targets)
    y_train = rng.normal(size=shape).astype(np.float32)
    y_val = rng.normal(size=(8, *shape[1:])).astype(np.float32)
    return upload(client, 30, y_train, y_val)


def model(*layers: dict[str, Any], shape: Sequence[int | None] | None = (30,)) -> str:
    """A Sequential's JSON: an InputLayer of `shape` (none when None), then `layers`."""
    first = [] if shape is None else [_layer("InputLayer", {"batch_shape": [None, *shape]})]
    body = {"name": "m", "layers": [*first, *layers]}
    return json.dumps({"module": "keras", "class_name": "Sequential", "config": body})


def dense(units: int, activation: str | None = None) -> dict[str, Any]:
    return _layer("Dense", {"name": f"d{units}", "units": units, "activation": activation})


def submit(client: TestClient, dataset: str, config: str) -> Any:
    task = {"dataset": dataset, "model": {"kind": "keras_json", "config": config}, "epochs": 2}
    return client.post("/v1/studies", json={"task": task})


def refused(client: TestClient, dataset: str, config: str) -> str:
    response = submit(client, dataset, config)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["task.model"], errors
    return str(errors[0]["message"])


def test_an_input_shape_that_does_not_take_the_examples_is_refused(
    app_client: TestClient,
) -> None:
    dataset = classes(app_client, 3)
    message = refused(app_client, dataset, model(dense(3), shape=[32, 1]))
    assert "inputs of shape (32, 1)" in message and "examples have shape (30,)" in message
    message = refused(app_client, dataset, model(dense(3), shape=[31]))
    assert "(31,)" in message and "(30,)" in message
    assert app_client.get("/v1/studies").json()["items"] == []
    # a None dimension takes any size, as in Keras
    assert submit(app_client, dataset, model(dense(3), shape=[None])).status_code == 201


def test_an_output_that_is_not_one_unit_per_class_is_refused(app_client: TestClient) -> None:
    three = classes(app_client, 3)
    message = refused(app_client, three, model(dense(1)))
    assert "output has shape (1,)" in message and "needs (3,)" in message
    assert "3 classes" in message
    # binary: the trainer's sparse categorical crossentropy wants 2 units, not 1 sigmoid
    two = classes(app_client, 2)
    message = refused(app_client, two, model(dense(1, "sigmoid")))
    assert "(1,)" in message and "needs (2,)" in message
    # softmax or logits: both are one unit per class
    assert submit(app_client, three, model(dense(3, "softmax"))).status_code == 201
    assert submit(app_client, two, model(dense(8, "relu"), dense(2))).status_code == 201


def test_an_output_that_is_not_one_unit_per_regression_target_is_refused(
    app_client: TestClient,
) -> None:
    one = regression(app_client)
    message = refused(app_client, one, model(dense(2)))
    assert "output has shape (2,)" in message and "needs (1,)" in message
    assert "regression target" in message
    assert submit(app_client, one, model(dense(1))).status_code == 201
    # an upload's target width is read from its stored y_train
    two = regression(app_client, targets=2)
    assert "needs (2,)" in refused(app_client, two, model(dense(1)))
    assert submit(app_client, two, model(dense(2))).status_code == 201


def test_an_output_of_the_wrong_rank_is_refused(app_client: TestClient) -> None:
    """Dense on (8, 8) keeps the first axis: (8, 10) is not digits' (10,)."""
    config = model(dense(10, "softmax"), shape=[8, 8])
    message = refused(app_client, "digits", config)
    assert "output has shape (8, 10)" in message and "needs (10,)" in message
    flat = model(_layer("Flatten", {}), dense(10, "softmax"), shape=[8, 8])
    assert submit(app_client, "digits", flat).status_code == 201


def test_a_model_without_a_declared_input_is_checked_as_built_for_the_data(
    app_client: TestClient,
) -> None:
    dataset = classes(app_client, 3)
    assert "needs (3,)" in refused(app_client, dataset, model(dense(4), shape=None))
    assert submit(app_client, dataset, model(dense(3), shape=None)).status_code == 201


def test_a_functional_model_with_two_inputs_is_refused(app_client: TestClient) -> None:
    dataset = classes(app_client, 3)

    def tensor(name: str) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, 0]}}

    layers = [
        {**_layer("InputLayer", {"batch_shape": [None, 30]}), "name": "a", "inbound_nodes": []},
        {**_layer("InputLayer", {"batch_shape": [None, 30]}), "name": "b", "inbound_nodes": []},
        {
            **_layer("Add", {}),
            "name": "sum",
            "inbound_nodes": [{"args": [[tensor("a"), tensor("b")]]}],
        },
        {**dense(3), "name": "out", "inbound_nodes": [{"args": [tensor("sum")]}]},
    ]
    body = {
        "name": "f",
        "layers": layers,
        "input_layers": [["a", 0, 0], ["b", 0, 0]],
        "output_layers": [["out", 0, 0]],
    }
    config = json.dumps({"module": "keras", "class_name": "Functional", "config": body})
    assert "one input; it has 2" in refused(app_client, dataset, config)


def test_a_model_file_whose_output_does_not_fit_is_refused(app_client: TestClient) -> None:
    config = file_sequential(_layer("Flatten", {}), dense(3, "softmax"))
    config["config"]["layers"][0]["config"]["batch_shape"] = [None, 8, 8]  # digits
    uploaded = app_client.post("/v1/models", files={"file": ("m.keras", archive(config))})
    assert uploaded.status_code == 201, uploaded.text
    task = {"model": {"kind": "keras_file", "id": uploaded.json()["id"]}, "epochs": 2}
    response = app_client.post("/v1/studies", json={"task": task})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "task.model.id"
    assert "output has shape (3,)" in error["message"] and "needs (10,)" in error["message"]
