"""What a user gets: a chosen configuration retrained in a plain Keras fit from fresh seeds.

A best-of-N seen during a search is flattered by the luck of its draws (a peer that
re-initialises every trial keeps the luckiest initialisation); retraining the chosen
configuration from seeds the search never saw removes that. Every contender's choice goes
through the same function: `apply(export)` (what lrsearch's users call), a model built with
`search.training.models.build_model`, `model.fit` on batches shuffled with the seed.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from search.data import Dataset
from search.spec import StudySpec

#: Seeds of the retrains: initialisation and shuffle. The searches use seeds 0, 1, 2, ...
RETRAIN_SEEDS: tuple[int, ...] = (1001, 1002, 1003, 1004, 1005)


#: Plain fits run this many batches per graph call: the same training, less Python per step
#: (only epoch-level callbacks are used, so they see exactly what they would see otherwise).
STEPS_PER_EXECUTION = 32
_CACHE: dict[str, list[list[float]]] = {}


def curves(
    spec: StudySpec, data: Dataset, export: dict[str, Any], seeds: tuple[int, ...] = RETRAIN_SEEDS
) -> list[list[float]]:
    """val_loss per epoch of `export` retrained once per seed (NaN where it diverged); the
    same export on the same task is retrained once per process."""
    from search.training.keras_export import apply

    retrainable = {k: export.get(k) for k in ("schedule", "callbacks", "initial_lr", "optimizer")}
    key = json.dumps(
        [data.name, spec.task.model_dump(mode="json"), retrainable, seeds], sort_keys=True
    )
    if key not in _CACHE:
        traced: _Traced | None = None
        out = []
        for seed in seeds:
            optimizer, callbacks = apply(export)
            if traced is None:
                traced = _Traced(*compiled(spec, data, seed, optimizer))
            else:
                traced.reseed(spec, data, seed)
            out.append(_fit(spec, data, traced.model, traced.train, callbacks))
        _CACHE[key] = out
    return [list(c) for c in _CACHE[key]]


class _Traced:
    """A compiled model that later retrains of the same export reuse, each from its own seed.

    `reseed` sets it to what a new model built from the seed and compiled would be: every
    variable of a freshly built model (the weights, and the dropout's seed state) and the
    optimizer's variables as they were before its first step, with batches shuffled by that
    seed. The fit is the one a new model gives (the same values to the last bit:
    tests/integration/test_suite_retrain.py) without tracing the same graph again, which was
    about 40% of a short retrain's time (wine-mlp: 2.3 s a fit, 1.3 s reused)."""

    def __init__(self, model: Any, train: Any) -> None:
        self.model, self.train = model, train
        self._optimizer_start = [v.numpy() for v in model.optimizer.variables]

    def reseed(self, spec: StudySpec, data: Dataset, seed: int) -> None:
        from search.training.models import build_model

        fresh = build_model(spec.task.model, data, seed)
        for var, value in zip(self.model.variables, fresh.variables, strict=True):
            var.assign(value)
        for var, start in zip(self.model.optimizer.variables, self._optimizer_start, strict=True):
            var.assign(start)
        self.train = batches(spec, data, seed)


def schedule_free_curves(
    spec: StudySpec, data: Dataset, seeds: tuple[int, ...] = RETRAIN_SEEDS
) -> list[list[float]]:
    """`keras.optimizers.ScheduleFreeAdamW` at its default rate (5% warm-up, as its authors
    recommend), evaluated at its averaged weights `x`, not at the training point `y`."""
    import keras

    steps = spec.task.epochs * math.ceil(len(data.x_train) / spec.task.batch_size)
    out = []
    for seed in seeds:
        optimizer = keras.optimizers.ScheduleFreeAdamW(warmup_steps=max(1, steps // 20))
        model, train = compiled(spec, data, seed, optimizer)
        out.append(_fit(spec, data, model, train, [], averaged=optimizer))
    return out


def compiled(spec: StudySpec, data: Dataset, seed: int, optimizer: Any) -> tuple[Any, Any]:
    """A model built from `seed` and compiled with `optimizer` as every retrain is, and its
    training batches (shuffled with `seed`, again each epoch). The optimizer is built here,
    eagerly, not by fit's first step: ScheduleFreeAdamW's build copies the weights into its
    z sequence, and built inside the traced train step that copy is traced into the step
    (Keras 3.15): its training stalls (wine-mlp: val_loss 0.44 after 30 epochs, 0.022 built
    here). Other optimizers' slots start at zero either way."""
    from search.training.models import build_model, loss_and_metrics

    model = build_model(spec.task.model, data, seed)
    loss, metrics = loss_and_metrics(data, model)
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=STEPS_PER_EXECUTION
    )
    optimizer.build(model.trainable_variables)
    return model, batches(spec, data, seed)


def batches(spec: StudySpec, data: Dataset, seed: int) -> Any:
    """The training batches of a retrain: shuffled with `seed`, again each epoch."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(len(data.x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(spec.task.batch_size)
    )


def _fit(
    spec: StudySpec,
    data: Dataset,
    model: Any,
    train: Any,
    callbacks: list[Any],
    averaged: Any = None,
) -> list[float]:
    import keras

    extra: list[Any] = [_AveragedValidation(averaged, data)] if averaged is not None else []
    history = model.fit(
        train,
        validation_data=None if averaged is not None else (data.x_val, data.y_val),
        epochs=spec.task.epochs,
        callbacks=[*callbacks, *extra, keras.callbacks.TerminateOnNaN()],
        verbose=0,
    )
    values = [float(v) for v in history.history.get("val_loss", [])]
    return values + [math.nan] * (spec.task.epochs - len(values))


class _AveragedValidation:
    """Validation loss at Schedule-Free's averaged point x = (y - (1 - beta_1) z) / beta_1."""

    def __new__(cls, optimizer: Any, data: Dataset) -> Any:
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                model, beta = self.model, float(optimizer.beta_1)
                live = [v.numpy() for v in model.trainable_variables]
                index = {id(v): i for i, v in enumerate(model.trainable_variables)}
                for var in model.trainable_variables:
                    z = optimizer._momentums[optimizer._get_variable_index(var)]
                    y = live[index[id(var)]]
                    var.assign((y - (1 - beta) * z.numpy()) / beta)
                value = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)
                for var, y in zip(model.trainable_variables, live, strict=True):
                    var.assign(y)
                if logs is not None:
                    logs["val_loss"] = float(value["loss"])

        return Callback()


def summary(values: list[list[float]]) -> dict[str, float]:
    """Mean over seeds of the final epoch's value and of the best epoch's value."""
    finals = [v[-1] if v and math.isfinite(v[-1]) else math.inf for v in values]
    bests = [min((x for x in v if math.isfinite(x)), default=math.inf) for v in values]
    return {
        "final": float(np.mean(finals)),
        "final_sd": float(np.std(finals)) if all(map(math.isfinite, finals)) else math.inf,
        "min": float(np.mean(bests)),
    }
