"""Workloads trained by `model.fit` on `tf.data` pipelines: task plugins, data on shared
storage, and `tune()`'s own model and datasets.

Why a second path beside the epoch loop: the epoch loop holds the data as tensors (fast for
small arrays), which a dataset larger than memory cannot be. Here every trial builds its
model and its pipelines and runs a plain `model.fit`, with the same per-epoch monitor and LR
callbacks as every other trial (`search.training.trainer`), so batches stream from disk;
the compiled model is reused across trials (`CompiledStreams`), as with arrays.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from search.errors import FieldError, ModelError, SpecError
from search.spec import StudySpec
from search.training.keras_export import (
    build_schedule_and_callbacks,
    make_optimizer,
    optimizer_config,
)
from search.training.lr_graph import DrivenCallback, SwitchSchedule
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
    preprocess: dict[str, Any] | None = None  # statistics it was standardised with (none)


class CompiledStreams:
    """Compiled models of streamed tasks, reused across the trials of one task.

    Why: building, compiling and tracing a model costs more than training a small one for a
    few epochs. As with arrays (`search.training.lr_graph`), one compiled model per task
    plays every strategy: a trial puts the weights and the optimizer state back to their
    seeded initial values and loads its schedule into the variables `fit` reads, so the
    traced train step is reused.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[int, str, int | None], Reused] = OrderedDict()

    def get(self, spec: StudySpec, task: StreamedTask) -> Reused:
        opt = json.dumps(optimizer_config(spec.task.optimizer, spec.task.momentum))
        key = (id(task), opt, spec.seed)
        if key not in self._kept:
            self._kept[key] = Reused.build(spec, task)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return self._kept[key]


@dataclass
class Reused:
    """A streamed task's compiled model, and what puts it back to a trial's start. It also
    plays the epoch loop's part in the range test (`restart`, `step_losses`)."""

    task: StreamedTask  # held, so its id() in the cache key is never reused
    spec: StudySpec
    model: Any
    schedule: SwitchSchedule
    variables: list[Any]
    initial: list[Any]
    _weights: dict[int, list[Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: StudySpec, task: StreamedTask) -> Reused:
        model = _built(task, spec.seed)
        schedule = SwitchSchedule()
        optimizer = make_optimizer(
            optimizer_config(spec.task.optimizer, spec.task.momentum), schedule
        )
        loss, metrics = task.loss_and_metrics(model)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        optimizer.build(model.trainable_variables)
        variables = [*model.weights, *optimizer.variables]
        return cls(task, spec, model, schedule, variables, [tf.identity(v) for v in variables])

    def restart(self, weights: list[Any] | None = None) -> None:
        """Weights and optimizer state as when built (or the weights given)."""
        for var, value in zip(self.variables, self.initial, strict=True):
            var.assign(value)
        if weights is not None:
            self.model.set_weights(weights)

    def trial_start(self, export: dict[str, Any], seed: int) -> list[Any]:
        """Restart for a trial of `seed` (a replicate's seed builds its own initial weights,
        once), load its schedule; its LR callbacks, driving the shared schedule."""
        weights = None
        if seed != (self.spec.seed or 0):
            if seed not in self._weights:
                self._weights[seed] = _built(self.task, seed).get_weights()
            weights = self._weights[seed]
        self.restart(weights)
        self.schedule.load(export)
        _, callbacks = build_schedule_and_callbacks(export, for_trial=True)
        return [DrivenCallback(cb, self.schedule) for cb in callbacks]

    def step_losses(self, seed: int, steps: int) -> list[float]:
        """Train the next `steps` batches of the training pipeline (epoch after epoch) and
        return each batch's loss (the range test; it stops at the first non-finite one)."""
        losses: list[float] = []
        while len(losses) < steps:
            train, _ = self.task.datasets(self.spec.task.batch_size, seed)
            before = len(losses)
            for batch in train.take(steps - len(losses)):
                logs = self.model.train_on_batch(*batch[:3], return_dict=True)
                loss = float(logs["loss"])
                losses.append(loss if math.isfinite(loss) else float("nan"))
                if not math.isfinite(loss):
                    return losses
            if len(losses) == before:
                break  # an empty pipeline
        return losses


def prepare_streamed(
    spec: StudySpec,
    task: StreamedTask,
    export: dict[str, Any],
    seed: int,
    cache: CompiledStreams | None = None,
) -> PreparedFit:
    """The trial's model compiled with lrsearch's optimizer at the trial's rate (reused from
    `cache`, else built and compiled for this trial alone), from the initial weights of
    `seed`, and its pipelines shuffled with `seed`."""
    base_lr = None
    if cache is not None:
        reused = cache.get(spec, task)
        model, callbacks = reused.model, reused.trial_start(export, seed)
        base_lr = reused.schedule.base_lr
    else:
        model = _built(task, seed)
        learning_rate, callbacks = build_schedule_and_callbacks(export, for_trial=True)
        loss, metrics = task.loss_and_metrics(model)
        model.compile(
            optimizer=make_optimizer(export["optimizer"], learning_rate),
            loss=loss,
            metrics=metrics,
        )
    train, val = task.datasets(spec.task.batch_size, seed)
    kwargs: dict[str, Any] = {}
    if task.infinite:
        kwargs["steps_per_epoch"] = task.steps_per_epoch
    else:  # a known length lets fit plan its epochs, and checks the run's steps
        train = train.apply(tf.data.experimental.assert_cardinality(task.steps_per_epoch))
    return PreparedFit(model, callbacks, train, val, base_lr=base_lr, fit_kwargs=kwargs)


def _built(task: StreamedTask, seed: int | None) -> Any:
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    model = task.build_model(seed)
    if not isinstance(model, keras.Model):
        raise ModelError(f"{task.name}: the model is a {type(model).__name__}, not a keras.Model")
    return model


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


def check_objective(metric: str, reported: dict[str, Any]) -> None:
    """The objective must be a value the compiled model reports (or its `val_` twin): a typo
    is a SpecError now, not a failure of every trial at its first epoch."""
    names = sorted(str(k) for k in reported)
    if metric.removeprefix("val_") not in names:
        offered = ", ".join(n for base in names for n in (base, f"val_{base}"))
        raise SpecError(
            [
                FieldError(
                    "objective.metric", f"{metric!r} is not reported; the model reports {offered}"
                )
            ]
        )


def objective_reported(task: StreamedTask, metric: str, batch_size: int, seed: int | None) -> None:
    """Before any trial: one model of the task, compiled, on its first validation batch
    reports the objective (SpecError on `objective.metric` otherwise). A model or data that
    fails here is left to the trials, which fail the study with that error as they always did."""
    try:
        model = task.build_model(seed)
        loss, metrics = task.loss_and_metrics(model)
        model.compile(optimizer="sgd", loss=loss, metrics=metrics)
        x, y = first_batch(task.datasets(batch_size, seed)[1])
        reported = model.test_on_batch(x, y, return_dict=True)
    except Exception:
        return
    check_objective(metric, reported)


def first_batch(data: tf.data.Dataset) -> tuple[Any, Any]:
    """The (x, y) of a pipeline's first batch (a ModelError when it has none)."""
    for batch in data.take(1):
        if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
            raise ModelError("datasets must yield (x, y) or (x, y, sample_weight) batches")
        return batch[0], batch[1]
    raise ModelError("the dataset is empty")


__all__ = [
    "CompiledStreams",
    "Datasets",
    "StreamedTask",
    "check_objective",
    "count_batches",
    "first_batch",
    "is_infinite",
    "objective_reported",
    "prepare_streamed",
]
