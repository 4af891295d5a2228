"""Workers share trial slots between tenants: the tenant running the fewest trials is served
first, then the oldest study (issue 14 item 6). SQLite and PostgreSQL; no training."""

from __future__ import annotations

from pathlib import Path

import optuna

from search import store
from search.worker import Worker, WorkerConfig
from tests.conftest import AuthClient

BIG = {"n_trials": 50, "task": {"epochs": 2}}


def create(auth: AuthClient, tenant: str) -> str:
    response = auth.client.post("/v1/studies", json=BIG, headers=auth.headers(tenant))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def start_trial(db_url: str, study_id: str) -> None:
    """What a worker does when it takes a slot: claim it, then ask Optuna (a RUNNING trial)."""
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            assert store.claim_slot(session, study_id)
    finally:
        engine.dispose()
    storage = store.optuna_storage(db_url)
    try:
        optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage).ask()
    finally:
        storage.engine.dispose()


def test_the_next_slot_goes_to_the_tenant_running_fewest_trials(
    auth_client: AuthClient, db_url: str, tmp_path: Path
) -> None:
    b_first, b_second = create(auth_client, "b"), create(auth_client, "b")
    a_later = create(auth_client, "a")
    start_trial(db_url, b_first)  # tenant B runs one trial; A none
    worker = Worker(WorkerConfig(db_url, tmp_path / "data"))
    try:
        with worker.resources.sessions() as session:
            rows = store.claimable_studies(session)
            assert [r.id for r in store.claimable_studies(session, limit=1)] == [a_later]
        assert [(r.id, r.tenant_running) for r in rows] == [
            (a_later, 0),
            (b_first, 1),
            (b_second, 1),
        ]
        # Oldest first would have picked B's second study (no trial of its own running).
        assert worker._candidates()[0] == a_later
        start_trial(db_url, a_later)  # one each: within a tenant, its idlest study, then age
        assert worker._candidates() == [b_second, b_first, a_later]
        start_trial(db_url, b_second)
        assert worker._candidates()[0] == a_later
    finally:
        worker.resources.engine.dispose()
