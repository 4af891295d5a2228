"""The model budget at submit, over HTTP (issue 14, Resources 1): a model over the
deployment's parameter or memory budget is a 422 on `task.model` naming the estimate and the
limit; a normal spec is still 201. No Keras here: the API sizes models without it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests import faults
from tests.conftest import ClientFactory
from tests.keras_files import DENSE as FILE_DENSE
from tests.keras_files import archive
from tests.keras_files import sequential as file_sequential


def refusal(client: TestClient, spec: dict[str, Any]) -> str:
    """The one error of a refused spec, which must be on task.model."""
    response = client.post("/v1/studies", json=spec)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["task.model"], errors
    return str(errors[0]["message"])


def wide_dataset(client: TestClient, features: int) -> str:
    """An uploaded classification dataset with `features` features per example."""
    rng = np.random.default_rng(0)
    data = faults.npz_of(
        x_train=rng.normal(size=(24, features)).astype(np.float32),
        y_train=np.arange(24) % 3,
        x_val=rng.normal(size=(8, features)).astype(np.float32),
        y_val=np.arange(8) % 3,
    )
    response = client.post("/v1/datasets", files={"file": ("wide.npz", data)})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_huge_mlp_on_a_wide_dataset_is_refused_with_the_estimate(app_client: TestClient) -> None:
    dataset = wide_dataset(app_client, 20_000)
    spec = {"task": {"dataset": dataset, "model": {"kind": "mlp", "hidden": [4096] * 8}}}
    message = refusal(app_client, spec)
    params = 20_000 * 4096 + 4096 + 7 * (4096 * 4096 + 4096) + 4096 * 3 + 3
    assert f"{params:,} parameters" in message and "at most 50,000,000" in message
    assert "MB" not in message  # 199 M parameters x 16 bytes (Adam) still fit in 4 GiB
    assert app_client.get("/v1/studies").json()["items"] == []


def test_dense_40000_twice_as_keras_json_is_refused(app_client: TestClient) -> None:
    config = faults.sequential(faults.dense(40_000), faults.dense(40_000))
    message = refusal(app_client, faults.keras_json_spec(config))
    params = (64 * 40_000 + 40_000) + (40_000 * 40_000 + 40_000)  # (8, 8) flattened to 64
    assert f"{params:,} parameters" in message and "at most 50,000,000" in message
    needed = params * 4 * 4 + 64 * (64 + 64 + 40_000 + 40_000) * 4 * 2  # Adam, batch 64
    assert f"about {-(-needed // 2**20):,} MB" in message and "at most 4,096 MB" in message


def test_the_memory_budget_counts_the_batch(app_client: TestClient) -> None:
    within = {"model": {"kind": "mlp", "hidden": [4096, 4096]}, "epochs": 2}
    created = app_client.post("/v1/studies", json={"task": {**within, "batch_size": 64}})
    assert created.status_code == 201, created.text
    message = refusal(app_client, {"task": {**within, "batch_size": 65536}})
    params = 64 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10  # within 50 M
    # Adam: weights, gradients and 2 moments; activations: input, flattened, 2 x 4096, 10
    needed = params * 4 * 4 + 65536 * (64 + 64 + 4096 + 4096 + 10) * 4 * 2
    assert "50,000,000" not in message and f"{params:,} parameters" in message
    assert f"about {-(-needed // 2**20):,} MB" in message and "a batch of 65536" in message
    assert "at most 4,096 MB" in message


def test_normal_specs_are_accepted_and_the_budget_is_per_deployment(
    client_factory: ClientFactory,
) -> None:
    cnn = {"task": {"model": {"kind": "cnn", "filters": [8, 16], "dense": 32}, "epochs": 2}}
    user = faults.keras_json_spec(faults.sequential(faults.dense(64), faults.dense(10)))
    with client_factory() as client:
        for spec in ({"task": {"epochs": 2}}, cnn, user):
            response = client.post("/v1/studies", json=spec)
            assert response.status_code == 201, response.text
    # the default mlp [64, 32] on digits has 64*64+64 + 64*32+32 + 32*10+10 = 6,570 weights
    with client_factory(max_model_params=6_000, max_model_memory_mb=1) as client:
        message = refusal(client, {"task": {"epochs": 2}})
        assert "6,570 parameters" in message and "at most 6,000" in message
        small = client.post("/v1/studies", json={"task": {"model": {"kind": "mlp", "hidden": [8]}}})
        assert small.status_code == 201, small.text
        # 1 MiB is too little for a batch of 65536 digits (64 values each, kept twice)
        big_batch = {"task": {"model": {"kind": "mlp", "hidden": [8]}, "batch_size": 65536}}
        assert "at most 1 MB" in refusal(client, big_batch)


def test_a_layer_that_cannot_be_sized_is_refused_by_name(app_client: TestClient) -> None:
    einsum = {
        "module": "keras.layers",
        "class_name": "EinsumDense",
        "registered_name": None,
        "config": {"name": "ein", "equation": "ab,bc->ac", "output_shape": 10**6},
    }
    message = refusal(app_client, faults.keras_json_spec(faults.sequential(einsum)))
    assert "'ein'" in message and "EinsumDense" in message and "cannot size" in message


def test_an_attention_layer_is_sized_and_refused_over_the_budget(app_client: TestClient) -> None:
    """MultiHeadAttention has a sizing rule: a huge key_dim is over the parameter budget."""
    attention = {
        "module": "keras.layers",
        "class_name": "MultiHeadAttention",
        "registered_name": None,
        "config": {"name": "mha", "num_heads": 4, "key_dim": 10**6},
    }
    message = refusal(app_client, faults.keras_json_spec(faults.sequential(attention)))
    assert "parameters; this deployment allows at most" in message


def test_a_functional_model_is_sized_from_its_graph(client_factory: ClientFactory) -> None:
    """Two branches of Dense(30000) on the (8, 8) input flattened, added, then a 10-way
    output."""
    inputs = {**json.loads(faults.sequential())["config"]["layers"][0], "name": "x"}

    def call(name: str, cls: str, cfg: dict[str, Any], *sources: str) -> dict[str, Any]:
        tensors = [
            {"class_name": "__keras_tensor__", "config": {"keras_history": [s, 0, 0]}}
            for s in sources
        ]
        return {
            "module": "keras.layers",
            "class_name": cls,
            "registered_name": None,
            "name": name,
            "config": {"name": name, **cfg},
            "inbound_nodes": [{"args": [tensors] if len(tensors) > 1 else tensors}],
        }

    layers = [
        {**inputs, "inbound_nodes": []},
        call("out", "Dense", {"units": 10}, "sum"),  # listed first: waits for "sum"
        call("a", "Dense", {"units": 30_000}, "flat"),
        call("b", "Dense", {"units": 30_000}, "flat"),
        call("flat", "Flatten", {}, "x"),
        call("sum", "Add", {}, "a", "b"),
    ]
    model = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": "Functional",
        "config": {
            "name": "f",
            "layers": layers,
            "input_layers": ["x", 0, 0],
            "output_layers": ["out", 0, 0],
        },
    }
    spec = faults.keras_json_spec(json.dumps(model))
    params = 2 * (64 * 30_000 + 30_000) + 30_000 * 10 + 10
    with client_factory() as client:
        assert client.post("/v1/studies", json=spec).status_code == 201
    with client_factory(max_model_params=params - 1) as client:
        assert f"{params:,} parameters" in refusal(client, spec)


def test_a_model_file_is_held_to_the_budget_in_force_at_submit(
    client_factory: ClientFactory,
) -> None:
    """Uploaded under one budget, the file (1,024 weights) is refused under a tighter one;
    a plugin study has no model in its spec and is not sized."""
    flatten = {"module": "keras.layers", "class_name": "Flatten", "config": {}}
    output = {**FILE_DENSE, "config": {**FILE_DENSE["config"], "units": 10}}  # digits' classes
    config = file_sequential(flatten, output)
    config["config"]["layers"][0]["config"]["batch_shape"] = [None, 8, 8]  # digits
    with client_factory() as client:
        uploaded = client.post("/v1/models", files={"file": ("net.keras", archive(config))})
        assert uploaded.status_code == 201, uploaded.text
    model = {"kind": "keras_file", "id": uploaded.json()["id"]}
    spec = {"task": {"dataset": "digits", "model": model, "epochs": 2}}
    with client_factory(max_model_params=1_000) as client:
        assert "1,024 parameters" in refusal(client, spec)
    with client_factory(max_model_params=1, require_live_plugin=False) as client:
        plugin = client.post("/v1/studies", json={"task": {"plugin": "some-task"}})
        assert plugin.status_code == 201, plugin.text
