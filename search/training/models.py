"""Build the Keras model a task asks for, sized to its dataset.

Keras is imported inside the functions so that importing this module (the API does, to
validate) never loads TensorFlow. User JSON and `.keras` files are loaded in Keras safe mode
and Lambda layers are refused before Keras sees them: a Lambda carries Python code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from search.data import Task
from search.errors import ModelError
from search.spec import CnnModel, KerasFileModel, KerasJsonModel, MlpModel
from search.task_metrics import COMPILED_METRIC

#: Terminal colours and bold, which Keras puts in some messages.
ANSI = re.compile(r"\x1b\[[0-9;]*m")

ModelChoice = MlpModel | CnnModel | KerasJsonModel | KerasFileModel

if TYPE_CHECKING:
    import keras

_CODE_CLASSES = frozenset({"Lambda", "__lambda__"})


class Shaped(Protocol):
    """What a model is sized by: a Dataset, or the shape of data streamed from files."""

    @property
    def name(self) -> str: ...

    @property
    def task(self) -> Task: ...

    @property
    def n_classes(self) -> int | None: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def n_outputs(self) -> int: ...


def build_model(
    spec: ModelChoice,
    dataset: Shaped,
    seed: int | None = 0,
    models_dir: Path | None = None,
) -> keras.Model:
    """An uncompiled model for `dataset`; the same seed gives the same initial weights.
    A `keras_file` model is read from `models_dir` (the data directory's models/)."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    if isinstance(spec, KerasJsonModel):
        return _from_json(spec.config, dataset)
    if isinstance(spec, KerasFileModel):
        return _from_file(spec, dataset, models_dir)
    inputs = keras.Input(shape=dataset.input_shape, name="features")
    x = _cnn_body(spec, dataset, inputs) if isinstance(spec, CnnModel) else _mlp_body(spec, inputs)
    return keras.Model(inputs, _output_layer(dataset)(x), name=spec.kind)


def loss_and_metrics(dataset: Shaped, model: keras.Model) -> tuple[Any, list[str]]:
    """Loss and metrics for compile(); logits vs probabilities read from the last layer."""
    import keras

    metrics = [COMPILED_METRIC[dataset.task]]  # the names the API accepts as objectives
    if dataset.task == "regression":
        return "mse", metrics
    probabilities = _ends_in_softmax(model) or _outputs_probabilities(model, dataset.input_shape)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities), metrics


def _mlp_body(spec: MlpModel, inputs: Any) -> Any:
    import keras

    x = keras.layers.Flatten()(inputs)
    for units in spec.hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
        if spec.dropout > 0:
            x = keras.layers.Dropout(spec.dropout)(x)
    return x


def _cnn_body(spec: CnnModel, dataset: Shaped, inputs: Any) -> Any:
    import keras

    shape = dataset.input_shape
    if len(shape) not in (2, 3):
        raise ModelError(
            f"cnn needs image-shaped inputs (H, W) or (H, W, C); dataset {dataset.name!r} has "
            f"inputs of shape {shape} (use an mlp for flat feature vectors)"
        )
    x = keras.layers.Reshape((*shape, 1))(inputs) if len(shape) == 2 else inputs
    height, width = shape[0], shape[1]
    for filters in spec.filters:
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        if min(height, width) >= 2:
            x = keras.layers.MaxPooling2D(2)(x)
            height, width = height // 2, width // 2
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(spec.dense, activation="relu")(x)
    if spec.dropout > 0:
        x = keras.layers.Dropout(spec.dropout)(x)
    return x


def _output_layer(dataset: Shaped) -> Any:
    import keras

    if dataset.task == "classification":
        return keras.layers.Dense(dataset.n_outputs, activation="softmax", name="output")
    return keras.layers.Dense(dataset.n_outputs, name="output")


def _from_file(spec: KerasFileModel, dataset: Shaped, models_dir: Path | None) -> keras.Model:
    """A `.keras` file loaded in safe mode, uncompiled; with `weights: fresh`, a clone of it
    (same architecture, newly initialised weights, seeded by the caller)."""
    import keras
    from keras.src.saving.serialization_lib import SafeModeScope

    path = Path(models_dir or ".") / f"{spec.id}.keras"
    if not path.is_file():
        raise ModelError(f"model file {spec.id!r} is not in this worker's data directory")
    try:
        with SafeModeScope(True):
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
            if spec.weights == "fresh":
                model = _keep_preprocessing_state(model, keras.models.clone_model(model))
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError... for bad files
        raise ModelError(f"cannot load model file {spec.id!r}: {_first_line(exc)}") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"model file {spec.id!r} holds a {type(model).__name__}, not a model")
    _check_fits(model, dataset)
    return model


#: Layers whose weights are statistics of the data (`adapt()`), not learned: a clone rebuilt
#: from their config alone would start them empty (Normalization as an identity).
_PREPROCESSING = frozenset({"Normalization"})


