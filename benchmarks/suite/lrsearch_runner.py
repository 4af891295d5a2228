"""lrsearch as its users run it: `lrsearch serve` on loopback, HTTP only, defaults unchanged.

The dataset is uploaded as an NPZ, the study is the task with the same budget as the peers
(n_trials x epochs) and lrsearch's default search (every strategy family, its sampler, pruner
and selection), and the choice is `/best`'s export, retrained like every other contender's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from search.data import Dataset, save_npz
from service.cli.server import stop_processes
from service.client import Client
from service.demo import free_port, start_server, wait_ready

from .peers import SearchResult
from .tasks import Task

LRSEARCH = "lrsearch"


@contextmanager
def service() -> Iterator[str]:
    """`lrsearch serve --workers 1` on its own SQLite file; yields the base URL."""
    root = Path(tempfile.mkdtemp(prefix="lrsearch-suite-"))
    port = free_port()
    server = start_server(root, port, 1, None, os.environ.get("LRSEARCH_TF_THREADS", "1"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, timeout_s=180, server=server, log=root / "serve.log")
        yield base
    finally:
        stop_processes([server], timeout_s=60)
        shutil.rmtree(root, ignore_errors=True)


def search(
    base: str,
    task: Task,
    data: Dataset,
    n_trials: int,
    seed: int,
    uploads: dict[str, str],
    timeout_s: float = 3600,
    extra: dict[str, Any] | None = None,
) -> tuple[SearchResult, list[Any]]:
    """Run the study; the result and its finished trials (for the epochs-to-beat measure)."""
    with Client(base, timeout=120) as client:
        dataset_id = uploads.get(task.name) or _upload(client, data)
        uploads[task.name] = dataset_id
        spec = {
            "name": f"suite-{task.name}-{seed}",
            "task": task.spec_task(dataset_id, data),
            "n_trials": n_trials,
            "seed": seed,
            **(extra or {}),
        }
        started = time.perf_counter()
        study = client.submit(spec)
        deadline = time.monotonic() + timeout_s
        while not study.refresh().done:
            if time.monotonic() > deadline:
                raise SystemExit(f"lrsearch study on {task.name} did not finish in time")
            time.sleep(0.5)
        wall = time.perf_counter() - started
        trials = [t for t in study.trials(page_size=500) if t["state"] != "waiting"]
        best = study.best()
    result = SearchResult(LRSEARCH, wall_s=wall)
    for t in sorted(trials, key=lambda t: t["number"]):
        epochs = int(t.get("epochs_run") or 0)
        result.trials.append((epochs, t["value"] if t["state"] == "complete" else None))
    result.epochs_spent = sum(e for e, _ in result.trials)
    result.export = _export(best)
    result.reported_best = best.get("value")
    result.detail = {"lr_range": _range(study.data), "trial_detail": [_brief(t) for t in trials]}
    return result, trials


def _range(study: dict[str, Any]) -> dict[str, Any] | None:
    """The range test's edge and bounds (its curve left out: the record stays small)."""
    found = study.get("lr_range") or None
    return None if found is None else {k: found.get(k) for k in ("edge", "low", "high")}


def _brief(trial: dict[str, Any]) -> list[Any]:
    """A trial in one line of the record: what was tried and how it ended (for dev reading)."""
    return [
        trial["number"],
        trial["strategy"],
        trial["params"],
        trial["state"],
        trial.get("value"),
        trial.get("epochs_run"),
    ]


def _export(best: dict[str, Any]) -> dict[str, Any]:
    """The export `apply()` takes, from `/best` (named `export` there)."""
    if "export" in best:
        return dict(best["export"])
    return {
        "schedule": best.get("keras"),
        "callbacks": best.get("callbacks", []),
        "initial_lr": best.get("initial_lr"),
        "optimizer": best.get("optimizer"),
    }


def _upload(client: Client, data: Dataset) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{data.name}.npz"
        save_npz(data, path)
        record = client.upload_dataset(path, name=data.name)
    return str(record["id"])


def choices_in_order(
    trials: list[dict[str, Any]], direction: str = "minimize"
) -> list[tuple[int, str, dict[str, Any]]]:
    """(epochs spent so far, strategy, params) chosen so far after each finished trial, where the
    choice changed: trials with the same parameters are one candidate, judged by their mean."""
    spent, last = 0, None
    groups: dict[str, list[float]] = {}
    out: list[tuple[int, str, dict[str, Any]]] = []
    sign = 1.0 if direction == "minimize" else -1.0
    for t in sorted(trials, key=lambda t: t["number"]):
        spent += int(t.get("epochs_run") or 0)
        if t["state"] == "complete" and t.get("value") is not None:
            key = json.dumps([t["strategy"], t["params"]], sort_keys=True)
            groups.setdefault(key, []).append(float(t["value"]))
        if not groups:
            continue
        key = min(groups, key=lambda k: sign * sum(groups[k]) / len(groups[k]))
        if key != last:
            strategy, params = json.loads(key)
            out.append((spent, strategy, params))
            last = key
    return out
