"""objective.aggregate = best: a trial's value is its best epoch's, its own training is unchanged,
and the export ends a user's plain Keras fit on the best epoch's weights (real Keras, digits)."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest

from search.data import Dataset, load_digits
from search.spec import StudySpec, parse_spec
from search.training.keras_export import apply, build_schedule_and_callbacks
from search.training.models import build_model, loss_and_metrics
from search.training.trainer import Trainer

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)

EPOCHS = 8
#: Rates high enough that digits' val_loss rises again before the last epoch.
RATES = (0.02, 0.05, 0.1)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def spec(aggregate: str) -> StudySpec:
    return parse_spec(
        {
            "strategies": ["constant"],
            "objective": {"metric": "val_loss", "aggregate": aggregate},
            "task": {"epochs": EPOCHS, "model": {"kind": "mlp", "hidden": [64]}},
            "ranges": {"initial_lr": {"low": 1e-3, "high": 0.2, "log": True}},
        }
    )


def study_of(trainer: Trainer, aggregate: str, digits: Dataset) -> optuna.Study:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    for rate in RATES:
        study.enqueue_trial({"strategy": "constant", "constant.initial_lr": rate})
    study.optimize(trainer.objective(spec(aggregate), digits), n_trials=len(RATES))
    return study


@pytest.fixture(scope="module")
def studies(digits: Dataset) -> dict[str, optuna.Study]:
    """The same three trials with each aggregate, on reused compiled graphs."""
    trainer = Trainer()
    return {aggregate: study_of(trainer, aggregate, digits) for aggregate in ("best", "last")}


def test_best_reports_each_trials_best_epoch_and_trains_as_last_does(
    studies: dict[str, optuna.Study],
) -> None:
    best, last = studies["best"].trials, studies["last"].trials
    overshot = 0
    for b, lst in zip(best, last, strict=True):
        curve = b.user_attrs["history"]["val_loss"]
        assert b.value == pytest.approx(min(curve), rel=1e-7)
        assert lst.value == pytest.approx(lst.user_attrs["history"]["val_loss"][-1], rel=1e-7)
        assert curve == pytest.approx(lst.user_attrs["history"]["val_loss"], rel=1e-5)
        assert b.intermediate_values == pytest.approx(dict(enumerate(curve)), rel=1e-7)
        overshot += min(curve) < curve[-1]
        names = [cb["class_name"] for cb in b.user_attrs["export"]["callbacks"]]
        assert names == ["EarlyStopping"]
        assert lst.user_attrs["export"]["callbacks"] == []
    assert overshot, "no trial's last epoch was worse than its best: the test shows nothing"


def users_fit(export: dict[str, Any], digits: Dataset, callbacks: list[Any]) -> Any:
    """A user's own script: their model, compiled with the export's optimizer, plain fit."""
    optimizer, _ = apply(export)
    model = build_model(spec("best").task.model, digits, 0)
    loss, metrics = loss_and_metrics(digits, model)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    history = model.fit(
        digits.x_train,
        digits.y_train,
        validation_data=(digits.x_val, digits.y_val),
        epochs=EPOCHS,
        batch_size=64,
        verbose=0,
        callbacks=callbacks,
    )
    return model, history.history["val_loss"]


def test_the_exported_callbacks_end_a_plain_fit_on_the_best_weights(
    studies: dict[str, optuna.Study], digits: Dataset
) -> None:
    import keras

    trial = max(studies["best"].trials, key=lambda t: t.params["constant.initial_lr"])
    export = trial.user_attrs["export"]
    _, callbacks = apply(export)
    stopper = [cb for cb in callbacks if isinstance(cb, keras.callbacks.EarlyStopping)]
    assert len(stopper) == 1 and stopper[0].restore_best_weights
    assert stopper[0].patience == EPOCHS and stopper[0].monitor == "val_loss"
    model, curve = users_fit(export, digits, callbacks)
    assert len(curve) == EPOCHS  # it never stops early
    assert min(curve) < curve[-1]  # the rate overshoots, so restoring matters
    restored = model.evaluate(digits.x_val, digits.y_val, verbose=0)[0]
    assert restored == pytest.approx(min(curve), rel=1e-4)
    assert restored < curve[-1]
    _, trial_callbacks = build_schedule_and_callbacks(export, for_trial=True)
    assert trial_callbacks == []  # lrsearch's own trial leaves it out


def test_the_snippet_rebuilds_the_early_stopping(studies: dict[str, optuna.Study]) -> None:
    import keras

    scope: dict[str, Any] = {}
    exec(studies["best"].trials[0].user_attrs["export"]["python"], scope)  # our own snippet
    (stopper,) = scope["callbacks"]
    assert isinstance(stopper, keras.callbacks.EarlyStopping)
    assert stopper.restore_best_weights and stopper.patience == EPOCHS
    assert stopper.start_from_epoch == 0 and np.isclose(stopper.min_delta, 0.0)


@pytest.mark.parametrize("reuse", [True, False], ids=["reused-graph", "fresh-model"])
def test_a_trial_runs_only_the_exports_rate_callbacks(digits: Dataset, reuse: bool) -> None:
    import keras

    from search.strategies import RunShape, get_strategy

    params = {"initial_lr": 0.01, "drop": 0.5, "every": 2}
    export = get_strategy("step").export(params, RunShape(EPOCHS, 23), best_mode="min").as_dict()
    assert [cb["class_name"] for cb in export["callbacks"]] == [
        "LearningRateScheduler",
        "EarlyStopping",
    ]
    prepared = Trainer(reuse=reuse)._prepare(spec("best"), digits, export, 0)
    (only,) = prepared.lr_callbacks()  # what the trial's fit runs and its checkpoint saves
    assert isinstance(only, keras.callbacks.LearningRateScheduler)
