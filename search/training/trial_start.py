"""How a trial starts: its record under way, its seed, its export (what its schedule plays).

Shared by the solo path (`search.training.trainer`) and fused populations
(`search.training.population`), so both start a trial the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from search.outcome import TrialOutcome
from search.selection import INIT_SEED
from search.spec import StudySpec
from search.store import optuna_private as private
from search.strategies import RunShape, get_strategy
from search.training.report_writer import ReportWriter


@dataclass
class Begun:
    """A trial under way: its run shape, its record, its report writer, when it began."""

    run: RunShape
    outcome: TrialOutcome
    reports: ReportWriter
    started: float


def replicate_seed(trial: optuna.Trial) -> int | None:
    """A replicate's own seed of initial weights and batch order (search.selection); None
    for every other trial, which starts from the study's seed."""
    own = private.frozen_view(trial).system_attrs.get(INIT_SEED)
    return None if own is None else int(own)


def trial_export(spec: StudySpec, dataset: Any, run: RunShape, outcome: TrialOutcome) -> int:
    """Set the trial's export (what its schedule plays) on `outcome`; return its seed."""
    from search.training.keras_export import optimizer_config

    strategy = get_strategy(str(outcome.strategy))
    opt_cfg = optimizer_config(spec.task.optimizer, spec.task.momentum)
    outcome.export = strategy.export(
        outcome.params,
        run,
        spec.objective.metric,
        opt_cfg,
        spec.objective.direction,
        best_mode=spec.objective.best_mode,
        preprocess=dataset.preprocess,
    ).as_dict()
    outcome.export.update(strategy=outcome.strategy, params=outcome.params)
    return int(spec.seed or 0) if outcome.seed is None else outcome.seed


__all__ = ["Begun", "replicate_seed", "trial_export"]
