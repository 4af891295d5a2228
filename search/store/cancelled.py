"""What a cancel does to a study's trials that no worker runs: its WAITING trials (seeded
defaults, retries) would otherwise wait forever and be counted as waiting by /metrics.
RUNNING ones are left to their worker, which stops them at the next epoch."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from search.outcome import FailureKind
from search.store.optuna_tables import optuna_trials, optuna_user_attrs
from search.store.trials import optuna_study_id

CANCELLED_WAITING = "study cancelled (before the trial started)"


def fail_waiting_trials(session: Session, optuna_study_name: str) -> int:
    """Fail the study's WAITING trials with a cancel's reason, in one transaction (a worker
    popping one at the same moment either got it RUNNING first or finds it failed). Commits;
    how many were failed."""
    stmt = (
        update(optuna_trials)
        .where(
            optuna_trials.c.study_id == optuna_study_id(optuna_study_name),
            optuna_trials.c.state == "WAITING",
        )
        .values(state="FAIL", datetime_complete=datetime.now())  # Optuna's naive local time
        .returning(optuna_trials.c.trial_id)
    )
    ids = list(session.scalars(stmt))
    if ids:
        attrs = {"fail_reason": CANCELLED_WAITING, "fail_kind": FailureKind.CANCELLED.value}
        session.execute(
            delete(optuna_user_attrs).where(
                optuna_user_attrs.c.trial_id.in_(ids), optuna_user_attrs.c.key.in_(list(attrs))
            )
        )
        session.execute(
            insert(optuna_user_attrs),
            [
                {"trial_id": i, "key": key, "value_json": json.dumps(value)}
                for i in ids
                for key, value in attrs.items()
            ],
        )
    session.commit()
    return len(ids)
