"""Task plugins end to end, over HTTP only: `lrsearch serve` (API + a worker process) with
the example plugin (examples/plugin) and two test plugins installed as packages are
(`tests/plugins.py`: a folder with their code and `.dist-info` on the PYTHONPATH, which is
what pip's install leaves for importlib.metadata), real TFRecord shards, real training.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.plugins import DATA_DOWN, make_plugin_dir, plugins_on_path
from tests.servers import ROOT, Served, serve, wait_final, wait_offered

pytestmark = pytest.mark.slow
STUDY = ROOT / "examples" / "plugin" / "study.yaml"
PLUGINS = {"example-blobs", "failing-data", "tiny-counted"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = make_plugin_dir(tmp_path_factory.mktemp("plugins"))
    with plugins_on_path(folder) as env, serve(tmp_path_factory.mktemp("serve"), env) as running:
        with httpx.Client(base_url=running.url) as http:  # a plugin study needs a live worker
            wait_offered(http, PLUGINS, 120)
        yield running


def test_lrsearch_tasks_lists_what_the_worker_offers(served: Served) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "service.cli", "--url", served.url, "tasks"],
        cwd=ROOT,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    header, *rows, devices = run.stdout.strip().splitlines()
    assert header.split() == ["plugin", "versions", "workers", "devices"]
    listed = {row.split()[0]: row.split()[1:3] for row in rows}
    assert listed == {
        "example-blobs": ["0.1.0", "1"],
        "failing-data": ["0.0.1", "1"],
        "tiny-counted": ["0.0.1", "1"],
    }
    # one worker, on the CPU or its GPUs ("GPU:0 <model>")
    assert devices.startswith("1 live worker(s)") and ("CPU x1" in devices or "GPU:" in devices)


def _small(cache: Path) -> list[str]:
    """--set overrides that keep the example study to a few seconds."""
    return [
        "--set",
        "n_trials=3",
        "--set",
        "task.epochs=3",
        "--set",
        "task.plugin_args.n_train=1200",
        "--set",
        "task.plugin_args.n_val=300",
        "--set",
        f"task.plugin_args.cache_dir={cache}",
    ]


def test_the_example_plugin_study_completes_through_the_cli(served: Served, tmp_path: Path) -> None:
    cache = tmp_path / "shards"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "--url",
            served.url,
            "submit",
            str(STUDY),
            *_small(cache),
            "--wait",
            "--poll",
            "0.3",
        ],
        cwd=ROOT,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr + served.log.read_text()[-3000:]
    study_id = run.stdout.strip()
    with httpx.Client(base_url=served.url) as http:
        study = http.get(f"/v1/studies/{study_id}").json()
        assert study["status"] == "completed" and study["progress"]["failed"] == 0
        best = http.get(f"/v1/studies/{study_id}/best").json()
        trial = http.get(f"/v1/studies/{study_id}/trials/{best['trial_number']}").json()
    # the plugin's own metric is the objective, its pipeline read the shards it wrote
    assert trial["history"]["val_error_rate"][-1] == pytest.approx(best["value"])
    assert 0.0 <= best["value"] < 0.5 and "accuracy" in trial["history"]
    assert len(trial["lr"]) == 3 and best["export"]["optimizer"]["class_name"] == "Adam"
    assert sorted(p.name for p in next(cache.iterdir()).glob("*.tfrecord")) == [
        "train-00000.tfrecord",
        "train-00001.tfrecord",
        "train-00002.tfrecord",
        "train-00003.tfrecord",
        "val-00000.tfrecord",
    ]


def test_a_plugin_that_raises_fails_its_study_with_the_message(served: Served) -> None:
    spec = {"task": {"plugin": "failing-data", "epochs": 2}, "n_trials": 4}
    bad_args = {"task": {"plugin": "tiny-counted", "plugin_args": {"rows": "many"}}}
    counted = {
        "task": {"plugin": "tiny-counted", "epochs": 2, "batch_size": 32},
        "n_trials": 2,
        "strategies": ["constant"],
    }
    with httpx.Client(base_url=served.url) as http:
        failing = http.post("/v1/studies", json=spec).json()["id"]
        invalid = http.post("/v1/studies", json=bad_args).json()["id"]
        healthy = http.post("/v1/studies", json=counted).json()["id"]
        typo = {**counted, "objective": {"metric": "val_acc", "direction": "maximize"}}
        mistyped = http.post("/v1/studies", json=typo).json()["id"]
        failed = wait_final(http, failing, 120)
        refused = wait_final(http, invalid, 120)
        done = wait_final(http, healthy, 120)  # the same worker goes on with other studies
        unreported = wait_final(http, mistyped, 120)
        typo_trials = http.get(f"/v1/studies/{mistyped}/trials").json()["items"]
        trials = http.get(f"/v1/studies/{failing}/trials").json()["items"]
        healthy_trial = http.get(f"/v1/studies/{healthy}/trials/0").json()
    assert failed["status"] == "failed" and trials == []  # failed before any trial ran
    assert failed["error"] == (
        f"task plugin 'failing-data': datasets() raised ConnectionError: {DATA_DOWN}"
    )
    assert refused["status"] == "failed"
    assert "task.plugin_args.rows" in refused["error"] and "integer" in refused["error"]
    assert done["status"] == "completed" and done["progress"]["complete"] == 2
    # a metric the plugin's model does not report fails the study in the preflight
    assert unreported["status"] == "failed" and typo_trials == []
    assert "objective.metric" in unreported["error"] and "val_accuracy" in unreported["error"]
    # tiny-counted does not declare its steps: the preflight counted 200 rows / 32 = 7
    assert healthy_trial["params"] and len(healthy_trial["lr"]) == 2
    assert served.process.poll() is None and served.worker_pids()
