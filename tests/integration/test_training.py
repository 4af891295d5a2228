"""Real Optuna studies (in-memory storage) training real Keras models on digits."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from search.data import Dataset, load_digits
from search.errors import TrialDiverged
from search.spec import parse_spec
from search.strategies import RunShape, get_strategy
from search.training.keras_export import apply
from search.training.trainer import Trainer

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def trainer():
    return Trainer()


def spec_for(strategies: list[str], **kw) -> object:
    return parse_spec({"strategies": strategies, "task": {"epochs": kw.pop("epochs", 4)}, **kw})


def run_fixed(trainer: Trainer, spec, digits, params: dict) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial(params)
    study.optimize(trainer.objective(spec, digits), n_trials=1, catch=(TrialDiverged,))
    return study.trials[0]


def test_a_small_study_completes_and_records_everything(trainer, digits) -> None:
    spec = spec_for(["constant", "exponential", "step", "plateau", "cosine"], epochs=3)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(trainer.objective(spec, digits), n_trials=5)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done
    for t in done:
        assert t.user_attrs["epochs_run"] == 3
        assert len(t.user_attrs["lr"]) == 3
        assert set(t.user_attrs["history"]) >= {"loss", "val_loss", "accuracy", "val_accuracy"}
        assert t.value == pytest.approx(t.user_attrs["history"]["val_loss"][-1])
        assert t.user_attrs["export"]["strategy"] == t.params["strategy"]
        assert t.user_attrs["seconds"] > 0


@pytest.mark.parametrize(
    "strategy_id", ["exponential", "piecewise", "cosine", "step", "polynomial"]
)
def test_recorded_lr_is_what_lr_curve_predicts(trainer, digits, strategy_id: str) -> None:
    spec = spec_for([strategy_id], epochs=4)
    study = optuna.create_study(
        pruner=optuna.pruners.NopPruner(), sampler=optuna.samplers.RandomSampler(seed=3)
    )
    study.optimize(trainer.objective(spec, digits), n_trials=1)
    trial = study.trials[0]
    steps = -(-len(digits.x_train) // spec.task.batch_size)
    curve = get_strategy(strategy_id).lr_curve(trial.user_attrs["params"], RunShape(4, steps))
    assert trial.user_attrs["lr"] == pytest.approx(curve, rel=1e-5)


def test_plateau_reduces_the_rate_as_keras_would(trainer, digits) -> None:
    spec = spec_for(["plateau"], epochs=6)
    params = {
        "strategy": "plateau",
        "plateau.initial_lr": 0.5,
        "plateau.factor": 0.5,
        "plateau.patience": 0,
        "plateau.min_lr": 1e-6,
        "plateau.cooldown": 0,
    }
    trial = run_fixed(trainer, spec, digits, params)
    lr = trial.user_attrs["lr"]
    assert lr[0] == pytest.approx(0.5) and min(lr) < 0.5
    replay = get_strategy("plateau").lr_curve_from_history(
        trial.user_attrs["params"], trial.user_attrs["history"]["val_loss"], maximize=False
    )
    assert lr == pytest.approx(replay, rel=1e-5)


def test_reused_graph_gives_the_same_result_as_a_fresh_model(trainer, digits) -> None:
    spec = spec_for(["exponential"], epochs=3)
    params = {
        "strategy": "exponential",
        "exponential.initial_lr": 0.01,
        "exponential.decay_steps": 30,
        "exponential.decay_rate": 0.5,
        "exponential.staircase": False,
    }
    warm = run_fixed(trainer, spec, digits, params)
    fresh = run_fixed(Trainer(reuse=False), spec, digits, params)
    assert warm.user_attrs["lr"] == pytest.approx(fresh.user_attrs["lr"], rel=1e-6)
    assert warm.value == pytest.approx(fresh.value, rel=1e-3)


def regression_data() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype("float32")
    y = (x @ rng.normal(size=6) * 10).astype("float32")
    return Dataset("linear", x[:200], y[:200], x[200:], y[200:], "regression", None)


def test_a_huge_rate_fails_the_trial_as_diverged(trainer) -> None:
    data = regression_data()
    spec = parse_spec(
        {
            "strategies": ["constant"],
            "objective": {"metric": "val_mae"},
            "ranges": {"initial_lr": {"low": 1e-4, "high": 10, "log": True}},
            "task": {"epochs": 4, "optimizer": "sgd", "batch_size": 20},
        }
    )
    trial = run_fixed(trainer, spec, data, {"strategy": "constant", "constant.initial_lr": 10.0})
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("diverged at epoch")
    healthy = run_fixed(trainer, spec, data, {"strategy": "constant", "constant.initial_lr": 1e-3})
    assert healthy.state == optuna.trial.TrialState.COMPLETE
    assert healthy.user_attrs["epochs_run"] == 4


def test_a_clearly_bad_trial_is_pruned(trainer, digits) -> None:
    spec = spec_for(["constant"], epochs=6)
    study = optuna.create_study(
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    )
    for lr in (3e-3, 5e-3, 4e-3, 1e-7):
        study.enqueue_trial({"strategy": "constant", "constant.initial_lr": lr})
    study.optimize(trainer.objective(spec, digits), n_trials=4)
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED
    assert study.trials[-1].user_attrs["epochs_run"] < 6


def test_apply_rebuilds_the_best_schedule_for_a_users_own_fit(trainer, digits) -> None:
    import keras

    from search.training.models import build_model, loss_and_metrics

    spec = spec_for(["step"], epochs=4)
    params = {"strategy": "step", "step.initial_lr": 0.01, "step.drop": 0.5, "step.every": 1}
    trial = run_fixed(trainer, spec, digits, params)
    optimizer, callbacks = apply(trial.user_attrs["export"])
    model = build_model(spec.task.model, digits, 0)
    loss, metrics = loss_and_metrics(digits, model)
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    seen: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(float(model.optimizer.learning_rate))
    )
    model.fit(digits.x_train, digits.y_train, epochs=4, verbose=0, callbacks=[*callbacks, record])
    assert seen == pytest.approx(trial.user_attrs["lr"], rel=1e-6)


def test_the_range_test_leaves_the_model_as_a_fresh_one_and_finds_an_edge() -> None:
    """The test trains the compiled model; the next trial must start exactly as without it."""
    spec = parse_spec(
        {
            "task": {"model": {"kind": "mlp", "hidden": [16]}, "epochs": 4, "batch_size": 64},
            "seed": 0,
        }
    )
    data = load_digits()
    trainer = Trainer()
    compiled = trainer._compiled(spec, data)
    before = [w.copy() for w in compiled.model.get_weights()]
    found = trainer.range_test(spec, data)
    assert found is not None and found.edge is not None and found.low is not None
    assert 1e-3 < found.edge < 10 and found.low < found.high  # type: ignore[operator]
    assert len(found.losses) == len(found.rates) > 20
    compiled.loop.restart()
    after = compiled.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    off = parse_spec(
        {
            **spec.model_dump(mode="json"),
            "task": {**spec.task.model_dump(mode="json"), "epochs": 1, "batch_size": 1024},
        }
    )
    assert trainer.range_test(off, data) is None  # 2 steps: too short to afford a test
