"""Workloads trained by `model.fit` on `tf.data` pipelines: task plugins, data on shared
storage, and `tune()`'s own model and datasets.

Why a second path beside the epoch loop: the epoch loop holds the data as tensors (fast for
small arrays), which a dataset larger than memory cannot be. Here every trial builds its
model and its pipelines and runs a plain `model.fit`, with the same per-epoch monitor and LR
callbacks as every other trial (`search.training.trainer`), so batches stream from disk.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from search.errors import ModelError
from search.spec import StudySpec
from search.training.keras_export import build_schedule_and_callbacks, make_optimizer
from search.training.prepared import PreparedFit

Datasets = tuple[tf.data.Dataset, tf.data.Dataset]

# fit says so at the end of the first pass over a pipeline of unknown length (validation):
# expected here, and not worth a line in every trial's log.
warnings.filterwarnings("ignore", message="Your input ran out of data")


@dataclass(frozen=True)
class StreamedTask:
    """What a trial needs to train on pipelines, each part made fresh per trial.

    `build_model(seed)` gives an uncompiled model (seeded by the caller), `datasets(batch,
    seed)` batched (x, y) pipelines, `loss_and_metrics(model)` fresh objects for compile;
    `steps_per_epoch` is one pass over the training pipeline (the run length schedules
    count), `infinite` says the pipeline repeats (then fit stops each epoch after that many).
    """

    name: str
    build_model: Callable[[int | None], Any]
    datasets: Callable[[int, int | None], Datasets]
    loss_and_metrics: Callable[[Any], tuple[Any, list[Any]]]
    steps_per_epoch: int
    infinite: bool = False


def prepare_streamed(spec: StudySpec, task: StreamedTask, export: dict[str, Any]) -> PreparedFit:
    """Build, compile (lrsearch's optimizer at the trial's rate) and wire the pipelines."""
    if spec.seed is not None:
        keras.utils.set_random_seed(int(spec.seed))
    model = task.build_model(spec.seed)
    if not isinstance(model, keras.Model):
        raise ModelError(f"{task.name}: the model is a {type(model).__name__}, not a keras.Model")
    learning_rate, callbacks = build_schedule_and_callbacks(export)
    loss, metrics = task.loss_and_metrics(model)
    model.compile(
        optimizer=make_optimizer(export["optimizer"], learning_rate), loss=loss, metrics=metrics
    )
    train, val = task.datasets(spec.task.batch_size, spec.seed)
    if task.infinite:
        return PreparedFit(
            model, callbacks, train, val, fit_kwargs={"steps_per_epoch": task.steps_per_epoch}
        )
    # A known length lets fit plan its epochs, and checks the steps the run was sized with.
    train = train.apply(tf.data.experimental.assert_cardinality(task.steps_per_epoch))
    return PreparedFit(model, callbacks, train, val)


def count_batches(train: tf.data.Dataset) -> int:
    """Batches in one pass: the pipeline's cardinality when known, else counted (one pass
    over the data, done once per study by the preflight)."""
    known = int(train.cardinality())
    if known >= 0:
        return known
    if known == int(tf.data.INFINITE_CARDINALITY):
        raise ModelError(
            "the training dataset repeats forever: an epoch is one pass over it (drop "
            ".repeat() or declare steps_per_epoch)"
        )
    return int(train.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def is_infinite(data: tf.data.Dataset) -> bool:
    """The pipeline repeats forever (then the run needs a declared steps_per_epoch)."""
    return int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY)


def first_batch(data: tf.data.Dataset) -> tuple[Any, Any]:
    """The (x, y) of a pipeline's first batch (a ModelError when it has none)."""
    for batch in data.take(1):
        if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
            raise ModelError("datasets must yield (x, y) or (x, y, sample_weight) batches")
        return batch[0], batch[1]
    raise ModelError("the dataset is empty")


__all__ = [
    "Datasets",
    "StreamedTask",
    "count_batches",
    "first_batch",
    "is_infinite",
    "prepare_streamed",
]
