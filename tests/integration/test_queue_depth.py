"""The runnable trial slots (what KEDA scales the workers by) count what the store considers
runnable, on SQLite and PostgreSQL, through the real slot operations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from search import store


@dataclass
class Db:
    session: Session
    storage: optuna.storages.RDBStorage

    def study(self, n_trials: int) -> tuple[str, optuna.Study]:
        """A study row and its Optuna study, as the API creates them."""
        name = f"lrsearch-{store.new_id()}"
        optuna_study = optuna.create_study(storage=self.storage, study_name=name)
        tenant = store.get_or_create_tenant(self.session, "queue")
        row = store.Study(
            tenant_id=tenant.id, name="q", spec={}, n_trials=n_trials, optuna_study_name=name
        )
        self.session.add(row)
        self.session.commit()
        return row.id, optuna_study

    def start(self, study_id: str, study: optuna.Study) -> optuna.Trial:
        """What a worker does: claim a slot, then ask (the trial is RUNNING)."""
        assert store.claim_slot(self.session, study_id)
        return study.ask()


@pytest.fixture
def db(db_url: str) -> Iterator[Db]:
    store.upgrade(db_url)
    engine = store.make_engine(db_url)
    storage = store.optuna_storage(db_url)
    try:
        with store.session_factory(engine)() as session:
            yield Db(session, storage)
    finally:
        storage.engine.dispose()
        engine.dispose()


def store_view(session: Session) -> int:
    """The same number from the store's other reads: the unclaimed slots of the runnable
    studies, plus their RUNNING trials."""
    runnable = store.runnable_studies(session, 1000)
    unclaimed = sum(s.n_trials - s.trials_claimed for s in runnable)
    rows = session.scalars(sa.select(store.Study).where(store.Study.status.in_(store.RUNNABLE)))
    running = store.running_trial_counts(session, [s.optuna_study_name for s in rows])
    return unclaimed + sum(running.values())


def counted(session: Session) -> int:
    """runnable_trial_slots, checked against the SQL text KEDA polls and the store's view."""
    value = store.runnable_trial_slots(session)
    keda = session.execute(sa.text(store.runnable_trial_slots_sql())).scalar_one()
    assert int(keda) == value == store_view(session)
    return value


def test_runnable_trial_slots_follow_claims_finishes_and_cancels(db: Db) -> None:
    s = db.session
    assert counted(s) == 0
    a, study_a = db.study(5)
    b, study_b = db.study(3)
    c, study_c = db.study(4)
    assert counted(s) == 12 and store.queue_depth(s) == 12

    first, second = db.start(a, study_a), db.start(a, study_a)
    assert counted(s) == 12, "a claimed slot whose trial runs still needs its worker"
    assert store.queue_depth(s) == 10
    study_a.tell(first, 0.5)
    assert counted(s) == 11, "a finished trial frees its worker"

    study_a.tell(second, state=TrialState.FAIL)
    failed_id = study_a.get_trials(deepcopy=False)[-1]._trial_id
    study_a.enqueue_trial({})  # its retry waits for the slot given back
    assert store.release_slot(s, a, failed_id)
    assert counted(s) == 11, "the retry runs in the slot given back: no extra worker"

    for _ in range(3):
        db.start(b, study_b)
    assert store.queue_depth(s) == 8 and counted(s) == 11
    assert store.finish_study(s, b, "completed")
    assert counted(s) == 8, "a finished study needs no worker, even for trials still open"

    db.start(c, study_c)
    assert store.finish_study(s, c, "cancelled")
    assert counted(s) == 4, "a cancelled study's running trial stops at its epoch"

    optuna.create_study(storage=db.storage, study_name="not-lrsearch").ask()
    assert counted(s) == 4, "trials of Optuna studies that are not lrsearch's do not count"


def test_a_closed_budget_leaves_only_the_running_trials(db: Db) -> None:
    study_id, study = db.study(6)
    db.start(study_id, study)
    store.close_budget(db.session, study_id)  # the study's timeout passed
    assert counted(db.session) == 1
