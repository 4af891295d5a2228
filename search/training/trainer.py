"""Train one Optuna trial: sample a strategy, fit, report every epoch, prune, record the LR applied.

Compiled models are reused across trials of the same model, data and optimizer (see
`search.training.lr_graph`): weights go back to their seeded initial values and the optimizer
state to zero, so a reused model starts exactly where a fresh one with the same seed would. A
reused model trains through `search.training.epoch_loop` (one graph call per epoch, the batches
`model.fit` would see); a fresh one (`reuse=False`, the naive path kept for comparison)
through `fit`.

With a checkpoint handle (the worker gives one), finished epochs are saved (as often as the
handle allows, and always on a stop), and a retried trial resumes from its dead attempt's last
save (`search.training.prepared`). What the trial leaves behind is one `TrialOutcome`.
"""

from __future__ import annotations

import functools
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from search.checkpoints import CheckpointHandle, TrialCheckpoint
from search.data import Dataset
from search.errors import TrialDiverged
from search.lr_range import RangeResult, plan_for
from search.outcome import FailureKind, TrialOutcome, failure_attrs
from search.space import run_shape, suggest
from search.spec import StudySpec
from search.store.trial_writes import batched_params, set_user_attrs
from search.strategies import RunShape
from search.training.monitor import EpochMonitor, StopCheck, direct
from search.training.prepared import PreparedFit
from search.training.report_writer import Persist, ReportWriter
from search.training.trial_start import Begun, replicate_seed, trial_export

if TYPE_CHECKING:
    from search.training.streamed import StreamedTask


@dataclass
class _Compiled:
    model: Any
    schedule: Any
    loop: Any  # search.training.epoch_loop.EpochLoop, which also restarts the model for a new trial
    seed: int | None = None  # the seed its initial weights were built with
    models_dir: Path | None = None  # where keras_file models are
    _weights: dict[int, list[Any]] = field(default_factory=dict)

    def initial_weights(self, spec: StudySpec, dataset: Dataset, seed: int) -> list[Any] | None:
        """The initial weights of a model built with `seed` (None: the compiled model's own);
        built once per seed, without compiling (replicates start from new weights)."""
        if seed == (self.seed or 0):
            return None
        if seed not in self._weights:
            from search.training.models import build_model

            model = build_model(spec.task.model, dataset, seed, self.models_dir)
            self._weights[seed] = model.get_weights()
        return self._weights[seed]


