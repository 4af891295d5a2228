"""Train one Optuna trial: sample a strategy, fit, report every epoch, prune, record the LR applied.

Compiled models are reused across trials of the same model, data and optimizer (see
`search.training.lr_graph`): weights go back to their seeded initial values and the optimizer
state to zero, so a reused model starts exactly where a fresh one with the same seed would. A
reused model trains through `search.training.epoch_loop` (one graph call per epoch, the batches
`model.fit` would see); a fresh one (`reuse=False`, the naive path kept for comparison)
through `fit`.

With a checkpoint slot (the worker gives one), finished epochs are saved (as often as the slot
allows, and always on a stop), and a retried trial resumes from its dead attempt's last save:
weights, optimizer variables (including the step count the schedules read), the base rate
and ReduceLROnPlateau's counters.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import optuna

from search.checkpoints import TrialCheckpoint, TrialSlot
from search.data import Dataset
from search.errors import ModelError, TrialDiverged, TrialStopped
from search.space import run_shape, suggest
from search.spec import StudySpec
from search.store.trial_writes import batched_params, set_user_attrs
from search.strategies import Params, RunShape, get_strategy
from search.training.report_writer import Persist, ReportWriter

StopCheck = Callable[[], bool]
T = TypeVar("T")

_CALLBACK_STATE = ("wait", "cooldown_counter", "best")  # ReduceLROnPlateau's counters


def _direct(fn: Callable[[], T]) -> T:
    return fn()


@dataclass
class TrialRecord:
    """What one trial leaves behind, stored as Optuna user attributes."""

    strategy: str
    params: Params
    lr: list[float] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    export: dict[str, Any] = field(default_factory=dict)
    resumed_from_epoch: int | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.lr)

    def save(self, trial: optuna.Trial, persist: Persist[None] = _direct) -> None:
        attrs: dict[str, Any] = {
            "strategy": self.strategy,
            "params": self.params,
            "lr": self.lr,
            "history": self.history,
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 4),
            "export": self.export,
        }
        if self.resumed_from_epoch is not None:
            attrs["resumed_from_epoch"] = self.resumed_from_epoch
        persist(functools.partial(set_user_attrs, trial, attrs))


@dataclass
class _Compiled:
    model: Any
    schedule: Any
    loop: Any  # search.training.epoch_loop.EpochLoop, which also restarts the model for a new trial


@dataclass
class _Prepared:
    """One fit ready to run, plus what a checkpoint saves and restores."""

    model: Any
    callbacks: list[Any]
    train_data: Any = None  # model.fit's inputs (fresh models only)
    val_data: Any = None
    base_lr: Any | None = None  # the schedule's base-rate variable (reused graphs only)
    loop: Any | None = None  # an EpochLoop (reused graphs only); else model.fit

    def lr_callbacks(self) -> list[Any]:
        """The stock LR callbacks (unwrapped from DrivenCallback on reused graphs)."""
        return [getattr(cb, "inner", cb) for cb in self.callbacks]

    def snapshot(self, epoch: int, record: TrialRecord) -> TrialCheckpoint:
        """The state after `epoch` finished epochs (cheap: arrays copied to host once)."""
        optimizer = self.model.optimizer
        return TrialCheckpoint(
            epoch=epoch,
            weights=self.model.get_weights(),
            optimizer=[v.numpy() for v in optimizer.variables],
            base_lr=None if self.base_lr is None else float(self.base_lr.numpy()),
            callbacks=[_callback_state(cb) for cb in self.lr_callbacks()],
            lr=list(record.lr),
            history={k: list(v) for k, v in record.history.items()},
        )

    def restore(self, checkpoint: TrialCheckpoint) -> bool:
        """Load weights, optimizer variables and base rate; False (nothing changed) if the
        checkpoint does not fit this model."""
        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        if not (
            _same_shapes(self.model.get_weights(), checkpoint.weights)
            and _same_shapes([v.numpy() for v in optimizer.variables], checkpoint.optimizer)
        ):
            return False
        self.model.set_weights(checkpoint.weights)
        for var, value in zip(optimizer.variables, checkpoint.optimizer, strict=True):
            var.assign(value)
        if self.base_lr is not None and checkpoint.base_lr is not None:
            self.base_lr.assign(checkpoint.base_lr)
        return True


class Trainer:
    """Runs trials; keeps a few compiled models so a study is not N cold starts."""

    def __init__(
        self, *, reuse: bool = True, cache_size: int = 2, persist: Persist[Any] = _direct
    ) -> None:
        self.reuse = reuse
        self.cache_size = cache_size
        self.persist = persist
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
        checkpoint: TrialSlot | None = None,
    ) -> float:
        """Train one trial; raise TrialPruned, TrialDiverged or TrialStopped when it ends early.

        With `checkpoint`, finished epochs are saved there (see `TrialSlot.save_if_due`) and an
        existing checkpoint is resumed from (the trial's `resumed_from_epoch` user attr says where).
        """
        run = run_shape(spec, len(dataset.x_train))
        with batched_params(trial):  # one storage write for all of them
            strategy_id, params = suggest(trial, spec, run)  # honours enqueued/retried params
        record = TrialRecord(strategy_id, params)
        reports = ReportWriter(trial, self.persist)
        started = time.perf_counter()
        try:
            return self._fit(trial, spec, dataset, run, record, should_stop, checkpoint, reports)
        except TrialDiverged as exc:
            self.persist(functools.partial(trial.set_user_attr, "fail_reason", str(exc)))
            raise
        finally:
            record.seconds = time.perf_counter() - started
            try:
                reports.flush()  # every epoch stored before the attributes and the tell
            finally:
                reports.close()
            record.save(trial, self.persist)

    def _fit(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        dataset: Dataset,
        run: RunShape,
        record: TrialRecord,
        should_stop: StopCheck | None,
        checkpoint: TrialSlot | None,
        reports: ReportWriter,
    ) -> float:
        from search.training.keras_export import optimizer_config

        strategy = get_strategy(record.strategy)
        opt_cfg = optimizer_config(spec.task.optimizer, spec.task.momentum)
        record.export = strategy.export(
            record.params, run, spec.objective.metric, opt_cfg
        ).as_dict()
        record.export.update(strategy=record.strategy, params=record.params)
        prepared = self._prepare(spec, dataset, record.export)
        monitor = _EpochMonitor(trial, spec, record, should_stop, self.persist, reports.report)
        resumed = self._resume(prepared, checkpoint, record, monitor)
        if checkpoint is not None:
            monitor.on_saved_epoch = lambda epoch, stopping: checkpoint.save_if_due(
                lambda: prepared.snapshot(epoch, record), force=stopping
            )
        if resumed is not None and resumed.epoch >= spec.task.epochs:
            return monitor.finish()  # the dead attempt trained every epoch; only the tell was lost
        loop = prepared.loop
        callbacks = [
            *prepared.callbacks,
            _restore_callbacks(prepared, resumed),
            monitor.keras_callback(None if loop is None else lambda: loop.epoch_rate),
        ]
        initial_epoch = 0 if resumed is None else resumed.epoch
        if loop is not None:
            loop.fit(
                epochs=spec.task.epochs,
                seed=spec.seed or 0,
                callbacks=callbacks,
                initial_epoch=initial_epoch,
            )
        else:
            prepared.model.fit(
                prepared.train_data,
                validation_data=prepared.val_data,
                initial_epoch=initial_epoch,
                epochs=spec.task.epochs,
                verbose=0,
                shuffle=False,
                callbacks=callbacks,
            )
        return monitor.finish()

    def _resume(
        self,
        prepared: _Prepared,
        checkpoint: TrialSlot | None,
        record: TrialRecord,
        monitor: _EpochMonitor,
    ) -> TrialCheckpoint | None:
        """Continue from the slot's checkpoint when there is one that fits this model."""
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is None or saved.epoch < 1 or len(saved.lr) != saved.epoch:
            return None
        if not prepared.restore(saved):
            return None
        record.lr, record.history = list(saved.lr), {k: list(v) for k, v in saved.history.items()}
        record.resumed_from_epoch = saved.epoch
        monitor.replay(saved.epoch)
        return saved

    def _prepare(self, spec: StudySpec, dataset: Dataset, export: dict[str, Any]) -> _Prepared:
        from search.training.keras_export import build_schedule_and_callbacks

        if not self.reuse:
            return self._fresh(spec, dataset, export)
        compiled = self._compiled(spec, dataset)
        compiled.loop.restart()
        compiled.schedule.load(export)
        from search.training.lr_graph import DrivenCallback

        _, stock_callbacks = build_schedule_and_callbacks(export)
        callbacks = [DrivenCallback(cb, compiled.schedule) for cb in stock_callbacks]
        return _Prepared(
            compiled.model, callbacks, base_lr=compiled.schedule.base_lr, loop=compiled.loop
        )

    def _fresh(self, spec: StudySpec, dataset: Dataset, export: dict[str, Any]) -> _Prepared:
        """Build, compile and fit from scratch: the naive path, kept for comparison."""
        import keras

        from search.training.keras_export import build_schedule_and_callbacks, make_optimizer
        from search.training.models import build_model, loss_and_metrics

        keras.backend.clear_session()
        model = build_model(spec.task.model, dataset, spec.seed)
        learning_rate, callbacks = build_schedule_and_callbacks(export)
        loss, metrics = loss_and_metrics(dataset, model)
        model.compile(
            optimizer=make_optimizer(export["optimizer"], learning_rate), loss=loss, metrics=metrics
        )
        val_data = (dataset.x_val, dataset.y_val)
        return _Prepared(model, callbacks, _train_data(dataset, spec), val_data)

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
    from search.training.epoch_loop import EpochLoop
    from search.training.keras_export import make_optimizer, optimizer_config
    from search.training.lr_graph import SwitchSchedule
    from search.training.models import build_model, loss_and_metrics

    model = build_model(spec.task.model, dataset, spec.seed)
    schedule = SwitchSchedule()
    optimizer = make_optimizer(optimizer_config(spec.task.optimizer, spec.task.momentum), schedule)
    loss, metrics = loss_and_metrics(dataset, model)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    optimizer.build(model.trainable_variables)
    model.evaluate(dataset.x_val[:1], dataset.y_val[:1], verbose=0)  # builds the metrics
    loop = EpochLoop(
        model,
        (dataset.x_train, dataset.y_train),
        (dataset.x_val, dataset.y_val),
        spec.task.batch_size,
        max(spec.task.batch_size, 1024),
    )
    return _Compiled(model, schedule, loop)


def _callback_state(callback: Any) -> dict[str, float]:
    """The counters of an LR callback that a resumed fit must continue from."""
    state: dict[str, float] = {}
    for name in _CALLBACK_STATE:
        value = getattr(callback, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            state[name] = float(value)
    return state


def _same_shapes(current: list[Any], saved: list[Any]) -> bool:
    return len(current) == len(saved) and all(
        tuple(a.shape) == tuple(b.shape) for a, b in zip(current, saved, strict=True)
    )


def _restore_callbacks(prepared: _Prepared, saved: TrialCheckpoint | None) -> Any:
    """A Keras callback, placed after the LR callbacks, that sets their saved counters once
    their own on_train_begin has reset them (ReduceLROnPlateau's wait, cooldown, best)."""
    import keras

    def restore(logs: dict[str, Any] | None = None) -> None:
        if saved is None:
            return
        for callback, state in zip(prepared.lr_callbacks(), saved.callbacks, strict=False):
            for name, value in state.items():
                current = getattr(callback, name, None)
                setattr(callback, name, int(value) if isinstance(current, int) else value)

    return keras.callbacks.LambdaCallback(on_train_begin=restore)


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
        persist: Persist[Any] = _direct,
        report: Callable[[float, int], None] | None = None,
    ) -> None:
        self.trial, self.spec, self.record = trial, spec, record
        self.report = report or trial.report
        self.should_stop = should_stop or (lambda: False)
        self.persist = persist
        self.pruned = self.stopped = False
        self.diverged: str | None = None
        self.value: float | None = None
        self.on_saved_epoch: Callable[[int, bool], object] | None = None

    def replay(self, epochs: int) -> None:
        """Report a resumed trial's earlier epochs again (pruners compare whole curves)."""
        values = self.record.history.get(self.spec.objective.metric, [])
        for epoch, value in enumerate(values[:epochs]):
            if math.isfinite(value):
                self.report(value, epoch)
                self.value = value

    def keras_callback(self, epoch_rate: Callable[[], float] | None = None) -> Any:
        """The Keras callback that records each epoch's rate and ends epochs. `epoch_rate`
        gives the rate the epoch started with once it ended (the epoch loop reads it in its
        graph); without it the optimizer's rate is read when the epoch begins."""
        import keras

        monitor = self

        class _Hook(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if epoch_rate is None:
                    lr = self.model.optimizer.learning_rate
                    monitor.record.lr.append(float(keras.ops.convert_to_numpy(lr)))

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if epoch_rate is not None:
                    monitor.record.lr.append(epoch_rate())
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
        self.report(value, epoch)
        self.pruned = bool(self.persist(self.trial.should_prune))
        self.stopped = not self.pruned and self.should_stop()
        if not self.pruned and self.on_saved_epoch is not None:
            self.on_saved_epoch(epoch + 1, self.stopped)  # a stop always saves: the retry
        return self.pruned or self.stopped  # resumes from here

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
