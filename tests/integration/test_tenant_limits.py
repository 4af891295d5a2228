"""The rate limit and the study quota hold under concurrent creations, across API processes
(two apps on one database), on SQLite and PostgreSQL (issue 14 item 5)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import optuna
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from search import store
from tests.conftest import ClientFactory

CONCURRENT = 16
SPEC = {"n_trials": 3, "task": {"epochs": 2}}


@contextmanager
def two_apps(client_factory: ClientFactory, **settings: Any) -> Iterator[list[TestClient]]:
    """Two API apps on one database: two API replicas, each with its own process state."""
    with ExitStack() as stack:
        apps = [stack.enter_context(client_factory(**settings)) for _ in range(2)]
        for app in apps:  # the default tenant exists before the race (a read: not counted)
            assert app.get("/v1/studies").status_code == 200
        yield apps


def race(apps: list[TestClient], n: int = CONCURRENT) -> list[tuple[int, str, str]]:
    """`n` creations released together, alternating between the apps, each from its own
    thread (so its own DB connection): (status, problem type slug, Retry-After) of each."""
    gate = threading.Barrier(n)

    def post(i: int) -> tuple[int, str, str]:
        gate.wait()
        response = apps[i % len(apps)].post("/v1/studies", json=SPEC)
        kind = "" if response.status_code == 201 else response.json()["type"].rsplit(":", 1)[-1]
        return response.status_code, kind, response.headers.get("retry-after", "")

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(post, range(n)))


def stored_studies(db_url: str) -> tuple[int, int]:
    """(our study rows, Optuna studies): a refused creation must leave neither behind."""
    engine = store.make_engine(db_url)
    try:
        with Session(engine) as session:
            rows = int(session.scalar(select(func.count()).select_from(store.Study)) or 0)
    finally:
        engine.dispose()
    storage = store.optuna_storage(db_url)
    try:
        return rows, len(optuna.get_all_study_summaries(storage))
    finally:
        storage.engine.dispose()


def test_concurrent_creations_get_exactly_the_rate_limit(
    client_factory: ClientFactory, db_url: str
) -> None:
    with two_apps(client_factory, rate_limit_per_minute=10, max_running_studies=100) as apps:
        results = race(apps)
        statuses = Counter(status for status, _, _ in results)
        assert statuses == {201: 10, 429: 6}, results
        assert {kind for status, kind, _ in results if status == 429} == {"rate-limited"}
        assert all(1 <= int(wait) <= 60 for status, _, wait in results if status == 429)
        # The window is shared: the other replica refuses the next one too.
        assert apps[0].post("/v1/studies", json=SPEC).status_code == 429
        assert apps[1].post("/v1/studies", json=SPEC).status_code == 429
    assert stored_studies(db_url) == (10, 10)


def test_concurrent_creations_get_exactly_the_quota(
    client_factory: ClientFactory, db_url: str
) -> None:
    # The numbers: a rate of 10 a minute and a quota of 6 active studies.
    with two_apps(client_factory, rate_limit_per_minute=10, max_running_studies=6) as apps:
        results = race(apps)
    kinds = Counter(kind or "created" for _, kind, _ in results)
    # 10 requests pass the rate limit (6 refused at once); of those, the quota takes 6.
    assert kinds == {"created": 6, "rate-limited": 6, "quota-exceeded": 4}, results
    assert stored_studies(db_url) == (6, 6)  # refused creations left no Optuna study behind


def test_a_rate_slot_is_taken_once_by_concurrent_sessions(db_url: str) -> None:
    store.upgrade(db_url)
    engine = store.make_engine(db_url)
    sessions = store.session_factory(engine)
    try:
        with sessions() as session:
            tenant = store.get_or_create_tenant(session, "racer").id
        gate = threading.Barrier(CONCURRENT)

        def take(_: int) -> int | None:
            gate.wait()
            with sessions() as session:
                return store.take_rate_slot(session, tenant, "token:x", 5, window_s=30)

        with ThreadPoolExecutor(CONCURRENT) as pool:
            waits = list(pool.map(take, range(CONCURRENT)))
        assert waits.count(None) == 5
        assert all(w is not None and 1 <= w <= 30 for w in waits if w is not None)
        with sessions() as session:  # another key of the tenant has its own window
            assert store.take_rate_slot(session, tenant, "token:y", 5, window_s=30) is None
            rows = session.scalar(select(func.count()).select_from(store.RateEvent))
        assert rows == 6  # refused requests are not recorded
    finally:
        engine.dispose()


def test_rate_events_leave_the_window_and_are_pruned(db_url: str) -> None:
    store.upgrade(db_url)
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            tenant = store.get_or_create_tenant(session, "pruned").id
            old = store.utcnow().replace(year=2020)
            session.add_all(store.RateEvent(rate_key="token:z", at=old) for _ in range(3))
            session.commit()
            assert store.take_rate_slot(session, tenant, "token:z", 1) is None
            assert store.take_rate_slot(session, tenant, "token:z", 1) is not None
            ats = list(session.scalars(select(store.RateEvent.at)))
        assert len(ats) == 1 and ats[0] > old
    finally:
        engine.dispose()
