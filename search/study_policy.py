"""How a study searches: the Optuna sampler and pruner a spec asks for, with sensible settings.

The pruner waits a third of the run before judging a trial, so a decaying schedule is not
killed before its decay has happened.
"""

from __future__ import annotations

import optuna

from search.spec import StudySpec


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler named in the spec; TPE handles the conditional (per-strategy) space."""
    name = spec.sampler
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(8, max(2, spec.n_trials // 4))
    )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The pruner named in the spec, warming up for a third of the epochs."""
    epochs = spec.task.epochs
    warmup = max(1, epochs // 3)
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=epochs)
    if spec.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup)
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=warmup)
