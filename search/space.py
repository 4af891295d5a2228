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
#: Seeded starting points after the reference (the optimizer's default rate held constant), in
#: the order they are used: (strategy, multiple of the default rate, its other parameters as
#: shares of the run). Linear decay to zero and warm-up + cosine are the schedules users
#: reach for first; a decade apart, they also act as a coarse range test. Chosen on the dev
#: tasks of benchmarks/search_suite.py (see benchmarks/RESULTS.md).
SEEDS: tuple[tuple[str, float, dict[str, float]], ...] = (
    ("linear", 3.0, {"warmup": 0.05}),
    ("cosine", 10.0, {"warmup": 0.2}),
    ("wsd", 3.0, {"warmup": 0.05, "decay_share": 0.2}),
    ("cosine", 30.0, {"warmup": 0.2}),
    ("cosine", 3.0, {"warmup": 0.2}),
)
#: The seeded points take at most this share of the trials that explore.
SEEDED_SHARE = 0.25
#: Each requested family gets one trial of its own when the exploring trials left after the
#: seeds are at least this many times the families not yet tried.
FAMILY_COVERAGE = 2


def reference_trial(spec: StudySpec) -> dict[str, Any]:
    """The reference: the optimizer's Keras default rate held constant (as enqueued)."""
    base = KERAS_DEFAULT_LR.get(spec.task.optimizer, 1e-3)
    return {"strategy": "constant", "constant.initial_lr": base}


def default_trials(
    spec: StudySpec,
    run: RunShape,
    *,
    searched: StudySpec | None = None,
    budget: int | None = None,
) -> list[dict[str, Any]]:
    """The trials to queue first: the reference, seeded points, then one per family.

    The reference (the optimizer's Keras default rate, constant) is checked against the
    user's space only, so every study shows what it gained over what users run today; the
    seeds must lie in the space searched (`searched`: the range test may have moved the
    initial rate's range). Seeds take at most a quarter of `budget` (the exploring trials);
    when enough trials are left, each requested family not yet seeded gets one trial whose
    parameters the sampler draws.
    """
    searched = searched or spec
    budget = spec.n_trials if budget is None else budget
    base = KERAS_DEFAULT_LR.get(spec.task.optimizer, 1e-3)
    out = []
    if "constant" in spec.strategies and _in_space(spec, run, "constant", {"initial_lr": base}):
        out.append(("constant", {"initial_lr": base}))
    room = max(1, int(budget * SEEDED_SHARE))
    for sid, multiple, shares in SEEDS:
        if len(out) >= room:
            break
        params = _seed_params(sid, base * multiple, shares, run)
        if sid in spec.strategies and _in_space(searched, run, sid, params):
            out.append((sid, params))
    trials = [
        {"strategy": sid, **{f"{sid}.{k}": v for k, v in params.items()}} for sid, params in out
    ]
    seeded = {sid for sid, _ in out}
    missing = [s for s in spec.strategies if s not in seeded]
    if missing and budget - len(trials) >= FAMILY_COVERAGE * len(missing):
        trials += [{"strategy": s} for s in missing]
    return trials[:budget]


def _seed_params(
    strategy_id: str, lr: float, shares: dict[str, float], run: RunShape
) -> dict[str, Any]:
    warmup = int(run.total_steps * shares.get("warmup", 0.0))
    if strategy_id == "cosine":
        return {
            "initial_lr": lr,
            "decay_steps": run.total_steps - warmup,
            "alpha": 0.0,
            "warmup_steps": warmup,
        }
    if strategy_id == "wsd":
        return {"initial_lr": lr, "warmup_steps": warmup, "decay_share": shares["decay_share"]}
    return {"initial_lr": lr, "warmup_steps": warmup}


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


def distributions_holding(
    params: dict[str, Any], distributions: dict[str, optuna.distributions.BaseDistribution]
) -> dict[str, optuna.distributions.BaseDistribution]:
    """The trial's distributions widened, where needed, to hold its values: a queued point
    (the user's reference rate) may lie outside a range narrowed by the range test, and
    Optuna refuses to re-create (retry, replicate) a trial whose value its distribution lacks."""
    held: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, dist in distributions.items():
        value = params.get(name)
        if isinstance(dist, optuna.distributions.FloatDistribution) and value is not None:
            v = float(value)
            if not dist.low <= v <= dist.high and dist.step is None:
                dist = optuna.distributions.FloatDistribution(
                    min(dist.low, v), max(dist.high, v), log=dist.log
                )
        elif isinstance(dist, optuna.distributions.IntDistribution) and value is not None:
            i = int(value)
            if not dist.low <= i <= dist.high and dist.step == 1:
                dist = optuna.distributions.IntDistribution(
                    min(dist.low, i), max(dist.high, i), log=dist.log
                )
        held[name] = dist
    return held
