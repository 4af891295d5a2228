"""Workers advertise what they can run in their liveness rows; the API refuses a task plugin
no live worker offers and lists what is on offer (`/v1/tasks`); a worker reads only the
studies it can run. Real TestClient, real SQLite and PostgreSQL, no training."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from search import store
from search.worker.config import WorkerConfig
from search.worker.liveness import Liveness
from search.worker.resources import WorkerResources
from tests.conftest import ClientFactory

GRACE_S = 30  # the API's default grace period: the live window
PLUGIN_STUDY = {"task": {"plugin": "tiny-counted"}, "n_trials": 1}


@contextmanager
def session_on(db_url: str) -> Iterator[Session]:
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def register(
    db_url: str,
    worker_id: str,
    plugins: dict[str, str],
    device: str = "CPU",
    seen_s_ago: float = 0.0,
) -> None:
    """A worker's row, written by the function the worker itself uses."""
    with session_on(db_url) as session:
        store.register_worker(
            session,
            worker_id,
            host="node-1",
            pid=4242,
            device=device,
            plugins=plugins,
            now=store.utcnow() - timedelta(seconds=seen_s_ago),
        )


def plugin_errors(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 422, response.text
    return [e for e in response.json()["errors"] if e["field"] == "task.plugin"]


def test_a_plugin_study_needs_a_live_worker_that_offers_the_plugin(
    app_client: TestClient, db_url: str
) -> None:
    [none] = plugin_errors(app_client.post("/v1/studies", json=PLUGIN_STUDY))
    assert "'tiny-counted'" in none["message"] and "on offer: none" in none["message"]
    assert "no worker is running" in none["message"]
    register(db_url, "p" * 32, {})  # a live worker without plugins: not "no worker"
    [bare] = plugin_errors(app_client.post("/v1/studies", json=PLUGIN_STUDY))
    assert bare["message"].endswith("on offer: none (1 live worker offers no plugin)")
    register(db_url, "w" * 32, {"example-blobs": "0.1.0", "failing-data": "0.0.1"})
    [other] = plugin_errors(app_client.post("/v1/studies", json=PLUGIN_STUDY))
    assert other["message"].endswith("plugins on offer: example-blobs, failing-data")
    # a worker last seen before the window is dead: what it offered does not count
    register(db_url, "d" * 32, {"tiny-counted": "0.0.1"}, seen_s_ago=GRACE_S + 5)
    [stale] = plugin_errors(app_client.post("/v1/studies", json=PLUGIN_STUDY))
    assert "'tiny-counted'" in stale["message"] and "on offer: example-blobs" in stale["message"]
    register(db_url, "t" * 32, {"tiny-counted": "0.0.1"})
    created = app_client.post("/v1/studies", json=PLUGIN_STUDY)
    assert created.status_code == 201, created.text
    # a study without a plugin never needed a worker to exist
    assert app_client.post("/v1/studies", json={"n_trials": 1}).status_code == 201


def test_the_check_can_be_turned_off_for_workers_that_start_later(
    client_factory: ClientFactory,
) -> None:
    with client_factory(require_live_plugin=False) as api:
        created = api.post("/v1/studies", json=PLUGIN_STUDY)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "queued"


def test_tasks_lists_what_the_live_workers_offer(app_client: TestClient, db_url: str) -> None:
    assert app_client.get("/v1/tasks").json() == {
        "workers": 0,
        "live_within_s": GRACE_S,
        "plugins": [],
        "devices": [],
    }
    register(db_url, "a" * 32, {"tiny-counted": "0.0.1", "example-blobs": "0.1.0"})
    register(db_url, "b" * 32, {"tiny-counted": "0.0.2"}, device="GPU:0 NVIDIA H200")
    register(db_url, "c" * 32, {"gone": "1.0"}, device="GPU:1 NVIDIA H200", seen_s_ago=GRACE_S + 1)
    assert app_client.get("/v1/tasks").json() == {
        "workers": 2,
        "live_within_s": GRACE_S,
        "plugins": [
            {"name": "example-blobs", "versions": ["0.1.0"], "workers": 1, "devices": ["CPU"]},
            {
                "name": "tiny-counted",
                "versions": ["0.0.1", "0.0.2"],
                "workers": 2,
                "devices": ["CPU", "GPU:0 NVIDIA H200"],
            },
        ],
        "devices": [{"device": "CPU", "workers": 1}, {"device": "GPU:0 NVIDIA H200", "workers": 1}],
    }
    metrics = app_client.get("/metrics").text.splitlines()
    assert "lrsearch_live_workers 2" in metrics


def test_tasks_needs_a_token_when_auth_is_on(client_factory: ClientFactory) -> None:
    with client_factory(auth=True) as api:
        assert api.get("/v1/tasks").status_code == 401


def test_registering_again_refreshes_the_row_and_prunes_day_old_ones(db_url: str) -> None:
    store.upgrade(db_url)
    register(db_url, "a" * 32, {"x": "1"}, seen_s_ago=GRACE_S + 5)
    register(db_url, "old" + "0" * 29, {"y": "1"}, seen_s_ago=2 * 86400)
    with session_on(db_url) as session:
        assert store.live_workers(session, GRACE_S) == []
    register(db_url, "a" * 32, {"x": "2"}, device="GPU:0 A100")
    with session_on(db_url) as session:
        [live] = store.live_workers(session, GRACE_S)
        ids = set(session.scalars(select(store.WorkerRow.id)))
    assert (live.id, live.plugins, live.device) == ("a" * 32, {"x": "2"}, "GPU:0 A100")
    assert ids == {"a" * 32}  # the day-old row was pruned


def test_a_worker_reads_only_studies_it_can_run(client_factory: ClientFactory, db_url: str) -> None:
    with client_factory(require_live_plugin=False, max_running_studies=100) as api:
        plugged = [api.post("/v1/studies", json=PLUGIN_STUDY).json()["id"] for _ in range(3)]
        plain = api.post("/v1/studies", json={"n_trials": 1}).json()["id"]
        other = api.post("/v1/studies", json={"task": {"plugin": "other"}}).json()["id"]
    with session_on(db_url) as session:
        without = store.claimable_studies(session, limit=2, plugins=frozenset())
        having = store.claimable_studies(session, plugins=frozenset({"tiny-counted"}))
        unfiltered = store.claimable_studies(session)
    # the three older plugin studies do not fill the read of a worker that cannot run them
    assert [c.id for c in without] == [plain]
    assert [c.id for c in having] == [*plugged, plain]
    assert [c.id for c in unfiltered] == [*plugged, plain, other]
    assert {c.plugin for c in having} == {"tiny-counted", None}


def test_a_running_worker_keeps_its_row_fresh_and_removes_it_on_exit(
    db_url: str, tmp_path: Path
) -> None:
    store.upgrade(db_url)
    config = WorkerConfig(db_url, tmp_path / "data", heartbeat_interval=1)
    resources = WorkerResources(config, threading.Event())
    try:
        with Liveness(resources, {"tiny-counted": "0.0.1"}, "CPU") as liveness:
            with resources.sessions() as session:
                [row] = store.live_workers(session, GRACE_S)
            assert (row.id, row.plugins, row.device) == (
                liveness.worker_id,
                {"tiny-counted": "0.0.1"},
                "CPU",
            )
            with resources.sessions() as session:  # pruned by someone: the next beat re-adds it
                store.remove_worker(session, liveness.worker_id)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with resources.sessions() as session:
                    rows = store.live_workers(session, GRACE_S)
                if rows:
                    break
                time.sleep(0.1)
            assert [r.id for r in rows] == [row.id] and rows[0].last_seen > row.last_seen
            assert rows[0].current_trial is None  # idle
            resources.current_trial = "s1/7"  # what the trial run sets while it trains
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with resources.sessions() as session:
                    [now] = store.live_workers(session, GRACE_S)
                if now.current_trial == "s1/7":
                    break
                time.sleep(0.1)
            assert now.current_trial == "s1/7"
        with resources.sessions() as session:
            assert store.live_workers(session, GRACE_S) == []
    finally:
        resources.engine.dispose()
