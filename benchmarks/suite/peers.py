"""What users do instead of lrsearch, written as they would write it, over the same space.

Every searching peer samples the same strategy families and parameter ranges as the lrsearch
study (`Strategy.space` of the study's run) and builds the same Keras schedules and callbacks
from them, with the same budget (N trials x E epochs):

- Keras Tuner RandomSearch (N trials) and Hyperband (max_epochs=E, stopped at the budget),
  objective `val_loss` (Keras Tuner scores a trial by its best epoch, its default);
- hand-written Optuna: TPE with a MedianPruner or a HyperbandPruner, reporting val_loss every
  epoch and returning the final one (the Optuna Keras example's shape).

Peers re-initialise their model every trial from the global random state, seeded once per
search, as their users' scripts do.
"""

from __future__ import annotations

import contextlib
import gc
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna

from search.data import Dataset
from search.space import repair, run_shape
from search.spec import StudySpec
from search.strategies import RunShape, get_strategy

from .retrain import STEPS_PER_EXECUTION

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial drowns the log
KT_RANDOM = "Keras Tuner RandomSearch"
KT_HYPERBAND = "Keras Tuner Hyperband"
OPTUNA_MEDIAN = "Optuna TPE + MedianPruner"
OPTUNA_HYPERBAND = "Optuna TPE + HyperbandPruner"
SEARCHING_PEERS = (KT_RANDOM, KT_HYPERBAND, OPTUNA_MEDIAN, OPTUNA_HYPERBAND)


@dataclass
class SearchResult:
    """One contender's search: its trials (epochs, final value) in order and its choice."""

    contender: str
    epochs_spent: int = 0
    trials: list[tuple[int, float | None]] = field(default_factory=list)
    export: dict[str, Any] | None = None
    reported_best: float | None = None
    wall_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)  # lrsearch: range and trials, for dev


def export_of(spec: StudySpec, strategy_id: str, params: dict[str, Any], run: RunShape) -> Any:
    """The export lrsearch would give for these parameters (the peers' choice, retrainable)."""
    from search.training.keras_export import optimizer_config

    opt = optimizer_config(spec.task.optimizer, spec.task.momentum)
    return get_strategy(strategy_id).export(params, run, "val_loss", opt).as_dict()


def _fit_trial(
    spec: StudySpec,
    data: Dataset,
    export: dict[str, Any],
    epochs: int,
    initial_epoch: int = 0,
    model: Any = None,
    extra: list[Any] | None = None,
) -> Any:
    import tensorflow as tf

    from search.training.keras_export import apply
    from search.training.models import build_model, loss_and_metrics

    optimizer, callbacks = apply(export)
    if model is None:
        model = build_model(spec.task.model, data, seed=None)
        loss, metrics = loss_and_metrics(data, model)
        model.compile(
            optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=STEPS_PER_EXECUTION
        )
    train = (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(len(data.x_train))
        .batch(spec.task.batch_size)
    )
    return model.fit(
        train,
        validation_data=(data.x_val, data.y_val),
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=[*callbacks, *(extra or [])],
        verbose=0,
    )


def _final(history: Any) -> float | None:
    values = history.history.get("val_loss") or []
    return float(values[-1]) if values and math.isfinite(values[-1]) else None


# --- hand-written Optuna ----------------------------------------------------------------------


def optuna_search(name: str, spec: StudySpec, data: Dataset, n_trials: int, seed: int) -> Any:
    """TPE over the study's space, pruning with the median or Hyperband rule."""
    import keras

    keras.utils.set_random_seed(seed)
    run = run_shape(spec, len(data.x_train))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
        if name == OPTUNA_MEDIAN
        else optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.task.epochs)
    )
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    result = SearchResult(name)

    def objective(trial: optuna.Trial) -> float:
        strategy_id = trial.suggest_categorical("strategy", list(spec.strategies))
        params = {
            p.name: _optuna_param(trial, f"{strategy_id}.{p.name}", p)
            for p in get_strategy(strategy_id).space(run, dict(spec.ranges))
        }
        params = repair(strategy_id, params, run)
        trial.set_user_attr("choice", [strategy_id, params])
        export = export_of(spec, strategy_id, params, run)
        history = _fit_trial(spec, data, export, spec.task.epochs, extra=[_Reporter(trial)])
        epochs = len(history.history.get("loss", []))
        value = _final(history)
        pruned = epochs < spec.task.epochs and value is not None
        result.trials.append((epochs, None if pruned else value))
        if pruned:
            raise optuna.TrialPruned()
        if value is None:
            raise ValueError("diverged")
        return value

    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, catch=(ValueError,))
    result.wall_s = time.perf_counter() - started
    result.epochs_spent = sum(e for e, _ in result.trials)
    best = study.best_trial
    strategy_id, params = best.user_attrs["choice"]
    result.export = export_of(spec, strategy_id, params, run)
    result.reported_best = float(best.value) if best.value is not None else None
    return result


def _optuna_param(trial: optuna.Trial, name: str, p: Any) -> Any:
    if p.kind == "bool":
        return trial.suggest_categorical(name, [False, True])
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(max(p.high, p.low)), log=p.log and p.low > 0)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


class _Reporter:
    """Reports val_loss each epoch and stops the fit when Optuna prunes."""

    def __new__(cls, trial: optuna.Trial) -> Any:
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                value = float((logs or {}).get("val_loss", math.nan))
                if not math.isfinite(value):
                    self.model.stop_training = True
                    return
                trial.report(value, epoch)
                if trial.should_prune():
                    self.model.stop_training = True

        return Callback()


# --- Keras Tuner ------------------------------------------------------------------------------


