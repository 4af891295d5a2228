"""StudySpec -> Optuna suggest_* calls, conditional on the sampled strategy.

Parameters are named `<strategy>.<param>` in Optuna so each family keeps its own distributions
(TPE models them separately); the trainer sees clean names.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from search.errors import FieldError
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
    return strategy_id, _repair(strategy_id, params, run)


def _suggest_one(trial: optuna.Trial, name: str, p: Param) -> Any:
    if p.kind == "bool":
        return trial.suggest_categorical(name, [False, True])
    if p.kind == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log and p.low > 0)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


def _repair(strategy_id: str, params: Params, run: RunShape) -> Params:
    """Keep sampled values legal together (cosine's warm-up plus decay fit in the run)."""
    if strategy_id == "cosine":
        room = max(1, run.total_steps - params["warmup_steps"])
        params = {**params, "decay_steps": min(params["decay_steps"], room)}
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


def default_trials(spec: StudySpec, run: RunShape) -> list[dict[str, Any]]:
    """Well-known starting points to enqueue first (Adam's 1e-3, a plain cosine decay)."""
    out: list[dict[str, Any]] = []
    if "constant" in spec.strategies and _in_range(spec, "initial_lr", 1e-3):
        out.append({"strategy": "constant", "constant.initial_lr": 1e-3})
    if "cosine" in spec.strategies and _in_range(spec, "initial_lr", 3e-3) and not spec.ranges:
        out.append(
            {
                "strategy": "cosine",
                "cosine.initial_lr": 3e-3,
                "cosine.decay_steps": run.total_steps,
                "cosine.alpha": 0.0,
                "cosine.warmup_steps": 0,
            }
        )
    return out


def _in_range(spec: StudySpec, name: str, value: float) -> bool:
    rng = spec.ranges.get(name)
    return rng is None or rng.low <= value <= rng.high
