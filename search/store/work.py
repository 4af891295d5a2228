"""What a worker reads to choose and keep its work: the studies it may claim a trial of, the
studies its sweep looks after, and a study's status while one of its trials trains. One
statement each, like the rest of the store."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from search.store.optuna_tables import optuna_studies, optuna_trials
from search.store.schema import RUNNABLE, Study

#: How many runnable studies a worker considers per pick (the fairest ones: see below).
CANDIDATES_READ = 50


@dataclass(frozen=True)
class Claimable:
    """A runnable study with unclaimed trials, and what decides whether it timed out."""

    id: str
    optuna_study_name: str
    started_at: datetime | None
    timeout_s: float | None
    plugin: str | None = None  # the task plugin its trials need (None: the built-in task)
    tenant_running: int = 0  # trials running now in all runnable studies of its tenant


def claimable_studies(
    session: Session, limit: int = CANDIDATES_READ, plugins: Collection[str] | None = None
) -> list[Claimable]:
    """Queued or running studies with trials left to claim, fairest first: those of the
    tenants with the fewest running trials, then the oldest. Only the columns a pick needs
    (the spec is not loaded, only its timeout and task plugin).

    Why per tenant: oldest first alone made a tenant's study wait behind every queued trial
    of another tenant's earlier studies; now each free slot goes to the tenant running
    least, so tenants share the workers' trial slots (round robin when all have work).

    With `plugins` (those installed where the worker runs), only the studies it can run:
    filtered in SQL, so studies needing a plugin it lacks never fill its `limit`.
    """
    plugin = Study.spec[("task", "plugin")].as_string()
    running = _running_per_tenant()
    tenant_running = func.coalesce(running.c.running, 0)
    stmt = (
        select(
            Study.id,
            Study.optuna_study_name,
            Study.started_at,
            Study.spec["timeout_s"].as_float(),
            plugin,
            tenant_running,
        )
        .outerjoin(running, running.c.tenant_id == Study.tenant_id)
        .where(Study.status.in_(RUNNABLE), Study.trials_claimed < Study.n_trials)
        .order_by(tenant_running, Study.created_at, Study.id)
        .limit(limit)
    )
    if plugins is not None:
        stmt = stmt.where(or_(plugin.is_(None), plugin.in_(sorted(plugins))))
    return [Claimable(*row) for row in session.execute(stmt)]


def _running_per_tenant() -> sa.Subquery:
    """(tenant_id, running): RUNNING trials of each tenant's runnable studies."""
    return (
        select(Study.tenant_id, func.count().label("running"))
        .select_from(
            optuna_trials.join(
                optuna_studies, optuna_studies.c.study_id == optuna_trials.c.study_id
            ).join(Study, Study.optuna_study_name == optuna_studies.c.study_name)
        )
        .where(Study.status.in_(RUNNABLE), optuna_trials.c.state == "RUNNING")
        .group_by(Study.tenant_id)
        .subquery()
    )


def active_studies(session: Session) -> list[tuple[str, str]]:
    """(id, Optuna study name) of every queued or running study: what a sweep looks after."""
    stmt = select(Study.id, Study.optuna_study_name).where(Study.status.in_(RUNNABLE))
    return [(str(study_id), str(name)) for study_id, name in session.execute(stmt)]


def study_status(session: Session, study_id: str) -> str | None:
    """The study's status, or None when it was deleted (read while its trial trains)."""
    status = session.scalar(select(Study.status).where(Study.id == study_id))
    return None if status is None else str(status)
