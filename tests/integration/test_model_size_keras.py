"""The submit-time size estimate (search.model_size, search.keras_shapes) against Keras
itself: for each model the static count equals `count_params()` of the model the worker
builds, and a built-in model's estimate equals the walk of its own JSON, activations too."""

from __future__ import annotations

import json
from dataclasses import dataclass

import keras
import numpy as np
import pytest

from search.data import Task
from search.keras_shapes import CannotSize, keras_json_size, output_shapes
from search.model_size import DataShape, estimate
from search.spec import CnnModel, KerasJsonModel, MlpModel
from search.training.models import build_model

L = keras.layers


@dataclass(frozen=True)
class Shape:
    """What build_model sizes a model by (search.training.models.Shaped)."""

    input_shape: tuple[int, ...]
    n_outputs: int
    task: Task = "classification"
    name: str = "shape"

    @property
    def n_classes(self) -> int | None:
        return self.n_outputs if self.task == "classification" else None


BUILT_IN = [
    (MlpModel(), Shape((8, 8), 10)),
    (MlpModel(hidden=[7, 5, 3], dropout=0.2), Shape((30,), 1, "regression")),
    (CnnModel(filters=[4, 4, 4, 4], dense=8), Shape((8, 8), 10)),
    (CnnModel(filters=[3, 5], dense=6, dropout=0.1), Shape((7, 5, 3), 4)),
    (CnnModel(filters=[2], dense=4), Shape((1, 6), 2)),  # too thin to pool
]


@pytest.mark.parametrize(("spec", "data"), BUILT_IN, ids=lambda v: str(v)[:40])
def test_built_in_models_are_sized_as_they_are_built(
    spec: MlpModel | CnnModel, data: Shape
) -> None:
    model = build_model(spec, data, seed=None)
    size = estimate(spec, DataShape(data.input_shape, data.n_outputs))
    assert size.params == model.count_params()
    assert keras_json_size(model.to_json(), data.input_shape) == size


def _seq(shape: tuple[int, ...], *layers: keras.Layer) -> keras.Model:
    return keras.Sequential([keras.Input(shape), *layers])


def _functional() -> keras.Model:
    inputs = keras.Input((10,))
    a, b, shared = L.Dense(6)(inputs), L.Dense(6)(inputs), L.Dense(6)
    added = L.Add()([shared(a), shared(b)])  # a shared layer's weights count once
    return keras.Model(inputs, L.Dense(2)(L.Concatenate()([added, a])))


def _nested() -> keras.Model:
    inner = _seq((10,), L.Dense(5), L.Dense(4))
    inputs = keras.Input((10,))
    return keras.Model(inputs, L.Dense(2)(inner(inputs)))


def _with_ops() -> keras.Model:
    """A residual block written with operators and keras.ops, as users write them: Keras 3
    records these as ops (keras.src.ops.numpy.Add, ...), not layers."""
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same")(inputs) + L.Conv2D(4, 1)(inputs)
    x = keras.ops.relu(x * 0.5)
    pooled = keras.ops.mean(x, axis=[1, 2])
    peak = keras.ops.reshape(keras.ops.max(x, axis=-1, keepdims=True), (-1, 64))
    joined = keras.ops.concatenate([pooled, peak], axis=-1)
    logits = L.Dense(10)(L.Flatten()(keras.ops.expand_dims(joined, 1)))
    return keras.Model(inputs, keras.ops.softmax(logits, axis=-1))


def _with_slices() -> keras.Model:
    """Slicing as users write it: the last step of a sequence, a channel range, a new axis,
    a reversed stride (recorded as GetItem ops whose key is in the call's arguments)."""
    inputs = keras.Input((6, 5))
    seq = L.GRU(4, return_sequences=True)(inputs)
    last = seq[:, -1]
    middle = L.Flatten()(seq[..., 1:3])
    widened = L.Flatten()(L.Conv1D(2, 2)(seq[:, None, ::-2, 0][:, 0, :, None]))
    return keras.Model(inputs, L.Dense(3)(L.Concatenate()([last, middle, widened])))


