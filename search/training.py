"""Train one Optuna trial: sample a strategy, fit, report every epoch, prune, record the LR applied.

Compiled models are reused across trials of the same model, data and optimizer (see
`search.lr_graph`): weights go back to their seeded initial values and the optimizer state to
zero, so a reused model starts exactly where a fresh one with the same seed would.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from search.datasets import Dataset
from search.errors import ModelError, TrialDiverged, TrialStopped
from search.space import run_shape, suggest
from search.spec import StudySpec
from search.strategies import Params, RunShape, get_strategy

StopCheck = Callable[[], bool]


@dataclass
class TrialRecord:
    """What one trial leaves behind, stored as Optuna user attributes."""

    strategy: str
    params: Params
    lr: list[float] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    export: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.lr)

    def save(self, trial: optuna.Trial) -> None:
        attrs = {
            "strategy": self.strategy,
            "params": self.params,
            "lr": self.lr,
            "history": self.history,
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 4),
            "export": self.export,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


@dataclass
class _Compiled:
    model: Any
    schedule: Any
    initial_weights: list[Any]
    initial_optimizer: list[Any]
    val_data: Any


class Trainer:
    """Runs trials; keeps a few compiled models so a study is not N cold starts."""

    def __init__(self, *, reuse: bool = True, cache_size: int = 2) -> None:
        self.reuse = reuse
        self.cache_size = cache_size
        self._cache: OrderedDict[str, _Compiled] = OrderedDict()

    def objective(
        self, spec: StudySpec, dataset: Dataset, should_stop: StopCheck | None = None
    ) -> Callable[[optuna.Trial], float]:
        """An Optuna objective for `study.optimize` (in-memory studies, tests, benchmarks)."""
        return lambda trial: self.run(trial, spec, dataset, should_stop)

    def run(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        dataset: Dataset,
        should_stop: StopCheck | None = None,
    ) -> float:
        """Train one trial; raise TrialPruned, TrialDiverged or TrialStopped when it ends early."""
        run = run_shape(spec, len(dataset.x_train))
        strategy_id, params = suggest(trial, spec, run)  # honours enqueued and retried params
        record = TrialRecord(strategy_id, params)
        started = time.perf_counter()
        try:
            return self._fit(trial, spec, dataset, run, record, should_stop)
        except TrialDiverged as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        finally:
            record.seconds = time.perf_counter() - started
            record.save(trial)

    def _fit(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        dataset: Dataset,
        run: RunShape,
        record: TrialRecord,
        should_stop: StopCheck | None,
    ) -> float:
        from search.keras_export import optimizer_config

        strategy = get_strategy(record.strategy)
        opt_cfg = optimizer_config(spec.task.optimizer, spec.task.momentum)
        record.export = strategy.export(
            record.params, run, spec.objective.metric, opt_cfg
        ).as_dict()
        record.export.update(strategy=record.strategy, params=record.params)
        model, callbacks, train_data, val_data = self._prepare(spec, dataset, record.export)
        monitor = _EpochMonitor(trial, spec, record, should_stop)
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=spec.task.epochs,
            verbose=0,
            shuffle=False,
            callbacks=[*callbacks, monitor.keras_callback()],
        )
        return monitor.finish()

    def _prepare(
        self, spec: StudySpec, dataset: Dataset, export: dict[str, Any]
    ) -> tuple[Any, list[Any], Any, Any]:
        from search.keras_export import build_schedule_and_callbacks

        if not self.reuse:
            return self._fresh(spec, dataset, export)
        compiled = self._compiled(spec, dataset)
        compiled.model.set_weights(compiled.initial_weights)
        for var, value in zip(
            compiled.model.optimizer.variables, compiled.initial_optimizer, strict=True
        ):
            var.assign(value)
        compiled.schedule.load(export)
        from search.lr_graph import DrivenCallback

        _, stock_callbacks = build_schedule_and_callbacks(export)
        callbacks = [DrivenCallback(cb, compiled.schedule) for cb in stock_callbacks]
        return compiled.model, callbacks, _train_data(dataset, spec), compiled.val_data

    def _fresh(
        self, spec: StudySpec, dataset: Dataset, export: dict[str, Any]
    ) -> tuple[Any, list[Any], Any, Any]:
        """Build, compile and fit from scratch: the naive path, kept for comparison."""
        import keras

        from search.keras_export import build_schedule_and_callbacks, make_optimizer
        from search.models import build_model, loss_and_metrics

        keras.backend.clear_session()
        model = build_model(spec.task.model, dataset, spec.seed)
        learning_rate, callbacks = build_schedule_and_callbacks(export)
        loss, metrics = loss_and_metrics(dataset, model)
        model.compile(
            optimizer=make_optimizer(export["optimizer"], learning_rate), loss=loss, metrics=metrics
        )
        return model, callbacks, _train_data(dataset, spec), (dataset.x_val, dataset.y_val)

    def _compiled(self, spec: StudySpec, dataset: Dataset) -> _Compiled:
        key = json.dumps(
            [dataset.fingerprint(), spec.task.model_dump(mode="json"), spec.seed], sort_keys=True
        )
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        compiled = _compile(spec, dataset)
        self._cache[key] = compiled
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return compiled


def _compile(spec: StudySpec, dataset: Dataset) -> _Compiled:
    import tensorflow as tf

    from search.keras_export import make_optimizer, optimizer_config
    from search.lr_graph import SwitchSchedule
    from search.models import build_model, loss_and_metrics

    model = build_model(spec.task.model, dataset, spec.seed)
    schedule = SwitchSchedule()
    optimizer = make_optimizer(optimizer_config(spec.task.optimizer, spec.task.momentum), schedule)
    loss, metrics = loss_and_metrics(dataset, model)
    run = run_shape(spec, len(dataset.x_train))
    model.compile(
        optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=run.steps_per_epoch
    )
    optimizer.build(model.trainable_variables)
    val = (
        tf.data.Dataset.from_tensor_slices((dataset.x_val, dataset.y_val))
        .batch(max(spec.task.batch_size, 1024))
        .cache()
    )
    return _Compiled(
        model, schedule, model.get_weights(), [v.numpy() for v in optimizer.variables], val
    )


def _train_data(dataset: Dataset, spec: StudySpec) -> Any:
    """Shuffled batches; made per trial so every trial sees the same order for the same seed."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((dataset.x_train, dataset.y_train))
        .shuffle(len(dataset.x_train), seed=spec.seed or 0)
        .batch(spec.task.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


class _EpochMonitor:
    """Per epoch: record LR and metrics, detect divergence, report to Optuna, prune or stop."""

    def __init__(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        record: TrialRecord,
        should_stop: StopCheck | None,
    ) -> None:
        self.trial, self.spec, self.record = trial, spec, record
        self.should_stop = should_stop or (lambda: False)
        self.pruned = self.stopped = False
        self.diverged: str | None = None
        self.value: float | None = None

    def keras_callback(self) -> Any:
        import keras

        monitor = self

        class _Hook(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                lr = self.model.optimizer.learning_rate
                monitor.record.lr.append(float(keras.ops.convert_to_numpy(lr)))

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if monitor.epoch_end(epoch, logs or {}):
                    self.model.stop_training = True

        return _Hook()

    def epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
        """Handle one finished epoch; True when training must stop now."""
        for name, value in logs.items():
            if name != "learning_rate":
                self.record.history.setdefault(name, []).append(float(value))
        metric = self.spec.objective.metric
        if metric not in logs:
            raise ModelError(
                f"objective metric {metric!r} is not produced by this model;"
                f" available: {', '.join(sorted(logs))}"
            )
        value = float(logs[metric])
        if not (math.isfinite(float(logs.get("loss", 0.0))) and math.isfinite(value)):
            self.diverged = f"diverged at epoch {epoch + 1}: loss is {logs.get('loss')}"
            return True
        self.value = value
        self.trial.report(value, epoch)
        self.pruned = self.trial.should_prune()
        self.stopped = not self.pruned and self.should_stop()
        return self.pruned or self.stopped

    def finish(self) -> float:
        """The trial's value, or the exception that says why it ended early."""
        if self.diverged:
            raise TrialDiverged(self.diverged)
        if self.pruned:
            raise optuna.TrialPruned(f"pruned at epoch {self.record.epochs_run}")
        if self.stopped:
            raise TrialStopped(f"stopped at epoch {self.record.epochs_run}")
        assert self.value is not None
        return self.value
