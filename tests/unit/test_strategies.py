"""Contract of every LR strategy without TensorFlow: space, constraints, curve, export."""

from __future__ import annotations

import math

import optuna
import pytest

from search.errors import StrategyError
from search.space import suggest
from search.spec import parse_spec
from search.strategies import PARAM_BOUNDS, STRATEGY_IDS, RunShape, get_strategy

RUN = RunShape(epochs=10, steps_per_epoch=23)


def sample_params(strategy_id: str, seed: int = 0) -> dict:
    spec = parse_spec({"strategies": [strategy_id], "task": {"epochs": RUN.epochs}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    _, params = suggest(study.ask(), spec, RUN)
    return params


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
def test_sampled_params_satisfy_constraints(strategy_id: str) -> None:
    strategy = get_strategy(strategy_id)
    for seed in range(25):
        params = sample_params(strategy_id, seed)
        assert set(params) == set(strategy.param_names)
        strategy.check(params, RUN)


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
def test_initial_rate_and_decay_parameters_are_searched(strategy_id: str) -> None:
    names = get_strategy(strategy_id).param_names
    assert "initial_lr" in names
    family_needs = {
        "exponential": "decay_steps",
        "inverse_time": "decay_rate",
        "cosine": "decay_steps",
        "plateau": "patience",
        "step": "drop",
    }
    if strategy_id in family_needs:
        assert family_needs[strategy_id] in names


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
def test_curve_is_positive_and_starts_at_initial_rate(strategy_id: str) -> None:
    strategy = get_strategy(strategy_id)
    params = sample_params(strategy_id, 3)
    curve = strategy.lr_curve(params, RUN)
    assert len(curve) == RUN.epochs
    assert all(lr >= 0 and math.isfinite(lr) for lr in curve)
    if strategy_id == "one_cycle":  # starts at a 25th of its peak, by definition
        assert curve[0] == pytest.approx(params["initial_lr"] / 25)
    elif params.get("warmup_steps", 0) == 0:
        assert curve[0] == pytest.approx(params["initial_lr"])
    else:
        assert curve[0] == 0.0  # a warm-up from zero


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
def test_bad_parameters_are_refused(strategy_id: str) -> None:
    strategy = get_strategy(strategy_id)
    good = sample_params(strategy_id)
    for bad in ({"initial_lr": 0.0}, {"initial_lr": 11.0}, {"initial_lr": float("nan")}):
        with pytest.raises(StrategyError, match="initial_lr"):
            strategy.check({**good, **bad}, RUN)
    if "decay_steps" in good:
        with pytest.raises(StrategyError, match="longer than the run"):
            strategy.check({**good, "decay_steps": RUN.total_steps + 1}, RUN)
    if "decay_rate" in good:
        with pytest.raises(StrategyError, match="decay_rate"):
            strategy.check({**good, "decay_rate": 1.5}, RUN)
    if "factor" in good:
        with pytest.raises(StrategyError, match="factor"):
            strategy.check({**good, "factor": 1.0}, RUN)
    with pytest.raises(StrategyError, match="missing"):
        strategy.check({}, RUN)


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
def test_export_names_keras_objects_and_a_snippet(strategy_id: str) -> None:
    strategy = get_strategy(strategy_id)
    export = strategy.export(sample_params(strategy_id), RUN).as_dict()
    assert "import keras" in export["python"]
    compile(export["python"], "<snippet>", "exec")
    if export["schedule"] is not None:
        assert export["schedule"]["class_name"] in export["python"]


def test_documented_formulas_at_known_points() -> None:
    exp = {"initial_lr": 0.1, "decay_steps": 10, "decay_rate": 0.5, "staircase": False}
    assert get_strategy("exponential").lr_at(exp, RUN, 20, 0) == pytest.approx(0.025)
    assert get_strategy("exponential").lr_at({**exp, "staircase": True}, RUN, 15, 0) == 0.05
    pw = {"initial_lr": 0.1, "n_boundaries": 1, "drop": 0.1}
    assert get_strategy("piecewise").lr_at(pw, RUN, 200, 0) == pytest.approx(0.01)
    step = {"initial_lr": 0.1, "drop": 0.5, "every": 2}
    assert get_strategy("step").lr_curve(step, RUN)[:5] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025]
    )
    cos = {"initial_lr": 0.1, "decay_steps": 100, "alpha": 0.0, "warmup_steps": 10}
    assert get_strategy("cosine").lr_at(cos, RUN, 5, 0) == pytest.approx(0.05)
    assert get_strategy("cosine").lr_at(cos, RUN, 60, 0) == pytest.approx(0.05)


def test_plateau_replay_reduces_after_patience() -> None:
    params = {"initial_lr": 0.1, "factor": 0.5, "patience": 1, "min_lr": 0.01, "cooldown": 0}
    curve = get_strategy("plateau").lr_curve_from_history(params, [1.0, 1.0, 1.0, 0.5, 0.5], False)
    assert curve == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025])


def test_every_bound_in_the_catalogue_has_sane_defaults() -> None:
    for name, bounds in PARAM_BOUNDS.items():
        if bounds.kind == "float":
            assert not bounds.problems(bounds.default_low) or name == "alpha", name
            assert not bounds.problems(bounds.default_high), name
