"""Fused population training: K trials of one study trained together in one graph.

Why: a study's trials share the model, the data and the batches; only the learning rate
differs. For small models a trial is dominated by per-step overhead, so K members stacked in
one graph (`stacked`, `optim`, `loop`) train several times as many trials per minute, each
member still getting what a solo trial gets (`members`): its own rate, optimizer state,
reports, pruning, divergence handling, LR callbacks and checkpoints.

`run_population` is what `Trainer.run_many` calls: it fuses what it can and trains the rest
one after another through `Trainer.run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from search.checkpoints import CheckpointHandle
from search.data import Dataset
from search.spec import CnnModel, MlpModel, StudySpec
from search.training.monitor import StopCheck
from search.training.population.host import Host
from search.training.trial_start import replicate_seed

Result = float | BaseException


def fusable(spec: StudySpec, dataset: Any) -> bool:
    """True when members of this study can train fused: a built-in mlp/cnn without dropout
    on in-memory arrays, with an optimizer the stacked update reproduces."""
    from search.training.keras_export import optimizer_config
    from search.training.population.optim import supported

    model = spec.task.model
    if not isinstance(dataset, Dataset) or spec.task.plugin is not None:
        return False
    if not isinstance(model, MlpModel | CnnModel) or model.dropout > 0:
        return False
    return supported(optimizer_config(spec.task.optimizer, spec.task.momentum))


def run_population(
    trainer: Host,
    trials: list[optuna.Trial],
    spec: StudySpec,
    dataset: Any,
    should_stop: StopCheck | None,
    handles: Sequence[CheckpointHandle | None],
) -> list[Result]:
    """Per member its value or its ending. Members sharing the study's seed and starting
    from scratch train fused; a member resuming from its checkpoint, or with a replicate's
    own seed (its own batches), trains solo."""
    results: list[Result | None] = [None] * len(trials)
    group: list[int] = []
    if len(trials) > 1 and fusable(spec, dataset):
        group = [
            i
            for i, trial in enumerate(trials)
            if replicate_seed(trial) is None and not _resumes(handles[i])
        ]
    if len(group) > 1:
        from search.training.population.members import train_fused

        fused = train_fused(
            trainer, [trials[i] for i in group], spec, dataset, should_stop,
            [handles[i] for i in group],
        )  # fmt: skip
        for i, result in zip(group, fused or [], strict=False):
            results[i] = result  # none: this model cannot be fused after all
    for i, trial in enumerate(trials):
        if results[i] is None:
            try:
                results[i] = trainer.run(trial, spec, dataset, should_stop, handles[i])
            except Exception as exc:  # the member's own ending; the others go on
                results[i] = exc
    return [r for r in results if r is not None]


def _resumes(handle: CheckpointHandle | None) -> bool:
    saved = handle.load() if handle is not None else None
    return saved is not None and saved.epoch >= 1


__all__ = ["fusable", "run_population"]