def _around_the_core() -> keras.Model:
    """Layers users add around the core: augmentation and resizing, normalization variants,
    TimeDistributed, attention (search/keras_layers_extra.py)."""
    adapted = L.Normalization()
    adapted.adapt(np.random.default_rng(0).random((20, 3)).astype("float32"))
    images = keras.Input((12, 10, 3))
    x = L.RandomFlip(seed=1)(images)
    x = L.RandomRotation(0.1, seed=2)(x)
    x = L.Resizing(8, 8)(x)
    x = L.CenterCrop(6, 7)(x)
    x = adapted(x)
    x = L.Conv2D(4, 3)(x)
    x = L.GroupNormalization(groups=2)(x)
    x = L.Reshape((4, 20))(x)
    x = L.TimeDistributed(L.Dense(6))(x)
    x = L.RMSNormalization()(x)
    x = L.MultiHeadAttention(2, 3)(x, x)
    x = L.MultiHeadAttention(2, 3, value_dim=5, output_shape=4, use_bias=False)(x, x)
    x = L.Normalization(mean=0.0, variance=1.0)(L.GlobalAveragePooling1D()(x))
    return keras.Model(images, L.Dense(2)(x))


USER = {
    "dense": lambda: _seq(
        (8, 8), L.Flatten(), L.Dense(7), L.Dropout(0.1), L.Dense(3, use_bias=False)
    ),
    "conv2d": lambda: _seq(
        (13, 11, 3),
        L.Conv2D(5, 3, strides=2),
        L.BatchNormalization(),
        L.MaxPooling2D(2, padding="same"),
        L.Conv2D(4, (2, 3), padding="same", dilation_rate=2),
        L.SeparableConv2D(6, 3, depth_multiplier=2, padding="same"),
        L.DepthwiseConv2D(2),
        L.GlobalAveragePooling2D(),
        L.Dense(2),
    ),
    "conv1d": lambda: _seq(
        (20, 4),
        L.Conv1D(6, 5, padding="causal"),
        L.LayerNormalization(),
        L.AveragePooling1D(3),
        L.Conv1DTranspose(3, 4, strides=2),
        L.ZeroPadding1D(2),
        L.Cropping1D((1, 2)),
        L.UpSampling1D(2),
        L.Flatten(),
        L.Dense(1),
    ),
    "recurrent": lambda: _seq(
        (12,),
        L.Embedding(50, 6),
        L.LSTM(5, return_sequences=True),
        L.GRU(4, return_sequences=True),
        L.Bidirectional(L.SimpleRNN(3)),
        L.RepeatVector(2),
        L.GRU(2, reset_after=False),
        L.Dense(2),
    ),
    "reshaping": lambda: _seq(
        (6, 4),
        L.Reshape((4, -1)),
        L.Permute((2, 1)),
        L.PReLU(),
        L.Reshape((3, 2, 4)),
        L.Conv2DTranspose(2, 3, strides=2, padding="same"),
        L.ZeroPadding2D(((1, 0), (2, 1))),
        L.Flatten(),
        L.Dense(3),
    ),
    "functional": _functional,
    "nested": _nested,
    "ops": _with_ops,
    "slices": _with_slices,
    "around the core": _around_the_core,
}


@pytest.mark.parametrize("name", list(USER))
def test_keras_json_models_are_sized_as_keras_counts_them(name: str) -> None:
    model = USER[name]()
    spec = KerasJsonModel(config=model.to_json())
    data = DataShape(tuple(int(d) for d in model.input_shape[1:]), 2)
    assert estimate(spec, data).params == model.count_params()


@pytest.mark.parametrize("name", ["ops", "slices", "around the core"])
def test_ops_and_layers_around_the_core_get_keras_output_shape(name: str) -> None:
    model = USER[name]()
    shape = tuple(int(d) for d in model.input_shape[1:])
    assert output_shapes(json.loads(model.to_json()), shape) == [model.output_shape[1:]]


def test_a_model_without_input_is_sized_for_the_data() -> None:
    """As the worker does: a Sequential with no Input is built for the dataset's examples."""
    model = keras.Sequential([L.Dense(4), L.Dense(2)])
    size = keras_json_size(model.to_json(), (7,))
    model.build((None, 7))
    assert size.params == model.count_params() == 7 * 4 + 4 + 4 * 2 + 2


def _edit(model: keras.Model, layer: int, **config: object) -> str:
    """The model's JSON with some config values of one of its layers replaced."""
    tree = json.loads(model.to_json())
    tree["config"]["layers"][layer]["config"].update(config)
    return json.dumps(tree)


def _seq_sliced() -> keras.Model:
    inputs = keras.Input((5, 3))
    return keras.Model(inputs, L.Dense(2)(inputs[:, -1]))


