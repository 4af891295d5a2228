"""Data on shared storage is streamed, not loaded: a TFRecord dataset several times larger
than the memory a worker process may use trains through `lrsearch serve` (HTTP only); and
datasets by path in the other formats train through a worker.

The cap, cgroup-free: once the worker has TensorFlow loaded and a study behind it, it may
grow HEADROOM beyond its resident memory then. A watchdog reads its VmRSS from
/proc/<pid>/status every few milliseconds and kills it past the cap (a killed worker fails
the test), and its peak (VmHWM, kept by the kernel) is checked at the end, so a spike
between two samples is caught too (reset at the start through /proc/<pid>/clear_refs).
Loading the data would take more than the data's size.
(Not RLIMIT_DATA: it counts the 8 MiB stack each new thread reserves, not memory used, and
tf.data starts a few dozen threads.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from search.worker import Worker, WorkerConfig
from service.app import create_app
from service.settings import Settings
from tests.conftest import LOCAL_BASE_URL
from tests.servers import serve, wait_final

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow

MIB = 1024 * 1024
HEADROOM = 256 * MIB  # what the worker may allocate beyond what it holds once warmed up
FEATURES = 4096  # 16 KiB of float32 per record
TRAIN_BYTES = 1280 * MIB  # 5x the headroom, and more than the whole cap
SHARDS = 4


def status(pid: int) -> dict[str, int]:
    """VmData, VmRSS, VmHWM... of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Watchdog:
    """Kills the process once its resident memory passes `cap` (sampled every 5 ms)."""

    def __init__(self, pid: int, cap: int) -> None:
        self.pid, self.cap = pid, cap
        self.highest, self.killed = 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def check(self) -> None:
        """Stop waiting for a study the killed worker will never finish."""
        assert not self.killed, f"the worker went past the cap: {self.killed / MIB:.0f} MiB"

    def _watch(self) -> None:
        while not self._done.wait(0.005):
            try:
                rss = status(self.pid)["VmRSS"]
            except (OSError, KeyError):  # it exited
                return
            self.highest = max(self.highest, rss)
            if rss > self.cap:
                self.killed = rss
                os.kill(self.pid, signal.SIGKILL)
                return


def write_shards(folder: Path) -> int:
    """TFRecord shards of (x: FEATURES floats, y: a class); a label is the sign of x's mean,
    so there is something to learn. Distinct examples are few (they repeat), the bytes are
    not. Returns the training records written."""
    rng = np.random.default_rng(0)
    examples = []
    for i in range(64):
        label = i % 2
        x = rng.normal(0.5 if label else -0.5, 1.0, FEATURES).astype(np.float32)
        example = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=x)),
                    "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
            )
        )
        examples.append(example.SerializeToString())
    per_shard = TRAIN_BYTES // SHARDS // len(examples[0])
    folder.mkdir(parents=True)
    for shard in range(SHARDS):
        with tf.io.TFRecordWriter(str(folder / f"train-{shard}.tfrecord")) as writer:
            for i in range(per_shard):
                writer.write(examples[(i * 7 + shard) % len(examples)])
    with tf.io.TFRecordWriter(str(folder / "val.tfrecord")) as writer:
        for i in range(400):
            writer.write(examples[i % len(examples)])
    return per_shard * SHARDS


