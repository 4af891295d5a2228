"""The `StreamedTask` of `search.tuning.tune()`: a notebook's own model function, data, loss
and metrics, trained by the same trainer as a worker's trials.

Data may be `tf.data.Dataset`s (batched, as the caller made them) or `(x, y)` arrays (then
batched here, shuffled with the study's seed anew each epoch). Metric objects are cloned
from their config for every trial, so no state leaks from one trial's model to the next.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from search.errors import ModelError
from search.training.streamed import Datasets, StreamedTask, count_batches, is_infinite

Data = Any  # a tf.data.Dataset of batches, or an (x, y) pair of arrays


def in_process_task(
    build_model: Callable[[], Any],
    train: Data,
    val: Data,
    *,
    loss: Any,
    metrics: Sequence[Any],
    batch_size: int,
    steps_per_epoch: int | None,
) -> StreamedTask:
    """The task `tune()` runs; its steps per epoch are counted here once when not given."""
    train_data, val_data = _dataset(train, "train"), _dataset(val, "val")
    if steps_per_epoch is None:
        if isinstance(train, tf.data.Dataset):
            steps_per_epoch = count_batches(train)
        else:
            steps_per_epoch = math.ceil(len(train[0]) / batch_size)
    infinite = isinstance(train, tf.data.Dataset) and is_infinite(train)

    def datasets(batch: int, seed: int | None) -> Datasets:
        return train_data(batch, seed), val_data(batch, None)

    return StreamedTask(
        name="tune()",
        build_model=lambda _seed: _built(build_model),
        datasets=datasets,
        loss_and_metrics=lambda _model: (loss, [_fresh(m) for m in metrics]),
        steps_per_epoch=int(steps_per_epoch),
        infinite=infinite,
    )


def _dataset(data: Data, what: str) -> Callable[[int, int | None], tf.data.Dataset]:
    """A maker of the split's pipeline for a batch size and a seed."""
    if isinstance(data, tf.data.Dataset):
        return lambda _batch, _seed: data
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise ModelError(f"{what} must be a tf.data.Dataset or an (x, y) pair of arrays")
    x, y = data

    def make(batch: int, seed: int | None) -> tf.data.Dataset:
        pairs = tf.data.Dataset.from_tensor_slices((x, y))
        if seed is not None and what == "train":
            pairs = pairs.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return pairs.batch(batch).prefetch(2)

    return make


def _built(build_model: Callable[[], Any]) -> Any:
    model = build_model()
    if not isinstance(model, keras.Model):
        raise ModelError(f"build_model() returned a {type(model).__name__}, not a keras.Model")
    return model


def _fresh(metric: Any) -> Any:
    """A metric object cloned from its config (names and strings are kept as they are)."""
    if isinstance(metric, keras.metrics.Metric):
        try:
            return type(metric).from_config(metric.get_config())
        except Exception:  # a custom metric without a round-tripping config
            return copy.deepcopy(metric)
    return metric


__all__ = ["in_process_task"]
