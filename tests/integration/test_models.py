"""search.training.models: built models fit their data, seeds fix the weights, user JSON is
vetted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.data import Dataset, load_digits
from search.errors import ModelError
from search.spec import CnnModel, KerasJsonModel, MlpModel
from search.training.models import build_model, loss_and_metrics

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="module")
def flat() -> Dataset:
    d = load_digits()
    n_tr, n_va = len(d.x_train), len(d.x_val)
    return Dataset(
        "flat",
        d.x_train.reshape(n_tr, 64),
        d.y_train,
        d.x_val.reshape(n_va, 64),
        d.y_val,
        "classification",
        10,
    )


@pytest.fixture(scope="module")
def regression(digits: Dataset) -> Dataset:
    y_tr, y_va = digits.y_train.astype(np.float32), digits.y_val.astype(np.float32)
    return Dataset("reg", digits.x_train, y_tr, digits.x_val, y_va, "regression", None)


def _json(spec: KerasJsonModel | str) -> KerasJsonModel:
    return spec if isinstance(spec, KerasJsonModel) else KerasJsonModel(config=spec)


def _weights_equal(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_module_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys, search.training.models;"
        " print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_mlp_on_digits(digits: Dataset) -> None:
    model = build_model(MlpModel(hidden=[32, 16], dropout=0.2), digits)
    assert model.input_shape == (None, 8, 8) and model.output_shape == (None, 10)
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 2
    assert model.predict(digits.x_val[:5], verbose=0).sum(axis=1) == pytest.approx(1.0, abs=1e-5)


def test_cnn_on_digits_skips_pooling_once_spatial_size_is_1(digits: Dataset) -> None:
    model = build_model(CnnModel(filters=[4, 4, 4, 4], dense=8), digits)
    assert model.output_shape == (None, 10)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more pooling


def test_regression_output_is_linear(regression: Dataset) -> None:
    model = build_model(MlpModel(hidden=[8]), regression)
    assert model.output_shape == (None, 1)
    assert model.layers[-1].activation.__name__ == "linear"
    assert loss_and_metrics(regression, model) == ("mse", ["mae"])


def test_same_seed_same_weights_different_seed_different(digits: Dataset) -> None:
    for spec in (MlpModel(), CnnModel(filters=[4], dense=8)):
        a, b = build_model(spec, digits, seed=7), build_model(spec, digits, seed=7)
        c = build_model(spec, digits, seed=8)
        assert _weights_equal(a, b)
        assert not _weights_equal(a, c)


def test_cnn_refuses_flat_inputs(flat: Dataset) -> None:
    with pytest.raises(ModelError, match="cnn needs image-shaped inputs"):
        build_model(CnnModel(), flat)


def test_keras_json_sequential_and_functional_load(digits: Dataset) -> None:
    seq = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model = build_model(_json(seq.to_json()), digits)
    assert model.output_shape == (None, 10)
    inp = keras.Input((8, 8))
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))
    model = build_model(_json(keras.Model(inp, out).to_json()), digits)
    assert model.output_shape == (None, 10)


def test_keras_json_with_operators_and_ops_builds_and_trains(digits: Dataset) -> None:
    """`x + y` and keras.ops calls are recorded as ops, not layers: the worker loads them in
    safe mode and they train (the submit-time walk sizes them: test_model_size_keras)."""
    inputs = keras.Input((8, 8))
    flat = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Dense(16)(flat)
    x = keras.ops.relu(hidden + keras.layers.Dense(16)(hidden) * 0.5)
    model = build_model(_json(keras.Model(inputs, keras.layers.Dense(10)(x)).to_json()), digits)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(digits.x_train, digits.y_train, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_keras_json_with_slices_builds_and_trains(digits: Dataset) -> None:
    """`x[:, -1]` on a sequence is recorded as a GetItem op: the worker loads it in safe
    mode and it trains (the submit-time walk sizes it: test_model_size_keras)."""
    inputs = keras.Input((8, 8))
    steps = keras.layers.GRU(12, return_sequences=True)(inputs)
    x = keras.layers.Concatenate()([steps[:, -1], keras.layers.Flatten()(steps[..., :4])])
    model = build_model(_json(keras.Model(inputs, keras.layers.Dense(10)(x)).to_json()), digits)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(digits.x_train, digits.y_train, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_keras_json_same_seed_same_weights(digits: Dataset) -> None:
    seq = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(10)])
    spec = _json(seq.to_json())
    assert _weights_equal(build_model(spec, digits, seed=1), build_model(spec, digits, seed=1))


def test_keras_json_without_input_is_built_for_the_data(digits: Dataset) -> None:
    seq = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    assert build_model(_json(seq.to_json()), digits).input_shape == (None, 8, 8)


def test_lambda_layer_is_refused(digits: Dataset) -> None:
    seq = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Lambda(lambda t: t * 2),
            keras.layers.Dense(10),
        ]
    )
    with pytest.raises(ModelError, match="Lambda layers are not allowed"):
        build_model(_json(seq.to_json()), digits)


def test_lambda_refused_even_after_unsafe_deserialization_was_enabled(digits: Dataset) -> None:
    from keras.src.saving.serialization_lib import SafeModeScope

    seq = keras.Sequential(
        [keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Lambda(lambda t: t + 1)]
    )
    with SafeModeScope(False), pytest.raises(ModelError, match="Lambda"):
        build_model(_json(seq.to_json()), digits)


def test_wrong_output_size_names_both_sizes(digits: Dataset) -> None:
    seq = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ModelError, match=r"output size 3 .* 10 outputs"):
        build_model(_json(seq.to_json()), digits)


def test_wrong_input_shape_is_refused(digits: Dataset) -> None:
    seq = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(ModelError, match=r"input shape \(64,\) .* \(8, 8\)"):
        build_model(_json(seq.to_json()), digits)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("{not json", "malformed"),
        ('{"class_name": "NoSuchLayer", "config": {}}', "NoSuchLayer"),
        ('{"class_name": "function", "config": "system", "module": "os"}', "system"),
        ('{"class_name": "Dense", "config": {"units": 3}, "module": "keras.layers"}', "Dense"),
    ],
)
def test_bad_json_gives_model_error_with_reason(digits: Dataset, config: str, reason: str) -> None:
    with pytest.raises(ModelError, match=reason):
        build_model(_json(config), digits)


def test_from_logits_follows_the_last_layer(digits: Dataset) -> None:
    def from_logits(model: keras.Model) -> bool:
        loss, metrics = loss_and_metrics(digits, model)
        assert metrics == ["accuracy"]
        return loss.get_config()["from_logits"]

    assert from_logits(build_model(MlpModel(), digits)) is False
    logits = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert from_logits(logits) is True
    softmax_layer = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
            keras.layers.Softmax(),
        ]
    )
    assert from_logits(softmax_layer) is False
    activation = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
            keras.layers.Activation("softmax"),
        ]
    )
    assert from_logits(activation) is False


def test_built_model_trains(digits: Dataset) -> None:
    model = build_model(MlpModel(hidden=[32]), digits)
    loss, metrics = loss_and_metrics(digits, model)
    model.compile(optimizer="adam", loss=loss, metrics=metrics)
    hist = model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def _edited(layer: keras.Layer, **config: Any) -> str:
    """A digits model (Flatten, `layer`, Dense 10) with some of `layer`'s config replaced."""
    model = keras.Sequential(
        [keras.Input((8, 8)), layer, keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    tree = json.loads(model.to_json())
    tree["config"]["layers"][1]["config"].update(config)
    return json.dumps(tree)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            _edited(keras.layers.Dense(4, activation="relu"), activation="os.system"),
            "Could not interpret activation function identifier: os.system",
        ),
        (
            _edited(keras.layers.Reshape((8, 8)), target_shape=[7, 7]),
            r"Reshape.call\(\). The total size of the tensor must be unchanged",
        ),
    ],
)
def test_a_keras_failure_names_its_cause_not_its_wrapper(
    digits: Dataset, config: str, reason: str
) -> None:
    """Keras wraps a layer's failure in 'could not be deserialized properly' (the cause
    innermost) or 'Exception encountered when calling' (the message later, in terminal
    bold): the trial's reason is the cause, without escape codes."""
    with pytest.raises(ModelError, match=reason) as raised:
        build_model(_json(config), digits)
    assert "\x1b" not in str(raised.value) and "deserialized properly" not in str(raised.value)


