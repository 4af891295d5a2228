"""A real in-process worker with a memory limit: a trial whose model takes the worker past it
fails as out of memory (not retried), and the same worker goes on to finish the next study."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from search.worker.memory_guard import rss_bytes
from tests.integration.test_worker import TINY, status, submit, wait_for, worker_thread

pytestmark = [pytest.mark.slow, pytest.mark.serial]
MIB = 1024 * 1024
#: Above a warm worker's own needs (a small model's graphs, Optuna, the dataset), far below
#: the wide model's (~34M weights: with their initial copies, gradients and Adam's moments
#: over 600 MiB).
HEADROOM_MB = 250
WIDE = {**TINY, "model": {"kind": "mlp", "hidden": [4096, 4096, 4096]}, "epochs": 1}


def _warm_up() -> None:
    """TensorFlow and Keras loaded and a small model trained once, as in a warm worker."""
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16), keras.layers.Dense(10)])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.zeros((256, 64)), np.zeros(256), epochs=2, verbose=0)


def test_a_trial_over_the_memory_limit_fails_alone_and_a_fresh_worker_goes_on(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    _warm_up()
    limit_mb = rss_bytes() // MIB + HEADROOM_MB
    wide = submit(app_client, task=WIDE, strategies=["constant"], n_trials=1)
    with worker_thread(db_url, tmp_path / "data", memory_limit_mb=limit_mb):
        wait_for(lambda: status(app_client, wide)["status"] == "failed", 120, "the wide study")
    # The worker thread ended cleanly (worker_thread joins it and asserts so): after the
    # cleanup it either stopped itself, still over its limit (Keras often keeps what the wide
    # model took), or was going on under it (in a process that had freed more before, as in
    # the whole suite); it never died of the trial.
    trials = app_client.get(f"/v1/studies/{wide}/trials").json()["items"]
    assert [t["state"] for t in trials] == ["fail"]  # one trial, not retried
    reason = trials[0]["fail_reason"]
    assert reason.startswith("out of memory: worker RSS ")
    assert reason.endswith(f"over the limit {limit_mb} MiB (LRSEARCH_WORKER_MEMORY_MB)")
    body = status(app_client, wide)
    assert body["status"] == "failed" and "out of memory" in body["error"]

    # The next study is finished by a fresh worker, as its supervisor would start one (here:
    # in the same process, its limit above what the first one left behind).
    small = submit(app_client, strategies=["constant"], n_trials=2)
    fresh_limit = rss_bytes() // MIB + HEADROOM_MB
    with worker_thread(db_url, tmp_path / "data", memory_limit_mb=fresh_limit) as fresh:
        wait_for(lambda: status(app_client, small)["status"] == "completed", 120, "small study")
        assert not fresh.trials.memory_exhausted and not fresh.stop.is_set()
    assert status(app_client, small)["progress"]["complete"] == 2
