"""The best of a study: its best trial, or, once candidates were re-run on fresh seeds, the
candidate with the best mean over its seeds (search.selection), read in a few statements.

Replicate trials carry the system attribute `selection.REPLICATE_OF`; a study without any
costs one indexed read more than the plain best trial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from search import selection
from search.store.optuna_tables import (
    optuna_system_attrs,
    optuna_trials,
    optuna_user_attrs,
    optuna_values,
)
from search.store.schema import Study
from search.store.trials import (
    StoredTrial,
    best_single,
    get_trial,
    optuna_study_id,
    stored_value,
)

#: The study system attribute holding the learning-rate range test (written by the worker).
LR_RANGE = "lrsearch:lr_range"


@dataclass(frozen=True)
class Best:
    """The chosen trial and what its value means: the mean over `seeds` runs (`trials`)."""

    number: int
    value: float | None
    seeds: int = 1
    sd: float | None = None
    values: tuple[float, ...] = ()
    trials: tuple[int, ...] = ()

    def describe(self) -> dict[str, Any]:
        rule = (
            "mean over seeds of a candidate re-run on fresh seeds (the reference, the"
            " optimizer's default rate, is kept unless the challenger beats it seed for seed"
            " at 90% one-sided confidence, Student's t on the paired differences; one"
            " standard error of the means where the seeds are not known)"
            if self.seeds > 1
            else ("the best single trial (no candidate was re-run on other seeds)")
        )
        return {
            "rule": rule,
            "seeds": self.seeds,
            "sd": self.sd,
            "values": list(self.values),
            "trials": list(self.trials),
        }


def best_value(session: Session, study: Study) -> Best | None:
    """The study's best (number and value), without loading attributes."""
    chosen = _replicated(session, study)
    if chosen is not None:
        return chosen
    single = best_single(session, study)
    if single is None:
        return None
    number, value = single
    return Best(number, value, 1, None, () if value is None else (value,), (number,))


def best_trial(session: Session, study: Study) -> tuple[StoredTrial, Best] | None:
    """The best trial with its attributes, and what its value means."""
    best = best_value(session, study)
    if best is None:
        return None
    record = get_trial(session, study, best.number)
    return None if record is None else (record, best)


def _replicated(session: Session, study: Study) -> Best | None:
    """The best candidate by mean, when some candidate has replicates."""
    study_id = optuna_study_id(study.optuna_study_name)
    seed = optuna_system_attrs.alias("seed")
    rows = session.execute(
        _complete_values()
        .add_columns(optuna_system_attrs.c.value_json, seed.c.value_json.label("seed_json"))
        .join(
            optuna_system_attrs,
            sa.and_(
                optuna_system_attrs.c.trial_id == optuna_trials.c.trial_id,
                optuna_system_attrs.c.key == selection.REPLICATE_OF,
            ),
        )
        .outerjoin(
            seed,
            sa.and_(seed.c.trial_id == optuna_trials.c.trial_id, seed.c.key == selection.INIT_SEED),
        )
        .where(optuna_trials.c.study_id == study_id)
    ).all()
    if not rows:
        return None
    replicates = [
        selection.Run(
            int(r.number),
            _finite(r),
            int(json.loads(r.value_json)),
            None if r.seed_json is None else int(json.loads(r.seed_json)),
        )
        for r in rows
    ]
    originals = {run.replicate_of for run in replicates}
    found = session.execute(
        _complete_values().where(
            optuna_trials.c.study_id == study_id, optuna_trials.c.number.in_(originals)
        )
    ).all()
    runs = [selection.Run(int(r.number), _finite(r)) for r in found] + replicates
    reference = session.execute(
        select(optuna_trials.c.number)
        .join(optuna_user_attrs, optuna_user_attrs.c.trial_id == optuna_trials.c.trial_id)
        .where(
            optuna_trials.c.study_id == study_id,
            optuna_user_attrs.c.key == selection.REFERENCE,
        )
        .limit(1)
    ).scalar_one_or_none()
    choice = selection.choose(runs, study.direction == "maximize", reference)
    if choice is None:
        return None
    numbers = tuple(
        r.number
        for r in sorted(runs, key=lambda r: r.number)
        if choice.number in (r.number, r.replicate_of)
    )
    return Best(choice.number, choice.mean, choice.seeds, choice.sd, choice.values, numbers)


def _complete_values() -> sa.Select[Any]:
    return (
        select(optuna_trials.c.number, optuna_values.c.value, optuna_values.c.value_type)
        .select_from(optuna_trials)
        .join(optuna_values, optuna_values.c.trial_id == optuna_trials.c.trial_id)
        .where(optuna_trials.c.state == "COMPLETE", optuna_values.c.objective == 0)
    )


def _finite(row: Any) -> float:
    value = stored_value(row.value, row.value_type)
    return float("nan") if value is None else float(value)