def test_keras_json_of_a_compiled_model_is_accepted_and_its_compile_config_ignored(
    digits: Dataset,
) -> None:
    """`to_json()` after `compile()` carries the optimizer and loss (here an unknown one):
    neither the submit-time checks nor the worker's loader judge or load them."""
    from search.keras_json import model_json_problems

    seq = keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(10)])
    seq.compile("adam", "sparse_categorical_crossentropy")
    tree = json.loads(seq.to_json())
    assert tree["compile_config"]["optimizer"]["module"] == "keras.optimizers"
    tree["compile_config"]["loss"] = {"module": "my_losses", "class_name": "Focal", "config": {}}
    config = json.dumps(tree)
    assert model_json_problems(config) == []
    assert build_model(_json(config), digits).output_shape == (None, 10)


def test_fresh_weights_keep_an_adapted_normalization(digits: Dataset, tmp_path: Path) -> None:
    """`weights: fresh` rebuilds the model from its config, where an adapted Normalization has
    no statistics: it became an identity and trials trained on raw features."""
    from search.spec import KerasFileModel

    norm = keras.layers.Normalization()
    norm.adapt(digits.x_train.reshape(len(digits.x_train), -1))
    model = keras.Sequential(
        [keras.Input((8, 8)), keras.layers.Flatten(), norm, keras.layers.Dense(10)]
    )
    model.save(tmp_path / "m.keras")
    spec = KerasFileModel(id="m", weights="fresh")
    fresh = build_model(spec, digits, seed=3, models_dir=tmp_path)
    [fresh_norm] = [
        layer for layer in fresh.layers if isinstance(layer, keras.layers.Normalization)
    ]
    for kept, adapted in zip(fresh_norm.get_weights(), norm.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, adapted)
    assert not np.array_equal(fresh.layers[-1].get_weights()[0], model.layers[-1].get_weights()[0])


