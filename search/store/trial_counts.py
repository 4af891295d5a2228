"""Counts over Optuna's trials: the answer cache's version, service metrics, and what the
worker's sweep heals."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from search.store.optuna_tables import (
    optuna_heartbeats,
    optuna_studies,
    optuna_system_attrs,
    optuna_trials,
)
from search.store.schema import OPTUNA_STATES, STUDY_STATUSES, Study
from search.store.trials import optuna_study_id


@dataclass(frozen=True)
class TrialsVersion:
    """Changes whenever a trial of the study is added or changes state; O(1) to read.

    Why it is enough: Optuna numbers a study's trials 0..n-1 under a lock on the study row,
    never deletes one, and only moves a trial forward (WAITING -> RUNNING -> finished); a
    finished trial's values and attributes can no longer change. So with the same last number
    and the same RUNNING and WAITING counts, the finished trials are the same set, and every
    answer computed from finished trials (progress counts, the best trial, a page holding
    only finished trials) is still exact.
    """

    last_number: int  # -1 while the study has no trial
    running: int
    waiting: int


def study_with_trials_version(
    session: Session, study_id: str, tenant_id: str | None = None
) -> tuple[Study, TrialsVersion] | None:
    """The study row (None when absent or another tenant's) and its TrialsVersion, in ONE
    statement: index look-ups only (trials (study_id, number) and (study_id, state)), so its
    cost does not grow with the number of trials."""
    params = {"study_id": study_id}
    if tenant_id is not None:
        params["tenant_id"] = tenant_id
    row = session.execute(_versioned_study_stmt(tenant_id is not None), params).first()
    if row is None:
        return None
    study, last_number, running, waiting = row
    version = TrialsVersion(
        last_number=-1 if last_number is None else int(last_number),
        running=int(running or 0),
        waiting=int(waiting or 0),
    )
    return study, version


@functools.cache
def _versioned_study_stmt(by_tenant: bool) -> sa.Select[Any]:
    """Built once (the hot path of every study read): only parameters change per call."""
    optuna_id = optuna_studies.c.study_id
    last = (
        select(optuna_trials.c.number)
        .where(optuna_trials.c.study_id == optuna_id)
        .order_by(optuna_trials.c.number.desc())
        .limit(1)
        .scalar_subquery()
    )

    def count(state: str) -> sa.ScalarSelect[int]:
        return (
            select(func.count())
            .select_from(optuna_trials)
            .where(optuna_trials.c.study_id == optuna_id, optuna_trials.c.state == state)
            .scalar_subquery()
        )

    stmt = (
        select(Study, last, count("RUNNING"), count("WAITING"))
        .outerjoin(optuna_studies, optuna_studies.c.study_name == Study.optuna_study_name)
        .where(Study.id == sa.bindparam("study_id"))
    )
    if by_tenant:
        stmt = stmt.where(Study.tenant_id == sa.bindparam("tenant_id"))
    return stmt


# --- service-wide counts (metrics) ---------------------------------------------------------


def trial_state_counts(session: Session, optuna_study_name: str | None = None) -> dict[str, int]:
    """Trials by Optuna state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), all present.

    For one Optuna study, or the whole database when no name is given. One grouped query.
    """
    stmt = select(optuna_trials.c.state, func.count()).group_by(optuna_trials.c.state)
    if optuna_study_name is not None:
        stmt = stmt.where(optuna_trials.c.study_id == optuna_study_id(optuna_study_name))
    counts = dict.fromkeys(OPTUNA_STATES, 0)
    counts.update({str(state): int(n) for state, n in session.execute(stmt)})
    return counts


def running_trial_counts(session: Session, optuna_study_names: Sequence[str]) -> dict[str, int]:
    """RUNNING trials per Optuna study name (absent names have none). One grouped query."""
    if not optuna_study_names:
        return {}
    stmt = (
        select(optuna_studies.c.study_name, func.count())
        .select_from(
            optuna_trials.join(
                optuna_studies, optuna_studies.c.study_id == optuna_trials.c.study_id
            )
        )
        .where(
            optuna_studies.c.study_name.in_(list(optuna_study_names)),
            optuna_trials.c.state == "RUNNING",
        )
        .group_by(optuna_studies.c.study_name)
    )
    return {str(name): int(n) for name, n in session.execute(stmt)}


def study_status_counts(session: Session) -> dict[str, int]:
    """Studies by status over all tenants (one grouped query)."""
    stmt = select(Study.status, func.count()).group_by(Study.status)
    counts = dict.fromkeys(STUDY_STATUSES, 0)
    counts.update({status: int(n) for status, n in session.execute(stmt)})
    return counts


# --- what the worker's sweep heals ---------------------------------------------------------


def orphan_running_trials(
    session: Session, optuna_study_name: str, older_than_s: float
) -> list[int]:
    """Trial ids RUNNING without any heartbeat, started more than `older_than_s` ago.

    A worker that died between `study.ask` and its first heartbeat leaves such a trial;
    Optuna's stale check skips trials without a heartbeat, so it would stay RUNNING forever.
    Optuna writes `datetime_start` as naive local time, so the cutoff is too.
    """
    cutoff = datetime.now() - timedelta(seconds=older_than_s)
    beats = select(optuna_heartbeats.c.trial_id).where(
        optuna_heartbeats.c.trial_id == optuna_trials.c.trial_id
    )
    stmt = select(optuna_trials.c.trial_id).where(
        optuna_trials.c.study_id == optuna_study_id(optuna_study_name),
        optuna_trials.c.state == "RUNNING",
        optuna_trials.c.datetime_start < cutoff,
        ~beats.exists(),
    )
    return [int(trial_id) for trial_id in session.scalars(stmt)]


def has_retry(session: Session, optuna_study_name: str, failed_number: int) -> bool:
    """Whether a trial of the study already carries `failed_trial == failed_number`.

    Makes queuing a retry idempotent: a retried `add_trial` whose first attempt did commit
    (the answer was lost with the connection) must not queue a second copy.
    """
    stmt = (
        select(func.count())
        .select_from(
            optuna_system_attrs.join(
                optuna_trials, optuna_trials.c.trial_id == optuna_system_attrs.c.trial_id
            )
        )
        .where(
            optuna_trials.c.study_id == optuna_study_id(optuna_study_name),
            optuna_system_attrs.c.key == "failed_trial",
            optuna_system_attrs.c.value_json == json.dumps(failed_number),
        )
    )
    return int(session.scalar(stmt) or 0) > 0
