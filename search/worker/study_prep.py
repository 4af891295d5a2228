"""What a study needs beyond `ask`: its learning-rate range (measured once), its seeded first
trials, and, in its last slots, re-runs of its best candidates on fresh seeds. The same for
every workload: arrays, a task plugin, data by path (search.worker.workloads).

The range test is deterministic (the study's seed, model and data), so a worker that finds no
stored range runs it and stores it; of two racing workers the first write is kept and both
use what was stored, so every trial of a study searches the same space.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from search import selection
from search.lr_range import RangeResult
from search.space import default_trials, distributions_holding, reference_trial
from search.spec import ParamRange, StudySpec
from search.store import LR_RANGE
from search.store import optuna_private as private
from search.worker.resources import WorkerResources
from search.worker.workloads import Workload, workload_run

log = logging.getLogger("lrsearch.worker.study_prep")
#: The study system attributes lrsearch keeps on an Optuna study.
REPLICATE_PLAN = "lrsearch:replicate_plan"
_WAITING = optuna.trial.TrialState.WAITING
_COMPLETE = optuna.trial.TrialState.COMPLETE


def searched_spec(
    resources: WorkerResources,
    study: optuna.Study,
    spec: StudySpec,
    dataset: Workload,
    trainer: Any,
) -> StudySpec:
    """The spec trials sample from: the initial-rate range from the range test, when the study
    asks for one and the user gave no range of their own."""
    if not spec.range_test or "initial_lr" in spec.ranges:
        return spec
    found = lr_range(resources, study, spec, dataset, trainer)
    if found is None or found.low is None or found.high is None:
        return spec
    ranges = {**spec.ranges, "initial_lr": ParamRange(low=found.low, high=found.high, log=True)}
    return spec.model_copy(update={"ranges": ranges})


def lr_range(
    resources: WorkerResources,
    study: optuna.Study,
    spec: StudySpec,
    dataset: Workload,
    trainer: Any,
) -> RangeResult | None:
    """The study's stored range test, run and stored first when there is none."""
    storage, study_id = resources.storage, private.study_id(study)
    stored = storage.get_study_system_attrs(study_id).get(LR_RANGE)
    if stored is None:
        result = trainer.range_test(spec, dataset)
        if result is None:
            return None
        attrs = storage.get_study_system_attrs(study_id)
        if LR_RANGE not in attrs:
            storage.set_study_system_attr(study_id, LR_RANGE, result.as_attrs())
            log.info(
                "study %s: lr range test: edge %s, search %s - %s",
                study.study_name,
                result.edge,
                result.low,
                result.high,
            )
        stored = storage.get_study_system_attrs(study_id).get(LR_RANGE)
    return RangeResult.from_attrs(stored) if isinstance(stored, dict) else None


def enqueue_first_trials(
    study: optuna.Study, user_spec: StudySpec, spec: StudySpec, dataset: Workload
) -> None:
    """Slot 1 queues the seeded starting points (search.space.default_trials)."""
    run = workload_run(spec, dataset)
    budget = spec.n_trials - selection.replicate_slots(spec.n_trials, spec.replicate_share)
    reference = reference_trial(user_spec)
    for params in default_trials(user_spec, run, searched=spec, budget=budget):
        marks = {selection.REFERENCE: True} if params == reference else None
        study.enqueue_trial(params, user_attrs=marks, skip_if_exists=True)


def queue_replicate(
    resources: WorkerResources, study: optuna.Study, spec: StudySpec, slot: int
) -> bool:
    """In a replicate slot with nothing queued, queue a re-run of one of the study's best
    candidates from a fresh seed (nothing when no trial has completed yet); whether it did."""
    n_rep = selection.replicate_slots(spec.n_trials, spec.replicate_share)
    first = spec.n_trials - n_rep + 1
    if n_rep == 0 or slot < first:
        return False
    if study.get_trials(deepcopy=False, states=(_WAITING,)):
        return False  # a queued retry takes this slot
    plan = _replicate_plan(resources, study, n_rep)
    if not plan:
        return False
    index = slot - first
    number, k = plan[index % len(plan)], index // len(plan) + 1
    original = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    study.add_trial(
        optuna.trial.create_trial(
            state=_WAITING,
            params=original.params,
            distributions=distributions_holding(original.params, original.distributions),
            system_attrs={
                selection.REPLICATE_OF: number,
                selection.INIT_SEED: selection.replicate_seed(spec.seed, k),
            },
        )
    )
    return True


def _replicate_plan(resources: WorkerResources, study: optuna.Study, n_rep: int) -> list[int]:
    """The candidates to re-run, fixed by the first replicate slot (stored on the study)."""
    storage, study_id = resources.storage, private.study_id(study)
    plan = storage.get_study_system_attrs(study_id).get(REPLICATE_PLAN)
    if plan:
        return [int(n) for n in plan]
    done = study.get_trials(deepcopy=False, states=(_COMPLETE,))
    runs = [
        selection.Run(t.number, float(t.value))
        for t in done
        if t.value is not None and selection.REPLICATE_OF not in t.system_attrs
    ]
    reference = next((t.number for t in done if t.user_attrs.get(selection.REFERENCE)), None)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    k = selection.candidates_to_rerun(n_rep)
    top = selection.top_numbers(runs, k, maximize, reference)
    if top:
        storage.set_study_system_attr(study_id, REPLICATE_PLAN, top)
        top = [int(n) for n in storage.get_study_system_attrs(study_id)[REPLICATE_PLAN]]
    return top
