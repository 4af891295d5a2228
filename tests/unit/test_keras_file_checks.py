"""search.model_files: a `.keras` archive checked without Keras (what it may contain, how
big it may inflate, how many weights it may have). The archives are written here with
zipfile in the layout `model.save()` uses; tests/integration/test_model_files.py uploads
files Keras itself saved."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from search.errors import ModelError
from search.model_files import MAX_CONFIG_BYTES, check_keras_file, declared_input_shape
from tests.keras_files import DENSE, _layer, archive, sequential

LIMIT = 64 * 1024 * 1024


def problems(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(ModelError) as refused:
        check_keras_file(data, max_uncompressed=kwargs.pop("limit", LIMIT), **kwargs)
    return str(refused.value)


def test_a_plain_model_is_accepted_with_what_the_api_records() -> None:
    info = check_keras_file(archive(sequential(DENSE)), max_uncompressed=LIMIT)
    assert info.class_name == "Sequential" and info.keras_version == "3.15.1"
    assert info.input_shape == [8] and info.weights_bytes == 4096 and info.est_params == 1024
    # compile_config is never loaded (compile=False), so its custom loss does not count


def test_lambda_and_foreign_classes_are_refused() -> None:
    lam = _layer("Lambda", {"function": {"class_name": "__lambda__", "config": {"code": "x"}}})
    assert "Lambda layers are not allowed" in problems(archive(sequential(lam)))
    foreign = _layer("Evil", {}, module="evil_package.layers")
    assert "only Keras's own layers, models" in problems(archive(sequential(foreign)))
    custom = {**DENSE, "registered_name": "my_pkg>MyDense"}
    assert "custom registered class" in problems(archive(sequential(custom)))


def test_keras_objects_that_are_not_model_parts_are_refused() -> None:
    """`keras.*` is not enough: a file utility or anything outside the model namespaces is
    no layer, and a vocabulary given as a path is refused on any class (it is read at build)."""
    get_file = _layer("get_file", {}, module="keras.src.utils.file_utils")
    assert "keras.src.utils.file_utils" in problems(archive(sequential(get_file)))
    lookup = _layer(
        "IndexLookup",
        {"vocabulary": "/etc/passwd", "max_tokens": None},
        module="keras.src.layers.preprocessing.index_lookup",
    )
    assert "vocabulary file ('/etc/passwd')" in problems(archive(sequential(lookup)))


def test_real_models_with_every_kind_of_part_pass_the_namespace_check() -> None:
    """Regularizers, constraints, initializers, dtype policies, seeds, recurrent and
    attention layers, keras.ops calls, as Keras writes them: nothing a real model holds is
    refused."""
    import keras

    from search.keras_json import model_json_problems

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.RandomFlip(seed=1)(inputs)
    x = layers.Conv2D(
        4,
        3,
        kernel_regularizer=keras.regularizers.L2(1e-4),
        kernel_constraint=keras.constraints.MaxNorm(2),
        kernel_initializer=keras.initializers.HeNormal(seed=1),
    )(x)
    x = layers.BatchNormalization()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(4, activation="relu", dtype="mixed_float16")(x)
    x = layers.GaussianNoise(0.1, seed=3)(x)
    image_model = keras.Model(inputs, layers.Dense(3, activation="softmax", dtype="float32")(x))
    tokens = keras.Input((5,), dtype="int32")
    y = layers.Embedding(10, 4, embeddings_regularizer="l2")(tokens)
    y = layers.LSTM(4, return_sequences=True)(y)
    y = layers.MultiHeadAttention(2, 2)(y, y)
    y = layers.Bidirectional(layers.GRU(4))(y)
    y = keras.ops.mean(keras.ops.add(y, keras.ops.square(y)), axis=-1, keepdims=True)
    text_model = keras.Model(tokens, layers.Dense(1)(y))
    stacked = keras.Sequential([keras.Input((4,)), layers.Dense(2), layers.PReLU()])
    for model in (image_model, text_model, stacked):
        assert model_json_problems(model.to_json()) == []


def test_the_parameter_budget_is_read_from_the_declared_weights() -> None:
    data = archive(sequential(DENSE), {"model.weights.h5": b"\0" * 40_000})
    message = problems(data, max_params=5_000)
    assert "about 10,000 weights" in message and "at most 5,000" in message
    check_keras_file(data, max_uncompressed=LIMIT, max_params=20_000)  # under it: fine


def test_zip_bombs_are_refused_from_their_declared_sizes() -> None:
    bomb = archive(
        sequential(DENSE), {"assets/zeros.bin": b"\0" * 5_000_000}, compression=zipfile.ZIP_DEFLATED
    )
    assert "refused as a zip bomb" in problems(bomb)
    assert "inflates to" in problems(archive(sequential(DENSE)), limit=1000)


def test_config_json_is_read_under_a_cap() -> None:
    big = json.dumps(sequential(DENSE)).encode() + b" " * (MAX_CONFIG_BYTES + 1)
    assert "config.json is" in problems(archive(big))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a zip at all", "expected the zip archive"),
        (b"PK\x03\x04 truncated", "corrupt zip"),
        (archive(b"{not json"), "config.json is not valid JSON"),
        (archive([1, 2]), "a JSON object"),
        (archive(sequential(DENSE), {"payload.py": b"import os"}), "unexpected member"),
        (archive(sequential(DENSE), {"assets/../../etc/x": b""}), "unexpected member"),
        (archive({"class_name": "Dense"}), "class_name Functional, Sequential or Model"),
    ],
)
def test_bad_files_say_why(data: bytes, reason: str) -> None:
    assert reason in problems(data)


def test_a_member_written_twice_is_refused() -> None:
    """Two config.json: the check and Keras's loader might read different copies."""
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = archive(sequential(DENSE), {"config.json": json.dumps(sequential(DENSE))})
    assert "'config.json' appears more than once" in problems(twice)


def test_missing_config_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("model.weights.h5", b"")
    assert "config.json is missing" in problems(buffer.getvalue())


def test_declared_input_shape_only_when_unambiguous() -> None:
    assert declared_input_shape(sequential(DENSE)) == [8]
    assert declared_input_shape({"config": {"layers": [DENSE]}}) is None
    two = {"config": {"layers": [sequential()["config"]["layers"][0]] * 2}}
    assert declared_input_shape(two) is None
