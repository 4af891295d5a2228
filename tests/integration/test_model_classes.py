"""Layer classes that load files or run code are refused by lrsearch itself, whatever the
installed Keras's safe mode does (issue 14, item 13): in a keras_json spec (422 on
`task.model.config`) and in an uploaded .keras file's config.json (422 on `file`), each
message naming the layer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import faults
from tests.keras_files import archive
from tests.keras_files import sequential as file_sequential


def layer(cls: str, name: str, **config: Any) -> dict[str, Any]:
    return {
        "module": "keras.layers",
        "class_name": cls,
        "registered_name": None,
        "config": {"name": name, **config},
    }


FUNCTION = {"module": "builtins", "class_name": "function", "config": "exec"}
KERAS_FUNCTION = {
    "module": "keras.activations",
    "class_name": "function",
    "config": "relu",
    "registered_name": "relu",
}

#: (id, layer, words the message must hold)
REFUSED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("tfsm", layer("TFSMLayer", "saved", filepath="/srv/model"), ["'saved'", "TFSMLayer"]),
    ("jax", layer("JaxLayer", "jx", call_fn=FUNCTION), ["'jx'", "JaxLayer"]),
    (
        "string-lookup-file",
        layer("StringLookup", "words", vocabulary="/etc/passwd"),
        ["'words'", "StringLookup", "vocabulary file", "/etc/passwd"],
    ),
    (
        "integer-lookup-file",
        layer("IntegerLookup", "ids", vocabulary="vocab.txt"),
        ["'ids'", "IntegerLookup", "vocabulary file"],
    ),
    (
        "text-vectorization-file",
        layer("TextVectorization", "tv", vocabulary="vocab.txt"),
        ["'tv'", "TextVectorization", "vocabulary file"],
    ),
    ("lambda", faults.LAMBDA, ["Lambda"]),
    (
        "builtins-function",
        layer("Dense", "d", units=10, activation=FUNCTION),
        ["function objects are not allowed"],
    ),
    (
        "keras-function-object",
        layer("Dense", "d", units=10, activation=KERAS_FUNCTION),
        ["function objects are not allowed"],
    ),
    (
        "registered-name",
        {**layer("Dense", "mine", units=10), "registered_name": "MyDense"},
        ["'mine'", "Dense", "custom registered class 'MyDense'"],
    ),
    (
        "registered-package",
        {**layer("Dense", "pkg", units=10), "registered_name": "my_package>Dense"},
        ["'pkg'", "custom registered class 'my_package>Dense'"],
    ),
]


@pytest.mark.parametrize(("bad", "words"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_keras_json_refuses_the_class(
    app_client: TestClient, bad: dict[str, Any], words: list[str]
) -> None:
    spec = faults.keras_json_spec(faults.sequential(bad, faults.dense()))
    response = app_client.post("/v1/studies", json=spec)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert {e["field"] for e in errors} == {"task.model.config"}, errors
    message = " ".join(e["message"] for e in errors)
    assert all(w in message for w in words), message
    assert app_client.get("/v1/studies").json()["items"] == []


@pytest.mark.parametrize(("bad", "words"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_keras_file_refuses_the_class(
    app_client: TestClient, bad: dict[str, Any], words: list[str]
) -> None:
    data = archive(file_sequential(bad))
    response = app_client.post("/v1/models", files={"file": ("m.keras", data)})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "file"
    assert all(w in error["message"] for w in words), error["message"]
    assert app_client.get("/v1/models").json()["items"] == []


def test_a_vocabulary_given_as_a_list_and_plain_keras_objects_pass(app_client: TestClient) -> None:
    """The same layers, safely configured, are not refused by these checks (a lookup then
    fails the size check, which has no rule for it: that is a different refusal)."""
    words = layer("StringLookup", "words", vocabulary=["a", "b"])
    data = archive(file_sequential(words))
    assert app_client.post("/v1/models", files={"file": ("m.keras", data)}).status_code == 201
    dense = json.loads(faults.sequential(faults.dense()))
    dense["config"]["layers"][2]["config"]["kernel_initializer"] = {
        "module": "keras.initializers",
        "class_name": "GlorotUniform",
        "config": {"seed": None},
        "registered_name": None,
    }
    functional = {**dense, "registered_name": "Sequential"}  # its own class name: fine
    for config in (dense, functional):
        spec = faults.keras_json_spec(json.dumps(config))
        response = app_client.post("/v1/studies", json=spec)
        assert response.status_code == 201, response.text