def _keep_preprocessing_state(loaded: keras.Model, clone: keras.Model) -> keras.Model:
    """`weights: fresh` re-initialises what trains; an adapted preprocessing layer keeps the
    file's statistics (they describe the data, and no trial would learn them back)."""
    originals = {layer.name: layer for layer in _all_layers(loaded)}
    for layer in _all_layers(clone):
        original = originals.get(layer.name)
        if type(layer).__name__ in _PREPROCESSING and original is not None and layer.weights:
            layer.set_weights(original.get_weights())
    return clone


def _all_layers(model: Any) -> Iterator[Any]:
    """Every layer of a model, nested models' layers included."""
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        yield layer
        stack.extend(getattr(layer, "layers", []))


def _from_json(config: str, dataset: Shaped) -> keras.Model:
    """`model.to_json()` output -> model, refusing Lambda and anything that does not fit."""
    import keras
    from keras.src.saving.serialization_lib import SafeModeScope

    try:
        tree = json.loads(config)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"model JSON is malformed: {exc}") from None
    if _CODE_CLASSES.intersection(_class_names(tree)):
        raise ModelError(
            "Lambda layers are not allowed: they carry Python code; use built-in Keras layers"
        )
    if isinstance(tree, dict) and "compile_config" in tree:  # a compiled model's to_json():
        tree.pop("compile_config")  # its optimizer and loss are not ours (trials compile)
        config = json.dumps(tree)
    try:
        # SafeModeScope overrides even keras.config.enable_unsafe_deserialization().
        with SafeModeScope(True):
            model = keras.models.model_from_json(config)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError... for bad configs
        if "lambda" in str(exc).lower():
            raise ModelError(f"Lambda layers are not allowed: {exc}") from None
        raise ModelError(f"cannot build the model from its JSON: {_first_line(exc)}") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"the JSON describes a {type(model).__name__}, not a Keras model")
    _check_fits(model, dataset)
    return model


def _class_names(tree: Any) -> Iterator[str]:
    """Every `class_name` in a JSON tree, iteratively (deep nesting cannot blow the stack)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = node.get("class_name")
            if isinstance(name, str):
                yield name
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_fits(model: keras.Model, dataset: Shaped) -> None:
    """One input of the example shape (None matches any size), one output of the right width."""
    if not model.built or not model.inputs:
        try:
            model.build((None, *dataset.input_shape))
        except Exception as exc:
            raise ModelError(
                f"the model has no input shape and cannot be built for inputs of shape "
                f"{dataset.input_shape}: {_first_line(exc)}"
            ) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"the model must have one input and one output, it has {len(model.inputs)} "
            f"and {len(model.outputs)}"
        )
    got = tuple(model.inputs[0].shape[1:])
    want = dataset.input_shape
    if len(got) != len(want) or any(g not in (None, w) for g, w in zip(got, want, strict=False)):
        raise ModelError(f"model input shape {got} does not match the dataset's input shape {want}")
    out = tuple(model.outputs[0].shape[1:])
    if len(out) != 1 or out[0] != dataset.n_outputs:
        what = "classes" if dataset.task == "classification" else "regression targets"
        raise ModelError(
            f"model output size {out[0] if len(out) == 1 else out} does not match the dataset's "
            f"{dataset.n_outputs} outputs ({dataset.n_outputs} {what})"
        )


def _ends_in_softmax(model: Any) -> bool:
    """True when the model's last layer (looking inside nested models) applies softmax."""
    import keras

    layer = model
    while isinstance(layer, keras.Model) and layer.layers:
        layer = layer.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def _outputs_probabilities(model: Any, input_shape: tuple[int, ...]) -> bool:
    """Whether the model's outputs are probabilities although its last layer is no softmax
    (a float32 `Activation("linear")` after it for mixed precision, a `keras.ops.softmax`
    call): on any batch a softmax's rows are non-negative and sum to 1, logits' (or two
    sigmoids') rows almost never. Unreadable: logits, as before."""
    import numpy as np

    try:
        dtype = np.dtype(getattr(model.inputs[0], "dtype", None) or "float32")
        if dtype.kind == "f":
            batch = np.random.default_rng(0).standard_normal((2, *input_shape)).astype(dtype)
        else:  # token ids: 1 is in every vocabulary of two or more
            batch = np.ones((2, *input_shape), dtype=dtype)
        out = np.asarray(model(batch, training=False))
    except Exception:
        return False
    rows = out.reshape(len(out), -1).astype(np.float64)
    return bool(rows.shape[1] > 1 and (rows >= 0).all() and np.allclose(rows.sum(1), 1, atol=1e-2))


def _first_line(exc: BaseException) -> str:
    """What went wrong, in one line: Keras wraps the cause of a failed deserialisation in
    layers of "could not be deserialized properly" (the cause is the innermost exception),
    and a failed call in "Exception encountered when calling X.call()" with the message on
    a later line, in terminal bold."""
    while "deserializ" in str(exc)[:200] and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    lines = [ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        lines = [f"{lines[0].removeprefix('Exception encountered when calling ')} {lines[1]}"]
    return (lines[0] if lines else type(exc).__name__)[:500]