def keras_tuner_search(
    name: str, spec: StudySpec, data: Dataset, n_trials: int, seed: int
) -> SearchResult:
    """RandomSearch (n_trials) or Hyperband (until the epoch budget is spent), in a tmp dir."""
    import keras
    import keras_tuner as kt

    keras.utils.set_random_seed(seed)
    run = run_shape(spec, len(data.x_train))
    budget = n_trials * spec.task.epochs
    result = SearchResult(name)
    hypermodel = _hypermodel(spec, data, run, result)
    with tempfile.TemporaryDirectory(prefix="kt-") as tmp:
        common = {
            "objective": "val_loss",
            "seed": seed,
            "directory": tmp,
            "project_name": "lr",
            "overwrite": True,
        }
        started = time.perf_counter()
        if name == KT_RANDOM:
            tuner: Any = _no_tensorboard(kt.RandomSearch)(hypermodel, max_trials=n_trials, **common)
        else:
            tuner = _no_tensorboard(kt.Hyperband)(
                hypermodel,
                max_epochs=spec.task.epochs,
                factor=3,
                hyperband_iterations=1000,
                **common,
            )
            _stop_at_budget(tuner, lambda: sum(e for e, _ in result.trials) >= budget)
        with _old_objects_frozen():
            tuner.search(epochs=spec.task.epochs, verbose=0)
        result.wall_s = time.perf_counter() - started
        best_hp = tuner.get_best_hyperparameters(1)[0]
        result.reported_best = float(tuner.oracle.get_best_trials(1)[0].score)
    strategy_id, params = _choice(best_hp, spec, run)
    result.export = export_of(spec, strategy_id, params, run)
    result.epochs_spent = sum(e for e, _ in result.trials)
    return result


@contextlib.contextmanager
def _old_objects_frozen() -> Iterator[None]:
    """Keras Tuner runs a full garbage collection twice per trial (`clear_session` and its
    own `gc.collect`), each walking every object of the process: 0.4 s a collection after
    TensorFlow's import, more as a suite process ages (a Hyperband search of short trials on
    wine-mlp: 136 s -> 110 s in a fresh process under the profiler, 281 s -> 151 s after the
    baselines in one suite process).
    Objects older than the search are frozen out of those walks (`gc.freeze`); the tuner's
    own garbage is still collected, and nothing it computes changes."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _choice(hp: Any, spec: StudySpec, run: RunShape) -> tuple[str, dict[str, Any]]:
    strategy_id = hp.get("strategy")
    params = {
        p.name: hp.get(f"{strategy_id}.{p.name}")
        for p in get_strategy(strategy_id).space(run, dict(spec.ranges))
    }
    return strategy_id, repair(strategy_id, params, run)


def _hypermodel(spec: StudySpec, data: Dataset, run: RunShape, result: SearchResult) -> Any:
    import keras_tuner as kt

    from search.training.keras_export import apply
    from search.training.models import build_model, loss_and_metrics

    class LrHyperModel(kt.HyperModel):
        def build(self, hp: Any) -> Any:
            strategy_id = hp.Choice("strategy", list(spec.strategies))
            for sid in spec.strategies:
                with hp.conditional_scope("strategy", [sid]):
                    for p in get_strategy(sid).space(run, dict(spec.ranges)):
                        _kt_param(hp, f"{sid}.{p.name}", p)
            strategy_id, params = _choice(hp, spec, run)
            self.export = export_of(spec, strategy_id, params, run)
            optimizer, _ = apply(self.export)
            model = build_model(spec.task.model, data, seed=None)
            loss, metrics = loss_and_metrics(data, model)
            model.compile(
                optimizer=optimizer,
                loss=loss,
                metrics=metrics,
                steps_per_execution=STEPS_PER_EXECUTION,
            )
            return model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            history = _fit_trial(
                spec,
                data,
                self.export,
                kwargs["epochs"],
                kwargs.get("initial_epoch", 0),
                model,
                list(kwargs.get("callbacks", [])),
            )
            result.trials.append((len(history.history.get("loss", [])), _final(history)))
            return history

    return LrHyperModel()


def _kt_param(hp: Any, name: str, p: Any) -> Any:
    if p.kind == "bool":
        return hp.Boolean(name)
    if p.kind == "int":
        log = p.log and p.low > 0 and p.high > p.low
        return hp.Int(
            name, int(p.low), int(max(p.high, p.low)), sampling="log" if log else "linear"
        )
    return hp.Float(name, p.low, p.high, sampling="log" if p.log else "linear")


def _no_tensorboard(cls: type) -> type:
    """The tuner without its TensorBoard hook (it imports tensorboard, not installed)."""
    return type(cls.__name__, (cls,), {"_configure_tensorboard_dir": lambda *_a, **_k: None})


def _stop_at_budget(tuner: Any, spent: Callable[[], bool]) -> None:
    """Make the oracle answer STOPPED once the epoch budget is spent."""
    from keras_tuner.engine import trial as kt_trial

    create = tuner.oracle.create_trial

    def create_trial(tuner_id: str) -> Any:
        if spent():
            return kt_trial.Trial(tuner.oracle.get_space(), status=kt_trial.TrialStatus.STOPPED)
        return create(tuner_id)

    tuner.oracle.create_trial = create_trial


def search(name: str, spec: StudySpec, data: Dataset, n_trials: int, seed: int) -> SearchResult:
    """Run one searching peer."""
    if name in (KT_RANDOM, KT_HYPERBAND):
        return keras_tuner_search(name, spec, data, n_trials, seed)
    return optuna_search(name, spec, data, n_trials, seed)