class Trainer:
    """Runs trials; keeps a few compiled models so a study is not N cold starts."""

    def __init__(
        self,
        *,
        reuse: bool = True,
        cache_size: int = 2,
        persist: Persist[Any] = direct,
        models_dir: Path | None = None,
    ) -> None:
        self.reuse = reuse
        self.cache_size = cache_size
        self.persist = persist
        self.models_dir = models_dir  # where `keras_file` models are (data_dir/models)
        self._cache: OrderedDict[str, _Compiled] = OrderedDict()
        self._streams: Any = None  # search.training.streamed.CompiledStreams, made on first use
        self.populations: Any = None  # search.training.population's loops, made on first use

    def objective(
        self,
        spec: StudySpec,
        dataset: Dataset | StreamedTask,
        should_stop: StopCheck | None = None,
    ) -> Callable[[optuna.Trial], float]:
        """An Optuna objective for `study.optimize` (in-memory studies, tests, benchmarks)."""
        return lambda trial: self.run(trial, spec, dataset, should_stop)

    def run(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        dataset: Dataset | StreamedTask,
        should_stop: StopCheck | None = None,
        checkpoint: CheckpointHandle | None = None,
    ) -> float:
        """Train one trial; raise TrialPruned, TrialDiverged or TrialStopped when it ends early.

        `dataset` is arrays (trained through the epoch loop) or a `StreamedTask` (pipelines
        through `model.fit`). With `checkpoint`, finished epochs are saved there (see
        `save_if_due`) and an existing checkpoint is resumed from (the outcome's
        `resumed_from_epoch` says where).
        """
        begun = self.begin_trial(trial, spec, dataset)
        run, outcome, reports = begun.run, begun.outcome, begun.reports
        fit = functools.partial(
            self._fit, trial, spec, dataset, run, outcome, should_stop, checkpoint, reports
        )
        return self.end_trial(trial, begun, fit)

    def begin_trial(self, trial: optuna.Trial, spec: StudySpec, dataset: Any) -> Begun:
        """A trial's strategy and parameters (suggested or enqueued) and its empty record."""
        run = workload_run(spec, dataset)
        with batched_params(trial):  # one storage write for all of them
            strategy_id, params = suggest(trial, spec, run)  # honours enqueued/retried params
        outcome = TrialOutcome(strategy_id, params, seed=replicate_seed(trial))
        return Begun(run, outcome, ReportWriter(trial, self.persist), time.perf_counter())

    def end_trial(self, trial: optuna.Trial, begun: Begun, fit: Callable[[], float]) -> float:
        """`fit()`'s value; a divergence recorded as such; the record stored either way."""
        outcome, reports = begun.outcome, begun.reports
        try:
            return fit()
        except TrialDiverged as exc:
            outcome.fail_kind, outcome.fail_reason = FailureKind.DIVERGED, str(exc)
            attrs = failure_attrs(FailureKind.DIVERGED, str(exc))
            self.persist(functools.partial(set_user_attrs, trial, attrs))
            raise
        finally:
            outcome.seconds = round(time.perf_counter() - begun.started, 4)
            outcome.epochs_run = len(outcome.lr)
            try:
                reports.flush()  # every epoch stored before the attributes and the tell
            finally:
                reports.close()
            self.persist(functools.partial(set_user_attrs, trial, outcome.to_attrs()))

    def run_many(
        self,
        trials: Sequence[optuna.Trial],
        spec: StudySpec,
        dataset: Dataset | StreamedTask,
        should_stop: StopCheck | None = None,
        checkpoints: Sequence[CheckpointHandle | None] | None = None,
    ) -> list[float | BaseException]:
        """Train several trials of one study (a worker's population); per member, its value
        or the exception `run` raises for it (TrialPruned, TrialDiverged, TrialStopped...).

        Fused (`search.training.population`: one graph, stacked weights, each member its
        own rate, optimizer state, monitor and checkpoint) when the model is a built-in
        mlp/cnn without dropout on in-memory arrays and the optimizer is one the stacked
        update reproduces; members that resume from a checkpoint or hold their own seed (a
        replicate's), and everything else, train one after another through `run`."""
        from search.training.population import run_population

        handles = list(checkpoints) if checkpoints is not None else [None] * len(trials)
        return run_population(self, list(trials), spec, dataset, should_stop, handles)

    def solo_start(self, spec: StudySpec, dataset: Dataset, seed: int) -> tuple[Any, list[Any]]:
        """The compiled model a solo trial of this study trains, and the initial weights a
        solo trial with `seed` starts from."""
        compiled = self._compiled(spec, dataset)
        compiled.loop.restart(compiled.initial_weights(spec, dataset, seed))
        return compiled.model, compiled.model.get_weights()

    def _fit(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        dataset: Dataset | StreamedTask,
        run: RunShape,
        outcome: TrialOutcome,
        should_stop: StopCheck | None,
        checkpoint: CheckpointHandle | None,
        reports: ReportWriter,
    ) -> float:
        seed = trial_export(spec, dataset, run, outcome)
        prepared = self._prepare(spec, dataset, outcome.export, seed)
        monitor = EpochMonitor(trial, spec, outcome, should_stop, self.persist, reports.report)
        resumed = self._resume(prepared, checkpoint, outcome, monitor)
        if checkpoint is not None:
            monitor.on_saved_epoch = lambda epoch, stopping: checkpoint.save_if_due(
                lambda: prepared.snapshot(epoch, outcome), force=stopping
            )
        if resumed is not None and resumed.epoch >= spec.task.epochs:
            return monitor.finish()  # the dead attempt trained every epoch; only the tell was lost
        loop = prepared.loop
        callbacks = [
            *prepared.callbacks,
            prepared.restore_callbacks(resumed),
            monitor.keras_callback(None if loop is None else lambda: loop.epoch_rate),
        ]
        initial_epoch = 0 if resumed is None else resumed.epoch
        if loop is not None:
            loop.fit(
                epochs=spec.task.epochs,
                seed=seed,
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
                **prepared.fit_kwargs,
            )
        return monitor.finish()

    def _resume(
        self,
        prepared: PreparedFit,
        checkpoint: CheckpointHandle | None,
        outcome: TrialOutcome,
        monitor: EpochMonitor,
    ) -> TrialCheckpoint | None:
        """Continue from the handle's checkpoint when there is one that fits this model."""
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is None or saved.epoch < 1 or len(saved.lr) != saved.epoch:
            return None
        if not prepared.restore(saved):
            return None
        outcome.lr = list(saved.lr)
        outcome.history = {k: list(v) for k, v in saved.history.items()}
        outcome.resumed_from_epoch = saved.epoch
        monitor.replay(saved.epoch)
        return saved

    def _prepare(
        self, spec: StudySpec, dataset: Dataset | StreamedTask, export: dict[str, Any], seed: int
    ) -> PreparedFit:
        from search.training.keras_export import build_schedule_and_callbacks

        if not isinstance(dataset, Dataset):
            from search.training.streamed import prepare_streamed

            return prepare_streamed(spec, dataset, export, seed, self._streams_cache())
        if not self.reuse:
            return self._fresh(spec, dataset, export, seed)
        compiled = self._compiled(spec, dataset)
        compiled.loop.restart(compiled.initial_weights(spec, dataset, seed))
        compiled.schedule.load(export)
        from search.training.lr_graph import DrivenCallback

        _, stock_callbacks = build_schedule_and_callbacks(export, for_trial=True)
        callbacks = [DrivenCallback(cb, compiled.schedule) for cb in stock_callbacks]
        return PreparedFit(
            compiled.model, callbacks, base_lr=compiled.schedule.base_lr, loop=compiled.loop
        )

    def _fresh(
        self, spec: StudySpec, dataset: Dataset, export: dict[str, Any], seed: int
    ) -> PreparedFit:
        """Build, compile and fit from scratch: the naive path, kept for comparison."""
        import keras

        from search.training.keras_export import build_schedule_and_callbacks, make_optimizer
        from search.training.models import build_model, loss_and_metrics

        keras.backend.clear_session()
        model = build_model(spec.task.model, dataset, seed, self.models_dir)
        learning_rate, callbacks = build_schedule_and_callbacks(export, for_trial=True)
        loss, metrics = loss_and_metrics(dataset, model)
        model.compile(
            optimizer=make_optimizer(export["optimizer"], learning_rate), loss=loss, metrics=metrics
        )
        val_data = (dataset.x_val, dataset.y_val)
        return PreparedFit(model, callbacks, _train_data(dataset, spec, seed), val_data)

    def range_test(self, spec: StudySpec, dataset: Dataset | StreamedTask) -> RangeResult | None:
        """The learning-rate range test on this study's compiled model (None: the run is too
        short to afford one); the model is back at its initial state afterwards."""
        from search.training.range_test import run_range_test

        plan = plan_for(workload_run(spec, dataset).total_steps)
        if plan is None:
            return None
        if not isinstance(dataset, Dataset):
            reused = self._streams_cache().get(spec, dataset)
            return run_range_test(reused, reused.schedule, plan, int(spec.seed or 0))
        compiled = self._compiled(spec, dataset)
        return run_range_test(compiled.loop, compiled.schedule, plan, int(spec.seed or 0))

    def _streams_cache(self) -> Any:
        """Compiled models of streamed tasks (None: built per trial, `reuse=False`)."""
        from search.training.streamed import CompiledStreams

        if self.reuse and self._streams is None:
            self._streams = CompiledStreams(self.cache_size)
        return self._streams

    def _compiled(self, spec: StudySpec, dataset: Dataset) -> _Compiled:
        key = json.dumps(
            [dataset.fingerprint(), spec.task.model_dump(mode="json"), spec.seed], sort_keys=True
        )
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        compiled = _compile(spec, dataset, self.models_dir)
        self._cache[key] = compiled
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return compiled


def workload_run(spec: StudySpec, dataset: Dataset | StreamedTask) -> RunShape:
    """The run every trial of this study makes: epochs x batches per epoch."""
    if isinstance(dataset, Dataset):
        return run_shape(spec, len(dataset.x_train))
    return RunShape(spec.task.epochs, dataset.steps_per_epoch)


def _compile(spec: StudySpec, dataset: Dataset, models_dir: Path | None) -> _Compiled:
    from search.training.epoch_loop import EpochLoop
    from search.training.keras_export import make_optimizer, optimizer_config
    from search.training.lr_graph import SwitchSchedule
    from search.training.models import build_model, loss_and_metrics

    model = build_model(spec.task.model, dataset, spec.seed, models_dir)
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
    return _Compiled(model, schedule, loop, spec.seed, models_dir)


def _train_data(dataset: Dataset, spec: StudySpec, seed: int) -> Any:
    """Shuffled batches; made per trial so every trial sees the same order for the same seed."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((dataset.x_train, dataset.y_train))
        .shuffle(len(dataset.x_train), seed=seed)
        .batch(spec.task.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
