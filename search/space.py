"""StudySpec -> Optuna suggest_* calls, conditional on the sampled strategy.

Parameters are named `<strategy>.<param>` in Optuna so each family keeps its own distributions
(TPE models them separately); the trainer sees clean names.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from search.errors import FieldError, StrategyError
from search.spec import StudySpec
from search.strategies import Param, Params, RunShape, get_strategy


def run_shape(spec: StudySpec, n_train: int) -> RunShape:
    """The run length of every trial of this study on a training set of n_train rows."""
    return RunShape(spec.task.epochs, max(1, math.ceil(n_train / spec.task.batch_size)))


def suggest(trial: optuna.Trial, spec: StudySpec, run: RunShape) -> tuple[str, Params]:
    """Sample a strategy, then its parameters; repairs cross-parameter constraints."""
    strategy_id = trial.suggest_categorical("strategy", spec.strategies)
    strategy = get_strategy(strategy_id)
    overrides = {k: v for k, v in spec.ranges.items()}
    params = {
        p.name: _suggest_one(trial, f"{strategy_id}.{p.name}", p)
        for p in strategy.space(run, overrides)
    }
    return strategy_id, repair(strategy_id, params, run)


def _suggest_one(trial: optuna.Trial, name: str, p: Param) -> Any:
    if p.kind == "bool":
        return trial.suggest_categorical(name, [False, True])
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log and p.low > 0)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


def repair(strategy_id: str, params: Params, run: RunShape) -> Params:
    """Keep sampled values legal together (warm-up plus decay fit in the run)."""
    if strategy_id == "cosine":
        room = max(1, run.total_steps - params["warmup_steps"])
        params = {**params, "decay_steps": min(params["decay_steps"], room)}
    if strategy_id == "wsd":
        decay = max(1, round(run.total_steps * float(params["decay_share"])))
        params = {**params, "warmup_steps": min(params["warmup_steps"], run.total_steps - decay)}
    return params


def params_from_trial(trial: optuna.trial.FrozenTrial) -> tuple[str, Params]:
    """Clean (strategy, params) of a stored trial."""
    strategy_id = trial.params["strategy"]
    prefix = f"{strategy_id}."
    return strategy_id, {
        k[len(prefix) :]: v for k, v in trial.params.items() if k.startswith(prefix)
    }


def check_spec_against_run(spec: StudySpec, run: RunShape) -> list[FieldError]:
    """Range overrides that cannot fit this run (decay or warm-up longer than it)."""
    errors = []
    for name in ("decay_steps", "warmup_steps"):
        rng = spec.ranges.get(name)
        if rng is not None and rng.high > run.total_steps:
            errors.append(
                FieldError(
                    f"ranges.{name}",
                    f"high ({rng.high:g}) is longer than the run ({run.total_steps} steps:"
                    f" {run.epochs} epochs x {run.steps_per_epoch} steps)",
                )
            )
    every = spec.ranges.get("every")
    if every is not None and every.high > run.epochs:
        errors.append(
            FieldError("ranges.every", f"high ({every.high:g}) exceeds {run.epochs} epochs")
        )
    return errors


#: Keras's default rate of each optimizer: the reference a study is compared with.
KERAS_DEFAULT_LR: dict[str, float] = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}
#: Peak rates tried with the warm-up + cosine recipe, as multiples of the optimizer's default:
#: a coarse range test over a decade in half-decade steps, the larger first (short runs favour
#: large peaks). Measured in-process on digits (200-epoch budget, seeds not used by
#: benchmarks/search_quality.py): mean best val_loss MLP 0.0820 vs 0.0877 with (30, 3) over
#: six seeds, CNN 0.0234 vs 0.0398 over three.
RECIPE_PEAKS: tuple[float, ...] = (30.0, 10.0, 3.0)
#: Share of the run spent warming up in the recipe: the most the default range allows, as a
#: peak 30x Adam's default needs it (measured on digits: better than 10% at that peak).
RECIPE_WARMUP = 0.2


def default_trials(spec: StudySpec, run: RunShape) -> list[dict[str, Any]]:
    """Well-known starting points to enqueue first, each kept only if it lies in the space.

    Linear warm-up then cosine decay to zero at three peak rates half a decade apart (a
    coarse LR range test that costs no extra training), then the optimizer's Keras default rate held
    constant: the reference users have today, so every study shows what it gained over it.
    """
    base = KERAS_DEFAULT_LR.get(spec.task.optimizer, 1e-3)
    warmup = int(run.total_steps * RECIPE_WARMUP)
    candidates: list[tuple[str, dict[str, Any]]] = [
        (
            "cosine",
            {
                "initial_lr": base * peak,
                "decay_steps": run.total_steps - warmup,
                "alpha": 0.0,
                "warmup_steps": warmup,
            },
        )
        for peak in RECIPE_PEAKS
    ]
    candidates.append(("constant", {"initial_lr": base}))
    return [
        {"strategy": sid, **{f"{sid}.{k}": v for k, v in params.items()}}
        for sid, params in candidates
        if sid in spec.strategies and _in_space(spec, run, sid, params)
    ]


def _in_space(spec: StudySpec, run: RunShape, strategy_id: str, params: Params) -> bool:
    """Every value inside this study's range for it (overrides included) and legal together."""
    strategy = get_strategy(strategy_id)
    for p in strategy.space(run, dict(spec.ranges)):
        value = params[p.name]
        if p.kind != "bool" and not p.low <= value <= p.high:
            return False
    try:
        strategy.check(params, run)
    except StrategyError:
        return False
    return True
