"""Which studies a worker takes, by the task plugins installed where it runs (SQLite and
PostgreSQL; no training)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from search import store
from search.worker import Worker, WorkerConfig
from tests.plugins import make_plugin_dir, plugins_on_path


def test_a_worker_claims_only_studies_whose_plugin_it_has(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    engine = store.make_engine(db_url)  # a live worker offers the plugin: the API takes it
    with store.session_factory(engine)() as session:
        offer = {"tiny-counted": "0.0.1"}
        store.register_worker(session, "w" * 32, host="h", pid=1, device="CPU", plugins=offer)
    engine.dispose()
    plain = app_client.post("/v1/studies", json={"n_trials": 1}).json()["id"]
    needs = {"task": {"plugin": "tiny-counted"}, "n_trials": 1}
    plugged = app_client.post("/v1/studies", json=needs).json()["id"]
    config = WorkerConfig(db_url, tmp_path / "data")
    without = Worker(config)
    try:
        assert "tiny-counted" not in without.plugins
        assert without._candidates() == [plain]
    finally:
        without.resources.engine.dispose()
    with plugins_on_path(make_plugin_dir(tmp_path / "site")):
        with_plugin = Worker(config)
    try:
        assert "tiny-counted" in with_plugin.plugins
        assert set(with_plugin._candidates()) == {plain, plugged}
    finally:
        with_plugin.resources.engine.dispose()
