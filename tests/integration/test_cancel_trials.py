"""Issue 14 item 12: a cancelled study's waiting trials fail at once (no worker will ever
start them), with the cancel as their reason, and /metrics stops counting them as waiting."""

from __future__ import annotations

import optuna
from fastapi.testclient import TestClient

from search import store

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_cancel_fails_the_waiting_trials(app_client: TestClient, db_url: str) -> None:
    spec = {"n_trials": 4, "task": {"epochs": 1}}
    study_id = app_client.post("/v1/studies", json=spec).json()["id"]
    other_id = app_client.post("/v1/studies", json=spec).json()["id"]
    storage = store.optuna_storage(db_url)
    try:
        for sid in (study_id, other_id):
            study = optuna.load_study(study_name=f"lrsearch-{sid}", storage=storage)
            study.enqueue_trial({"strategy": "constant"})
            study.enqueue_trial({"strategy": "constant"})
    finally:
        storage.engine.dispose()
    assert 'lrsearch_trials{state="waiting"} 4' in app_client.get("/metrics").text

    cancelled = app_client.post(f"/v1/studies/{study_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    metrics = app_client.get("/metrics").text.splitlines()
    assert 'lrsearch_trials{state="waiting"} 2' in metrics, "the other study's stay waiting"
    assert 'lrsearch_trials{state="fail"} 2' in metrics
    trials = app_client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert [t["state"] for t in trials] == ["fail", "fail"]
    assert {t["fail_reason"] for t in trials} == {"study cancelled (before the trial started)"}
    assert app_client.get(f"/v1/studies/{study_id}").json()["progress"]["waiting"] == 0
