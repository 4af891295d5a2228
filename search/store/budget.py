"""A study's trial budget as the workers spend it: slots claimed, given back, reclaimed
and closed, each one atomic SQL statement on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from search.store.engines import DIALECT_INSERTS
from search.store.notify import announce
from search.store.optuna_tables import optuna_system_attrs
from search.store.schema import FINAL, RUNNABLE, Study, StudyStatus, UTCDateTime, utcnow

# marks a failed trial whose slot was given back for its retry (release_slot runs once)
SLOT_RELEASED = "lrsearch:slot_released"


def claim_slot(session: Session, study_id: str) -> int | None:
    """Reserve one trial of the study; the slot number (1-based) or None when none is left.

    One UPDATE ... RETURNING, so racing workers never over-claim. Commits. The result is
    truthy exactly when a slot was claimed (usable as the bool `claimed`).
    """
    slots = claim_slots(session, study_id, 1)
    return slots[0] if slots else None


def claim_slots(session: Session, study_id: str, most: int) -> list[int]:
    """Reserve up to `most` trials of the study at once (a worker's population); their slot
    numbers, fewer when the study has fewer left, [] when none. Commits.

    The same UPDATE as one claim, repeated in one transaction: the first takes the row's lock
    (PostgreSQL) or the write lock (SQLite) until the commit, so a racing worker waits and then
    sees every slot taken here: never over-claimed, and all or nothing if the commit fails.
    """
    now = utcnow()
    stmt = (
        update(Study)
        .where(
            Study.id == study_id,
            Study.trials_claimed < Study.n_trials,
            Study.status.in_(RUNNABLE),
        )
        .values(
            trials_claimed=Study.trials_claimed + 1,
            status="running",
            started_at=func.coalesce(Study.started_at, sa.literal(now, UTCDateTime())),
            updated_at=now,
        )
        .returning(Study.trials_claimed)
        .execution_options(synchronize_session=False)
    )
    slots: list[int] = []
    for _ in range(most):
        slot = session.execute(stmt).scalar_one_or_none()
        if slot is None:
            break
        slots.append(int(slot))
    session.commit()
    return slots


def release_slot(session: Session, study_id: str, failed_trial_id: int) -> bool:
    """Give back the slot of a failed trial that is retried elsewhere. Never below 0. Commits.

    Once per failed trial: a marker on that trial is written in the same transaction, so a
    release repeated after a lost commit acknowledgement does nothing (it would otherwise let
    the study run one trial over its budget). True when the slot was given back by this call.
    """
    marked = _mark_trial_once(session, failed_trial_id, SLOT_RELEASED)
    if marked:
        stmt = (
            update(Study)
            .where(Study.id == study_id, Study.trials_claimed > 0)
            .values(trials_claimed=Study.trials_claimed - 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        session.execute(stmt)
        announce(session)  # an idle worker can take the slot now
    session.commit()
    return marked


def _mark_trial_once(session: Session, trial_id: int, key: str) -> bool:
    """Add system attribute `key` to an Optuna trial unless it is there (Optuna's unique
    (trial_id, key) decides under concurrency); True when this call added it."""
    insert = DIALECT_INSERTS[session.get_bind().dialect.name]
    stmt = (
        insert(optuna_system_attrs)
        .values(trial_id=trial_id, key=key, value_json="true")
        .on_conflict_do_nothing()
        .returning(optuna_system_attrs.c.trial_id)  # a row only when inserted (rowcount: -1)
    )
    return session.execute(stmt).first() is not None


def reclaim_slots(
    session: Session, study_id: str, *, claimed: int, used: int, idle_since: datetime
) -> bool:
    """Give back slots that were claimed but never became a trial; True when done. Commits.

    A worker that died (or lost the database for good) between its claim and `study.ask`
    leaves `trials_claimed` above the trials that exist, and the study would end short.
    Conditional on the row being unchanged since it was read, so two sweepers heal once.
    """
    if used >= claimed:
        return False
    stmt = (
        update(Study)
        .where(
            Study.id == study_id,
            Study.status.in_(RUNNABLE),
            Study.trials_claimed == claimed,
            Study.updated_at == idle_since,
        )
        .values(trials_claimed=used, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    done = _rowcount(session.execute(stmt)) == 1
    session.commit()
    return done


def runnable_studies(session: Session, limit: int) -> list[Study]:
    """Queued or running studies with unclaimed trials, oldest first."""
    stmt = (
        select(Study)
        .where(Study.status.in_(RUNNABLE), Study.trials_claimed < Study.n_trials)
        .order_by(Study.created_at, Study.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def finish_study(
    session: Session, study_id: str, status: StudyStatus, error: str | None = None
) -> bool:
    """Move a queued/running study to a final status; False if it had already finished.

    Commits. The first caller wins, so a cancel is never overwritten by a late completion.
    """
    if status not in FINAL:
        raise ValueError(f"not a final status: {status!r}")
    now = utcnow()
    stmt = (
        update(Study)
        .where(Study.id == study_id, Study.status.in_(RUNNABLE))
        .values(status=status, finished_at=now, error=error, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    done = _rowcount(session.execute(stmt)) == 1
    session.commit()
    return done


def close_budget(session: Session, study_id: str) -> None:
    """Claim no more trials (the study's timeout passed): n_trials drops to trials_claimed.

    Running trials finish; the study completes when they have. The requested budget stays
    in the spec. Commits.
    """
    stmt = (
        update(Study)
        .where(
            Study.id == study_id,
            Study.status.in_(RUNNABLE),
            Study.trials_claimed < Study.n_trials,
        )
        .values(n_trials=Study.trials_claimed, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)
    session.commit()


def _rowcount(result: Any) -> int:
    return int(result.rowcount)
