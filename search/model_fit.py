"""Whether a user's model fits its dataset, checked at submit from the model's JSON and the
dataset's record (no Keras import).

Why: a keras_json or keras_file model whose input or output does not fit the data (an input
of (32, 1) for examples of (30,), 1 unit for 3 classes) was accepted and failed only in the
worker, three trials later. The rule mirrors the worker's (search.training.models
`_check_fits`): one input, whose declared shape takes the examples (None matches any size),
and one output of shape (n,), n being the classes (sparse labels, softmax or logits: one
unit per class, so two for a binary task) or the regression targets.

A model the static walker cannot follow (search.keras_shapes) is left to the size check,
which refuses it anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search import store
from search.errors import ModelError
from search.keras_dims import Shape
from search.keras_shapes import CannotSize, declared_inputs, output_shapes
from search.model_files import read_config


def fit_problems(
    tree: dict[str, Any], data_shape: tuple[int, ...], n_outputs: int | None, task: str
) -> list[str]:
    """Why this model config cannot train on examples of `data_shape` with `n_outputs`
    output units (None: unknown, not checked); empty when it can, or cannot be walked.
    A wrong input is said alone: the output of a model built on it says nothing more."""
    return input_problems(tree, data_shape) or output_problems(tree, data_shape, n_outputs, task)


def input_problems(tree: dict[str, Any], data_shape: tuple[int, ...]) -> list[str]:
    """One input, whose declared shape (if any) takes the examples."""
    try:
        inputs = declared_inputs(tree)
    except CannotSize:
        return []
    if len(inputs) != 1:
        return [f"the model must have one input; it has {len(inputs)}"]
    if inputs[0] is not None and not takes(list(inputs[0]), list(data_shape)):
        return [
            f"the model takes inputs of shape {_show(inputs[0])}; the dataset's examples have "
            f"shape {_show(data_shape)}"
        ]
    return []


def output_problems(
    tree: dict[str, Any], data_shape: tuple[int, ...], n_outputs: int | None, task: str
) -> list[str]:
    """One output of shape (n_outputs,), the model built for the examples."""
    try:
        outputs = output_shapes(tree, data_shape)
    except CannotSize:
        return []
    if len(outputs) != 1:
        return [f"the model must have one output; it has {len(outputs)}"]
    if n_outputs is not None and outputs[0] != (n_outputs,) and None not in outputs[0]:
        return [
            f"the model's output has shape {_show(outputs[0])}; the dataset needs "
            f"{_show((n_outputs,))}: {_needs(n_outputs, task)}"
        ]
    return []


def file_output_problems(
    path: Path, data_shape: tuple[int, ...], n_outputs: int | None, task: str
) -> list[str]:
    """A stored .keras file's output must fit the data too (its input is checked from its
    row); a file deleted since is refused when the study is inserted (under the tenant's
    lock, with the row gone too)."""
    try:
        config = read_config(path)
    except (ModelError, OSError):
        return []
    return output_problems(config, data_shape, n_outputs, task)


def _needs(n_outputs: int, task: str) -> str:
    if task == "classification":
        return (
            f"one unit per class for its {n_outputs} classes (sparse categorical "
            "crossentropy, on softmax or logits)"
        )
    return f"one unit per regression target ({n_outputs})"


def takes(model_input: list[int | None], data_input: list[int]) -> bool:
    """A declared input shape accepts the data's (None matches any size)."""
    return len(model_input) == len(data_input) and all(
        m is None or m == d for m, d in zip(model_input, data_input, strict=True)
    )


def _show(shape: Shape | tuple[int, ...]) -> str:
    return str(tuple(shape))


def dataset_outputs(dataset: store.StoredDataset, data_dir: Path) -> int | None:
    """The output layer's width for this dataset: its classes, the targets a dataset by
    path declares, or an upload's regression targets read from its stored y_train's header
    (None when they cannot be read)."""
    if dataset.task == "classification":
        return int(dataset.n_classes or 0)
    if dataset.source is not None:
        declared = dataset.source.get("n_outputs")
        return declared if isinstance(declared, int) and declared > 0 else 1
    from search.data.npz import array_shape  # numpy: only for an upload's regression
    from search.errors import DatasetError

    try:
        shape = array_shape(data_dir / dataset.path, "y_train")
    except (DatasetError, OSError):
        return None
    return 1 if len(shape) == 1 else int(shape[1]) if len(shape) == 2 else None
