"""A failed trial's second chance: queued again once (idempotently) with its parameters and
its checkpoint's key, while its slot is given back so it counts once against the budget."""

from __future__ import annotations

import functools

import optuna

from search import store
from search.space import distributions_holding
from search.store import optuna_private as private
from search.worker.config import MAX_RETRIES
from search.worker.resources import WorkerResources


def will_retry(failed: optuna.trial.FrozenTrial) -> bool:
    """A trial is retried at most MAX_RETRIES times over its whole history."""
    return len(failed.system_attrs.get("retry_history", [])) < MAX_RETRIES


def retry_note(retried: bool) -> str:
    """The end of a lost or released trial's reason: whether it goes on elsewhere."""
    return "retried" if retried else "not retried again (it was a retry)"


def retry(
    resources: WorkerResources,
    study: optuna.Study,
    failed: optuna.trial.FrozenTrial,
    study_id: str,
) -> None:
    """Queue the failed trial again (once, idempotently) and give its slot back, so it
    counts once against the budget."""
    resources.persist(functools.partial(_queue_retry, resources, study, failed), "queue retry")

    def release() -> None:
        with resources.sessions() as session:
            store.release_slot(session, study_id, private.trial_id(failed))

    resources.persist(release, "release slot")


def _queue_retry(
    resources: WorkerResources, study: optuna.Study, failed: optuna.trial.FrozenTrial
) -> None:
    with resources.sessions() as session:
        if store.has_retry(session, study.study_name, failed.number):
            return
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=failed.params,
            distributions=distributions_holding(failed.params, failed.distributions),
            system_attrs={
                **failed.system_attrs,
                "failed_trial": history[0],
                "retry_history": history,
            },
        )
    )