def _edit_call(model: keras.Model, key: list[object]) -> str:
    """The model's JSON with the key of its (one) slice replaced."""
    tree = json.loads(model.to_json())
    [op] = [layer for layer in tree["config"]["layers"] if layer["class_name"] == "GetItem"]
    op["inbound_nodes"][0]["args"][1] = key
    return json.dumps(tree)


BROKEN = {  # name: (JSON Keras cannot build or call, the input shape, a word of the reason)
    "dense units 0": (_edit(_seq((4,), L.Dense(3)), 1, units=0), (4,), "units"),
    "conv kernel 0": (_edit(_seq((10, 2), L.Conv1D(4, 3)), 1, kernel_size=[0]), (10, 2), "kernel"),
    "conv strides 0": (_edit(_seq((10, 2), L.Conv1D(4, 3)), 1, strides=[0]), (10, 2), "strides"),
    "pool strides 0": (
        _edit(_seq((10, 2), L.MaxPooling1D(2)), 1, strides=[0]),
        (10, 2),
        "strides",
    ),
    "embedding of 0 words": (
        _edit(_seq((5,), L.Embedding(10, 4)), 1, input_dim=0),
        (5,),
        "input_dim",
    ),
    "dropout rate 2": (_edit(_seq((4,), L.Dropout(0.5), L.Dense(2)), 1, rate=2.0), (4,), "rate"),
    "reshape to fewer values": (
        _edit(_seq((8, 8), L.Reshape((8, 8))), 1, target_shape=[7, 7]),
        (8, 8),
        "target_shape",
    ),
    "reshape -1 that does not divide": (
        _edit(_seq((10,), L.Reshape((5, 2))), 1, target_shape=[-1, 3]),
        (10,),
        "target_shape",
    ),
    "softmax along a missing axis": (_edit(_seq((4,), L.Softmax()), 1, axis=5), (4,), "axis"),
    "unknown activation": (
        _edit(_seq((4,), L.Dense(3, activation="relu")), 1, activation="os.system"),
        (4,),
        "activation",
    ),
    "index past the end of an axis": (
        _edit_call(_seq_sliced(), key=[{"class_name": "__ellipsis__", "config": {}}, 4]),
        (5, 3),
        "outside axis 2 of size 3",
    ),
    "more indices than axes": (
        _edit_call(_seq_sliced(), key=[0, 0, 0, 0]),
        (5, 3),
        "4 indices into a tensor of rank 3",
    ),
    "two layers of one name": (
        _edit(_seq((4,), L.Dense(3, name="a"), L.Dense(2, name="b")), 2, name="a"),
        (4,),
        "named",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_configs_keras_cannot_build_are_refused_at_submit(name: str) -> None:
    """Each is refused by the static walk with its reason, and Keras itself fails on it (so
    the walk refuses nothing the worker could have trained)."""
    config, shape, reason = BROKEN[name]
    with pytest.raises(CannotSize, match=reason):
        keras_json_size(config, shape)
    with pytest.raises(Exception):  # noqa: B017 - Keras raises what it raises
        keras.models.model_from_json(config)(np.zeros((2, *shape), "float32"))


def test_pool_strides_default_to_the_pool_and_reshape_infers_a_dividing_minus_one() -> None:
    model = _seq((12, 2), L.MaxPooling1D(3), L.Reshape((-1, 4)), L.Flatten(), L.Dense(2))
    tree = json.loads(model.to_json())
    tree["config"]["layers"][1]["config"]["strides"] = None
    assert keras_json_size(json.dumps(tree), (12, 2)).params == model.count_params()


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ([0], "keep the batch axis whole"),
        ([None], "a new axis before the batch axis"),
        ([{"class_name": "__slice__", "config": {"start": 1, "stop": None, "step": None}}],
         "keep the batch axis whole"),
        ([{"class_name": "__ellipsis__", "config": {}}] * 2, "at most one"),
        ([{"class_name": "__slice__", "config": {"start": None, "stop": None, "step": 0}}],
         "step cannot be zero"),
        (["0"], "not an index"),
        ([{"class_name": "__ellipsis__", "config": {}}] + [None] * 5000, "more than 32 axes"),
    ],
)  # fmt: skip
def test_slices_that_lose_the_batch_axis_or_cannot_be_read_are_refused(
    key: list[object], reason: str
) -> None:
    """`x[0]` builds in Keras but leaves the model without one output per example."""
    with pytest.raises(CannotSize, match=reason):
        keras_json_size(_edit_call(_seq_sliced(), key=key), (5, 3))
