"""Model files through the API (`POST /v1/models`, on SQLite and PostgreSQL) and through a
worker: a `.keras` file Keras saved is accepted, one with a Lambda layer or over the weight
budget is refused, a study trains it from the file's weights or from fresh ones."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from search.data import load_digits
from search.worker import Worker, WorkerConfig
from tests.conftest import LOCAL_BASE_URL, ClientFactory, at_the_same_moment
from tests.keras_files import DENSE, _layer, archive, sequential

ROOT = Path(__file__).resolve().parents[2]


def upload(client: TestClient | httpx.Client, data: bytes, **form: str) -> httpx.Response:
    files = {"file": ("net.keras", io.BytesIO(data), "application/octet-stream")}
    return client.post("/v1/models", files=files, data=form)


def digits_model(input_shape: list[int]) -> bytes:
    """Flatten, then Dense(10): fits digits when `input_shape` is its (8, 8)."""
    inputs = _layer("InputLayer", {"batch_shape": [None, *input_shape], "dtype": "float32"})
    output = _layer("Dense", {"units": 10, "activation": "softmax"})
    config = sequential(_layer("Flatten", {}), output)
    config["config"]["layers"][0] = inputs
    return archive(config)


def test_upload_list_use_and_delete_a_model_file(app_client: TestClient, tmp_path: Path) -> None:
    response = upload(app_client, digits_model([8, 8]), name="pretrained")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["name"] == "pretrained" and model["class_name"] == "Sequential"
    assert model["input_shape"] == [8, 8] and model["keras_version"] == "3.15.1"
    stored = tmp_path / "data" / "models" / f"{model['id']}.keras"
    assert stored.is_file() and model["size_bytes"] == stored.stat().st_size
    assert app_client.get(f"/v1/models/{model['id']}").json() == model
    assert [m["id"] for m in app_client.get("/v1/models").json()["items"]] == [model["id"]]
    assert not list((tmp_path / "data" / "models").glob(".upload-*"))  # no leftovers

    task = {"model": {"kind": "keras_file", "id": model["id"]}, "epochs": 2}
    created = app_client.post("/v1/studies", json={"task": task})
    assert created.status_code == 201, created.text
    assert app_client.delete(f"/v1/models/{model['id']}").status_code == 409
    app_client.post(f"/v1/studies/{created.json()['id']}/cancel")
    assert app_client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert not stored.exists()
    assert app_client.get(f"/v1/models/{model['id']}").status_code == 404


def test_a_model_file_deleted_while_a_study_is_created_on_it_is_never_both(
    app_client: TestClient,
) -> None:
    """As for datasets: a study creation and a deletion of its model file at the same
    moment, one of them is refused (both take the tenant's lock)."""
    for _ in range(8):
        model_id = upload(app_client, digits_model([8, 8])).json()["id"]
        task = {"model": {"kind": "keras_file", "id": model_id}, "epochs": 1}
        created, deleted = at_the_same_moment(
            lambda task=task: app_client.post("/v1/studies", json={"n_trials": 2, "task": task}),
            lambda model_id=model_id: app_client.delete(f"/v1/models/{model_id}"),
        )
        if created.status_code == 201:
            assert deleted.status_code == 409, deleted.text
            app_client.post(f"/v1/studies/{created.json()['id']}/cancel")
            assert app_client.delete(f"/v1/models/{model_id}").status_code == 204
        else:
            assert deleted.status_code == 204, deleted.text
            assert created.status_code == 422, created.text
            assert {e["field"] for e in created.json()["errors"]} == {"task.model.id"}


def test_studies_name_model_files_they_can_use(app_client: TestClient) -> None:
    flat = upload(app_client, digits_model([64])).json()

    def errors(model: dict[str, Any]) -> list[tuple[str, str]]:
        body = app_client.post("/v1/studies", json={"task": {"model": model}}).json()
        return [(e["field"], e["message"]) for e in body["errors"]]

    [(field, message)] = errors({"kind": "keras_file", "id": "0" * 32})
    assert field == "task.model.id" and "unknown model file" in message
    [(field, message)] = errors({"kind": "keras_file", "id": flat["id"]})
    assert field == "task.model.id" and "(64,)" in message and "(8, 8)" in message
    [(field, _)] = errors({"kind": "keras_file", "id": flat["id"], "weights": "pretrained"})
    assert field == "task.model.weights"


def test_refused_files_say_why_on_field_file(client_factory: ClientFactory) -> None:
    lam = _layer("Lambda", {"function": {"class_name": "__lambda__", "config": {}}})
    bomb = archive(
        sequential(DENSE), {"assets/zeros": b"\0" * 3_000_000}, compression=zipfile.ZIP_DEFLATED
    )
    big_weights = archive(sequential(DENSE), {"model.weights.h5": b"\0" * 8_000})
    with client_factory(max_model_params=1_000, max_model_bytes=1_000_000) as client:
        for data, reason in (
            (archive(sequential(lam)), "Lambda layers are not allowed"),
            (big_weights, "about 2,000 weights"),
            (bomb, "zip bomb"),
            (b"PK\x03\x04garbage", "corrupt zip"),
            (b"", "empty"),
        ):
            body = upload(client, data).json()
            assert body["status"] == 422 and [e["field"] for e in body["errors"]] == ["file"]
            assert reason in body["errors"][0]["message"], body
        assert upload(client, b"x" * 1_200_000).status_code == 413
        assert client.get("/v1/models").json()["items"] == []


def test_model_file_quota_is_429(client_factory: ClientFactory) -> None:
    with client_factory(max_models=1) as client:
        assert upload(client, digits_model([8, 8])).status_code == 201
        assert upload(client, digits_model([8, 8])).status_code == 429


# --- files Keras saved, trained by a worker ---------------------------------------------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A digits MLP trained to ~95% accuracy, and a model with a Lambda layer, as saved."""
    keras = pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("keras")
    digits = load_digits()
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(digits.x_train, digits.y_train, epochs=8, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(digits.x_val, digits.y_val, verbose=0)
    assert accuracy > 0.9
    model.save(folder / "pretrained.keras")
    lam = keras.Sequential([keras.Input((8, 8)), keras.layers.Lambda(lambda x: x * 2.0)])
    lam.save(folder / "lambda.keras")
    return {"pretrained": folder / "pretrained.keras", "lambda": folder / "lambda.keras"}


@pytest.mark.slow
def test_trials_start_from_the_files_weights_or_fresh_ones(
    sqlite_url: str, tmp_path: Path, keras_files: dict[str, Path]
) -> None:
    """(On SQLite only: what the database does here is covered on both above.)"""
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(database_url=sqlite_url, data_dir=tmp_path / "data")
    with TestClient(create_app(settings), base_url=LOCAL_BASE_URL) as api:
        refused = upload(api, keras_files["lambda"].read_bytes()).json()
        assert refused["status"] == 422 and "Lambda" in refused["errors"][0]["message"]
        model_id = upload(api, keras_files["pretrained"].read_bytes()).json()["id"]
        tiny_lr = {"initial_lr": {"low": 1e-9, "high": 2e-9, "log": True}}
        ids = {}
        for weights in ("file", "fresh"):
            spec = {
                "task": {
                    "model": {"kind": "keras_file", "id": model_id, "weights": weights},
                    "epochs": 1,
                    "batch_size": 256,
                },
                "objective": {"metric": "val_accuracy"},
                "strategies": ["constant"],
                "ranges": tiny_lr,
                "n_trials": 1,
            }
            ids[weights] = api.post("/v1/studies", json=spec).json()["id"]
        worker = Worker(WorkerConfig(sqlite_url, tmp_path / "data"))
        assert worker.run_one() and worker.run_one()
        worker.resources.engine.dispose()
        values = {w: api.get(f"/v1/studies/{i}/best").json()["value"] for w, i in ids.items()}
        statuses = {api.get(f"/v1/studies/{i}").json()["status"] for i in ids.values()}
    assert statuses == {"completed"}
    # a rate of ~1e-9 changes nothing in an epoch: the accuracy is the starting weights'
    assert values["file"] > 0.9 and values["fresh"] < 0.4, values
