"""How much work the queue holds: the unclaimed trial slots, and the runnable trial slots an
autoscaler sizes the workers by.

`runnable_trial_slots` is the number of workers that could be busy right now: every slot a
runnable study (`RUNNABLE`, `trials_claimed < n_trials`) has not handed out yet, plus every
trial that is running in a runnable study (its worker is busy). A queued retry or seeded trial
needs no slot of its own: it is popped by the `ask` after a claim, from a slot given back to
it. Counting the running trials keeps an autoscaler from stopping busy workers the moment the
last slot is claimed. KEDA's PostgreSQL trigger runs `runnable_trial_slots_sql()`, the same
statement as text (`deploy/k8s/base/worker-scaledobject.yaml`; a test keeps them equal).
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from search.store.optuna_tables import optuna_studies, optuna_trials
from search.store.schema import RUNNABLE, Study


def queue_depth(session: Session) -> int:
    """Trial slots not yet claimed by any worker, over runnable studies."""
    return int(session.scalar(_unclaimed_slots()) or 0)


def runnable_trial_slots(session: Session) -> int:
    """Unclaimed slots plus running trials of runnable studies: the workers there is work for.
    One statement."""
    return int(session.scalar(runnable_trial_slots_stmt()) or 0)


@functools.cache
def runnable_trial_slots_stmt() -> sa.Select[Any]:
    """The statement `runnable_trial_slots` runs (built once: it has no parameters)."""
    running = (
        select(func.count())
        .select_from(
            optuna_trials.join(
                optuna_studies, optuna_studies.c.study_id == optuna_trials.c.study_id
            ).join(Study, Study.optuna_study_name == optuna_studies.c.study_name)
        )
        .where(Study.status.in_(RUNNABLE), optuna_trials.c.state == "RUNNING")
        .scalar_subquery()
    )
    slots = _unclaimed_slots().scalar_subquery() + running
    return select(slots.label("runnable_trial_slots"))


@functools.cache
def runnable_trial_slots_sql() -> str:
    """`runnable_trial_slots_stmt` as PostgreSQL text on one line, its constants inlined: the
    query an autoscaler (KEDA's `postgresql` trigger) polls; it returns one integer."""
    compiled = runnable_trial_slots_stmt().compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
    return " ".join(str(compiled).split())  # its only literals are single words


def _unclaimed_slots() -> sa.Select[Any]:
    return select(func.coalesce(func.sum(Study.n_trials - Study.trials_claimed), 0)).where(
        Study.status.in_(RUNNABLE), Study.trials_claimed < Study.n_trials
    )
