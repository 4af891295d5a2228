"""`lrsearch db wait`: what a Kubernetes init container runs while the migration Job upgrades.
On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from search import store
from search.store import engines
from service.cli import main
from service.cli import server as server_cli


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_cli, "DB_WAIT_POLL_S", 0.1)


def wait(db_url: str, timeout_s: float) -> int:
    return main(["--database-url", db_url, "db", "wait", "--timeout", str(timeout_s)])


def test_gives_up_on_a_database_never_migrated(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert wait(db_url, 0.5) == server_cli.EXIT_DB_NOT_READY
    assert 0.5 <= time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert store.head_revision() in err and "no lrsearch tables yet" in err
    assert store.current_revision(db_url) is None, "waiting must never migrate"


def test_returns_once_another_process_has_migrated(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate = threading.Timer(0.5, store.upgrade, args=(db_url,))
    migrate.start()
    try:
        assert wait(db_url, 60) == 0
    finally:
        migrate.join()
    assert f"at head ({store.head_revision()})" in capsys.readouterr().out
    assert store.at_head(db_url)


def test_our_version_is_written_last(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade cut short before its end leaves the waiters waiting: our version table is
    written after Optuna's tables and indexes, so at head means the whole schema is there."""

    def killed(_url: str) -> None:
        raise RuntimeError("the migration pod was killed")

    indexes = engines._ensure_read_indexes
    monkeypatch.setattr(engines, "_ensure_read_indexes", killed)
    with pytest.raises(RuntimeError):
        store.upgrade(db_url)
    assert not store.at_head(db_url) and wait(db_url, 0) == server_cli.EXIT_DB_NOT_READY
    monkeypatch.setattr(engines, "_ensure_read_indexes", indexes)
    store.upgrade(db_url)  # the Job's next attempt
    assert store.at_head(db_url) and wait(db_url, 0) == 0


def test_an_unreachable_database_is_waited_for_then_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert wait("postgresql://postgres@127.0.0.1:1/nothing", 0.3) == 1
    assert "database unreachable (OperationalError)" in capsys.readouterr().err
