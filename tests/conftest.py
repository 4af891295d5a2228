"""Fixtures shared by every test: real databases (SQLite and PostgreSQL) and API clients."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL_TEMPLATE = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
#: TestClient's base URL: with auth off the API answers only loopback names and IP addresses
#: in Host (TestClient's default, `testserver`, is a domain name a page could rebind).
LOCAL_BASE_URL = "http://localhost"


def _pg_admin() -> Any:
    """An autocommit admin connection (CREATE/DROP DATABASE cannot run in a transaction)."""
    import psycopg

    return psycopg.connect(PG_ADMIN_DSN, autocommit=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    try:
        admin = _pg_admin()
    except Exception as exc:
        message = f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    name = f"lrsearch_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_URL_TEMPLATE.format(name=name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file database in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'lrsearch.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(request.getfixturevalue("sqlite_url"))


ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def client_factory(db_url: str, tmp_path: Path) -> ClientFactory:
    """Open a TestClient over `create_app(Settings(...))`; keyword arguments override settings."""
    from service.app import create_app
    from service.settings import Settings

    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        values: dict[str, Any] = {"database_url": db_url, "data_dir": tmp_path / "data"}
        values.update(overrides)
        with TestClient(create_app(Settings(**values)), base_url=LOCAL_BASE_URL) as client:
            yield client

    return make


@pytest.fixture
def app_client(client_factory: ClientFactory) -> Iterator[TestClient]:
    """The API with auth off (the embedded single-user default)."""
    with client_factory() as client:
        yield client


@dataclass
class AuthClient:
    """A client of an auth-enabled API plus one token for each of two tenants."""

    client: TestClient
    token_a: str
    token_b: str
    database_url: str

    def headers(self, tenant: str = "a") -> dict[str, str]:
        token = self.token_a if tenant == "a" else self.token_b
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth_client(client_factory: ClientFactory, db_url: str) -> Iterator[AuthClient]:
    """The API with auth on and tokens for tenants "alice" (a) and "bob" (b)."""
    from search import store
    from service import tokens

    with client_factory(auth=True) as client:
        engine = store.make_engine(db_url)
        try:
            with store.session_factory(engine)() as session:
                token_a = tokens.create_token(session, "alice")
                token_b = tokens.create_token(session, "bob")
        finally:
            engine.dispose()
        yield AuthClient(client, token_a, token_b, db_url)


def at_the_same_moment(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released together by a barrier; their results in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
