"""The API's answer cache: answers are reused only while a study's trials are unchanged.

Real databases (SQLite and PostgreSQL through `db_url`), real Optuna writes: every test
warms the cache, changes the trials the way a worker (or anyone with Optuna) does, and
checks that the very next read shows the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from search import store
from service.answers import AnswerCache, ReadCoalescer
from service.app import create_app
from service.cli.server import settings_env
from service.settings import Settings
from tests.conftest import LOCAL_BASE_URL
from tests.integration.test_api import (
    count_statements,
    create,
    optuna_study,
    problem,
    trial,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def best_number(client: TestClient, study_id: str) -> int:
    response = client.get(f"/v1/studies/{study_id}/best")
    assert response.status_code == 200, response.text
    return int(response.json()["trial_number"])


def by_value(client: TestClient, study_id: str, limit: int = 50) -> list[int]:
    page = client.get(f"/v1/studies/{study_id}/trials", params={"order": "value", "limit": limit})
    assert page.status_code == 200, page.text
    return [t["number"] for t in page.json()["items"]]


def test_best_and_status_follow_a_better_trial_added_later(
    app_client: TestClient, db_url: str
) -> None:
    study_id = create(app_client)
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.5))
        study.add_trial(trial(value=0.7))
    for _ in range(2):  # the second read is answered from the cache
        assert best_number(app_client, study_id) == 0
        assert app_client.get(f"/v1/studies/{study_id}").json()["best_trial"] == 0
    assert by_value(app_client, study_id) == [0, 1]

    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.1, lr=0.02))
    best = app_client.get(f"/v1/studies/{study_id}/best").json()
    assert best["trial_number"] == 2 and best["value"] == pytest.approx(0.1)
    assert best["params"] == {"initial_lr": 0.02}
    detail = app_client.get(f"/v1/studies/{study_id}").json()
    assert detail["best_trial"] == 2 and detail["best_value"] == pytest.approx(0.1)
    assert detail["progress"]["complete"] == 3
    assert by_value(app_client, study_id) == [2, 0, 1]


def test_maximized_best_follows_new_trials(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client, objective={"metric": "val_accuracy"})
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.8))
    assert best_number(app_client, study_id) == 0
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.6))  # worse: the best stays
    assert best_number(app_client, study_id) == 0
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.9))
    assert best_number(app_client, study_id) == 2
    assert by_value(app_client, study_id) == [2, 0, 1]


def test_a_running_trial_is_seen_as_it_reports_and_finishes(
    app_client: TestClient, db_url: str
) -> None:
    """A state change alone (same trials, same last number) must show at once."""
    study_id = create(app_client)
    base = f"/v1/studies/{study_id}"
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.5))
        running = study.ask()
        running.report(0.9, 0)
        assert best_number(app_client, study_id) == 0
        detail = app_client.get(base).json()
        assert detail["progress"]["running"] == 1 and detail["progress"]["complete"] == 1
        assert _running_steps(app_client, base) == [0]

        running.report(0.4, 1)  # a running trial's metrics change, its state does not
        assert _running_steps(app_client, base) == [0, 1]
        assert by_value(app_client, study_id) == [0, 1]

        study.tell(running, 0.2)
        detail = app_client.get(base).json()
        assert detail["progress"]["running"] == 0 and detail["progress"]["complete"] == 2
        assert detail["best_trial"] == 1 and detail["best_value"] == pytest.approx(0.2)
        assert best_number(app_client, study_id) == 1
        assert by_value(app_client, study_id) == [1, 0]


def _running_steps(client: TestClient, base: str) -> list[int]:
    items = client.get(f"{base}/trials", params={"state": "running"}).json()["items"]
    assert len(items) == 1
    return [v["step"] for v in items[0]["intermediate_values"]]


def test_repeated_reads_of_unchanged_trials_cost_one_statement(
    app_client: TestClient, db_url: str
) -> None:
    study_id = create(app_client)
    with optuna_study(db_url, study_id) as study:
        for i in range(5):
            study.add_trial(trial(value=0.5 + i / 10))
    for suffix in ("", "/best", "/trials?order=value&limit=3"):
        path = f"/v1/studies/{study_id}{suffix}"
        first, again = count_statements(app_client, path), count_statements(app_client, path)
        assert first > 1, suffix
        assert again == 1, suffix  # only the study row with its trials' version


@contextmanager
def two_processes(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """Two API apps on one database, each with its own answer cache (like --processes 2)."""
    settings = Settings(database_url=db_url, data_dir=tmp_path / "data")
    with (
        TestClient(create_app(settings), base_url=LOCAL_BASE_URL) as a,
        TestClient(create_app(settings), base_url=LOCAL_BASE_URL) as b,
    ):
        yield a, b


def test_cancel_and_delete_show_at_once_in_another_process(db_url: str, tmp_path: Path) -> None:
    with two_processes(db_url, tmp_path) as (a, b):
        study_id = create(a)
        with optuna_study(db_url, study_id) as study:
            study.add_trial(trial(value=0.3))
        base = f"/v1/studies/{study_id}"
        for client in (a, b):  # warm both caches
            assert client.get(base).json()["status"] == "queued"
            assert best_number(client, study_id) == 0
            assert by_value(client, study_id) == [0]

        assert a.post(f"{base}/cancel").status_code == 200
        assert b.get(base).json()["status"] == "cancelled"
        assert b.get(base).json()["finished_at"] is not None

        assert a.delete(base).status_code == 204
        for client in (a, b):
            problem(client.get(base), 404)
            problem(client.get(f"{base}/best"), 404)
            problem(client.get(f"{base}/trials"), 404)


def test_another_tenants_study_stays_404_after_its_owner_warmed_the_cache(
    auth_client: Any, db_url: str
) -> None:
    client = auth_client.client
    study_id = create(client, headers=auth_client.headers("a"))
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.3))
    base = f"/v1/studies/{study_id}"
    for suffix in ("", "/best", "/trials?order=value"):
        assert client.get(base + suffix, headers=auth_client.headers("a")).status_code == 200
        problem(client.get(base + suffix, headers=auth_client.headers("b")), 404)


def test_the_cache_is_exact_per_version_and_bounded() -> None:
    v1 = store.TrialsVersion(last_number=3, running=1, waiting=0)
    v2 = store.TrialsVersion(last_number=3, running=0, waiting=0)
    cache = AnswerCache(max_bytes=1000)
    cache.put("s", "best", v1, b"x", size=100)
    assert cache.get("s", "best", v1) == b"x"
    assert cache.get("s", "best", v2) is None  # a trial finished: recompute
    assert cache.get("s", "best", v1) is None  # and the stale entry is gone

    for i in range(20):
        cache.put("s", i, v1, i, size=100)
    assert len(cache) == 10  # least recently used answers make room
    assert cache.get("s", 19, v1) == 19 and cache.get("s", 0, v1) is None
    cache.put("s", "huge", v1, b"", size=500)  # larger than an eighth: never kept
    assert cache.get("s", "huge", v1) is None
    cache.put("other", "best", v1, b"y", size=10)
    cache.forget("s")
    assert len(cache) == 1 and cache.get("other", "best", v1) == b"y"


def test_api_processes_rebuild_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        database_url="sqlite:///x.db",
        data_dir=tmp_path,
        auth=True,
        rate_limit_per_minute=7,
        port=8123,
    )
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


def test_identical_reads_in_flight_share_one_read_that_started_after_them() -> None:
    async def scenario() -> tuple[list[int], list[int], int]:
        coalescer = ReadCoalescer()
        reads = 0
        gate = asyncio.Event()

        async def read() -> int:
            nonlocal reads
            reads += 1
            number = reads
            await gate.wait()
            return number

        first = [asyncio.create_task(coalescer.read("k", read)) for _ in range(3)]
        await asyncio.sleep(0)  # the shared read starts; these three get its answer
        later = [asyncio.create_task(coalescer.read("k", read)) for _ in range(3)]
        await asyncio.sleep(0)  # arrived while it runs: they wait for a read of their own
        gate.set()
        return list(await asyncio.gather(*first)), list(await asyncio.gather(*later)), reads

    first, later, reads = asyncio.run(scenario())
    assert first == [1, 1, 1] and later == [2, 2, 2] and reads == 2