@pytest.mark.serial
def test_a_tfrecord_dataset_larger_than_the_workers_memory_limit_trains(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("shared")
    n_train = write_shards(root / "big")
    env = {**os.environ, "LRSEARCH_DATA_ROOTS": str(root)}
    with (
        serve(tmp_path_factory.mktemp("serve"), env) as served,
        httpx.Client(base_url=served.url, timeout=30) as http,
    ):
        warm = http.post("/v1/studies", json={"task": {"epochs": 1}, "n_trials": 1}).json()
        assert wait_final(http, warm["id"], 300)["status"] == "completed"
        [pid] = served.worker_pids()
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
        before = status(pid)
        cap = before["VmRSS"] + HEADROOM
        watchdog = Watchdog(pid, cap)

        ds = http.post(
            "/v1/datasets/by-reference",
            json={
                "format": "tfrecord",
                "train": "big/train-*.tfrecord",
                "val": "big/val.tfrecord",
                "features": {
                    "x": {"dtype": "float32", "shape": [FEATURES]},
                    "y": {"dtype": "int64"},
                },
                "label": "y",
                "task": "classification",
                "n_classes": 2,
            },
        ).json()
        assert ds["n_train"] == n_train and ds["size_bytes"] > max(5 * HEADROOM, cap)
        spec = {
            "task": {
                "dataset": ds["id"],
                "epochs": 1,
                "batch_size": 256,
                "model": {"kind": "mlp", "hidden": [16]},
            },
            "objective": {"metric": "val_accuracy"},
            "strategies": ["constant"],
            "n_trials": 1,
        }
        with watchdog:
            study_id = http.post("/v1/studies", json=spec).json()["id"]
            try:
                final = wait_final(http, study_id, 420, on_poll=watchdog.check)
            except AssertionError as stuck:
                raise AssertionError(f"{stuck}\n{served.log.read_text()[-6000:]}") from None
            after = status(pid)
        trial: dict[str, Any] = http.get(f"/v1/studies/{study_id}/trials/0").json()
        assert served.worker_pids() == [pid]  # the same, capped, worker did it
    assert not watchdog.killed, f"the worker went past the cap: {watchdog.killed / MIB:.0f} MiB"
    assert final["status"] == "completed", (final, served.log.read_text()[-4000:])
    assert trial["state"] == "complete" and trial["history"]["val_accuracy"][0] > 0.9
    grown = after["VmHWM"] - before["VmHWM"]  # the peak while the study ran, over its start
    print(
        f"\ndata {ds['size_bytes'] / MIB:.0f} MiB; worker RSS {before['VmRSS'] / MIB:.0f} MiB "
        f"-> peak {after['VmHWM'] / MIB:.0f} MiB (cap {cap / MIB:.0f} MiB, highest sample "
        f"{watchdog.highest / MIB:.0f} MiB)"
    )
    assert grown < HEADROOM


@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_other_formats_by_path_train_through_a_worker(
    sqlite_url: str, tmp_path: Path, fmt: str
) -> None:
    """(SQLite only: the database's part is covered by test_data_refs.py on both.)"""
    root = tmp_path / "shared"
    root.mkdir()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    if fmt == "npz":
        np.savez(root / "d.npz", x_train=x[:240], y_train=y[:240], x_val=x[240:], y_val=y[240:])
        body: dict[str, Any] = {"format": "npz", "train": "d.npz"}
    else:
        rows = "\n".join(",".join([*map(str, xi), str(yi)]) for xi, yi in zip(x, y, strict=True))
        (root / "d.csv").write_text("a,b,c,d,e,label\n" + rows + "\n")
        body = {
            "format": "csv",
            "train": "d.csv",
            "target": "label",
            "task": "classification",
            "n_classes": 2,
        }
    settings = Settings(database_url=sqlite_url, data_dir=tmp_path / "data", data_roots=[root])
    with TestClient(create_app(settings), base_url=LOCAL_BASE_URL) as api:
        ds = api.post("/v1/datasets/by-reference", json=body).json()
        spec = {
            "task": {"dataset": ds["id"], "epochs": 3, "batch_size": 32},
            "objective": {"metric": "val_accuracy"},
            "strategies": ["constant"],
            "ranges": {"initial_lr": {"low": 0.01, "high": 0.02}},
            "n_trials": 1,
        }
        study_id = api.post("/v1/studies", json=spec).json()["id"]
        worker = Worker(WorkerConfig(sqlite_url, tmp_path / "data", data_roots=[root]))
        started = time.monotonic()
        assert worker.run_one()
        worker.resources.engine.dispose()
        trial = api.get(f"/v1/studies/{study_id}/trials/0").json()
    assert trial["state"] == "complete", trial["fail_reason"]
    assert len(trial["history"]["val_accuracy"]) == 3 and trial["value"] > 0.8
    assert time.monotonic() - started < 120