def test_probabilities_are_recognised_behind_a_last_linear_layer_or_an_op(
    digits: Dataset,
) -> None:
    """Mixed precision puts a float32 `Activation("linear")` after the softmax, and a softmax
    may be a `keras.ops` call: both give probabilities, so the loss must not read logits."""
    layers = keras.layers
    inputs = keras.Input((8, 8))
    hidden = layers.Dense(16)(layers.Flatten()(inputs))
    behind = layers.Activation("linear")(layers.Dense(10, activation="softmax")(hidden))
    as_op = keras.ops.softmax(layers.Dense(10)(hidden))
    logits = layers.Dense(10)(hidden)
    two_sigmoids = keras.Sequential(
        [keras.Input((8, 8)), layers.Flatten(), layers.Dense(2, activation="sigmoid")]
    )
    binary = Dataset("b", digits.x_train, digits.y_train % 2, digits.x_val, digits.y_val % 2,
                     "classification", 2)  # fmt: skip
    for outputs, probabilities in ((behind, True), (as_op, True), (logits, False)):
        loss, _ = loss_and_metrics(digits, keras.Model(inputs, outputs))
        assert loss.get_config()["from_logits"] is not probabilities
    loss, _ = loss_and_metrics(binary, two_sigmoids)
    assert loss.get_config()["from_logits"] is True  # as before: no softmax, not probabilities
