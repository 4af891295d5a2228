"""The hostile-input scenarios of benchmarks/reliability.py that attack more than an upload:
an error flood, oversized models (refused at submit; within the budget but over a worker's
memory limit while it trains) and a worker killed under `lrsearch serve`. Each outcome's
details carry the peak RSS (VmHWM from /proc/<pid>/status, sampled in the background so a
process that exits keeps its last peak) of the API and, where one runs, of a worker.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests import faults, hostile, servers
from tests.hostile import MiB

#: Warm worker RSS plus this is the memory limit of the worker that trains the wide model:
#: above a small trial's needs, far below the wide model's (~34M weights with Adam: 600+ MiB).
HEADROOM_MB = 250
SHORT_ANSWER = 20_000  # bytes: 50 errors with their messages fit well below this


class PeakWatch:
    """A process's peak RSS from the moment it is watched: VmHWM reset, then sampled."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.reset = hostile.reset_peak(pid)
        self.before = self._read("VmRSS")
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _read(self, field: str) -> int:
        try:
            return hostile.rss_bytes(self.pid, field)
        except (OSError, RuntimeError):  # gone (or a zombie: no Vm* lines)
            return 0

    def _run(self, every_s: float) -> None:
        while not self._done.wait(every_s):
            self.peak = max(self.peak, self._read("VmHWM"))

    def stop(self) -> PeakWatch:
        self._done.set()
        self._thread.join(5)
        self.peak = max(self.peak, self._read("VmHWM"))
        return self

    @property
    def growth_mib(self) -> float:
        return round((self.peak - self.before) / MiB, 1)

    @property
    def peak_mib(self) -> float:
        return round(self.peak / MiB, 1)


def _record(out: faults.Outcome, api: PeakWatch | None, worker: PeakWatch | None) -> None:
    """The peak RSS columns of the report (MiB; growth: above the RSS when watched)."""
    if api is not None:
        api.stop()
        out.details.update(api_peak_mib=api.peak_mib, api_peak_growth_mib=api.growth_mib)
    if worker is not None:
        worker.stop()
        out.details.update(worker_peak_mib=worker.peak_mib)


def _api_pid(process: faults.ApiProcess) -> int:
    assert process.proc is not None
    return process.proc.pid


# --- error flood -----------------------------------------------------------------------------


def error_flood(stage: faults.Stage) -> faults.Outcome:
    """Specs with hundreds of thousands of bad fields (past the item budget: one error naming
    the budget) and with thousands (within it: the first 50 listed and the rest counted); each
    a short 422, and the API's peak RSS stays near its RSS."""
    out = faults.Outcome("error flood (300,000 bad fields, 3.5 MB specs)")
    process, api = stage.api()
    watch = PeakWatch(_api_pid(process))
    many = 300_000
    cases: list[tuple[str, dict[str, Any], str | None, int | None]] = [
        ("300,000 unknown strategies", {"strategies": [f"s{i}" for i in range(many)]},
         "strategies", None),
        ("300,000 extra keys", {f"k{i}": 0 for i in range(many)}, "body", None),
        ("9,000 unknown strategies", {"strategies": [f"s{i}" for i in range(9000)]},
         "strategies.0", 9000),
        ("9,000 extra keys", {f"k{i}": 0 for i in range(9000)}, "k0", 9000),
        ("300,000 long extra keys (5 MB)", {f"extra{i}": 1 for i in range(many)}, None, None),
    ]  # fmt: skip
    answers = {}
    for name, spec, field, n_bad in cases:
        raw = json.dumps(spec, separators=(",", ":")).encode()
        response = api.request(
            "POST", "/v1/studies", content=raw, headers={"content-type": "application/json"}
        )
        out.bad_inputs += 1
        want = 413 if field is None else 422  # past the JSON body limit: refused unread
        body = response.json() if response.status_code in (413, 422) else {}
        errors = body.get("errors", [])
        listed = 1 if n_bad is None else 50
        answers[name] = {
            "request_mb": round(len(raw) / 1e6, 1),
            "status": response.status_code,
            "answer_bytes": len(response.content),
            "listed": len(errors),
            "more_errors": body.get("more_errors"),
        }
        out.expect(
            response.status_code == want
            and len(response.content) < SHORT_ANSWER
            and response.headers.get("content-type", "").startswith(faults.PROBLEM),
            f"{name}: {response.status_code}, {len(response.content)} bytes",
        )
        if field is not None:
            out.expect(
                len(errors) == listed
                and errors[0]["field"] == field
                and body.get("more_errors") == (0 if n_bad is None else n_bad - listed),
                f"{name}: {len(errors)} listed, first {errors[:1]}, more {body.get('more_errors')}",
            )
    out.server_errors = api.server_errors()
    out.details["answers"] = answers
    _record(out, watch, None)
    return out


# --- oversized models ------------------------------------------------------------------------


def _wide_dataset(api: faults.Api, features: int) -> str:
    rng = np.random.default_rng(0)
    return api.upload(
        faults.npz_of(
            x_train=rng.normal(size=(24, features)).astype(np.float32),
            y_train=np.arange(24) % 3,
            x_val=rng.normal(size=(8, features)).astype(np.float32),
            y_val=np.arange(8) % 3,
        )
    )


def oversized_at_submit(stage: faults.Stage) -> faults.Outcome:
    """mlp [4096]*8 on a 20,000-feature upload and keras_json Dense(40000) -> Dense(40000):
    422 on task.model with the estimate and the limit, before any worker sees them."""
    out = faults.Outcome("oversized model refused at submit (mlp, Dense)")
    process, api = stage.api()
    watch = PeakWatch(_api_pid(process))
    wide = _wide_dataset(api, 20_000)
    specs = {
        "mlp [4096]*8 on 20,000 features": {
            "task": {"dataset": wide, "model": {"kind": "mlp", "hidden": [4096] * 8}}
        },
        "keras_json Dense(40000) x2": faults.keras_json_spec(
            faults.sequential(faults.dense(40_000), faults.dense(40_000))
        ),
    }
    messages = {}
    for name, spec in specs.items():
        response = api.request("POST", "/v1/studies", json=spec)
        out.bad_inputs += 1
        errors = response.json().get("errors", []) if response.status_code == 422 else []
        messages[name] = errors[0]["message"] if errors else response.text[:300]
        out.expect(
            [e["field"] for e in errors] == ["task.model"]
            and "parameters" in errors[0]["message"]
            and "at most" in errors[0]["message"],
            f"{name}: {response.status_code} {response.text[:200]}",
        )
    studies = api.poll("/v1/studies")["items"]
    out.expect(not studies, f"{len(studies)} studies were created")
    out.server_errors = api.server_errors()
    out.details["messages"] = messages
    _record(out, watch, None)
    return out


def _limited_worker(stage: faults.Stage, name: str, limit_mb: int | None) -> faults.Proc:
    worker = faults.WorkerProcess(
        stage.group, stage.db_url, stage.data_dir, stage.logs / f"{name}.log", grace_s=10
    )
    if limit_mb is not None:
        worker.env = {**worker.env, "LRSEARCH_WORKER_MEMORY_MB": str(limit_mb)}
    return worker.start()


def over_worker_memory(stage: faults.Stage) -> faults.Outcome:
    """A model within the submit budget (mlp [4096]*3 on digits, ~34M weights) trained by a
    worker whose limit is its warm RSS + HEADROOM_MB: the trial fails as out of memory, once
    (not retried as a lost worker), and the worker is not killed."""
    out = faults.Outcome("model over the worker's memory limit", faults=1)
    process, api = stage.api()
    api_watch = PeakWatch(_api_pid(process))
    warm_study = api.create(faults.tiny_spec(1, 2))
    warm = _limited_worker(stage, "warm", None)
    api.wait_final(warm_study, 300)
    warm_rss = hostile.rss_bytes(warm.pid)
    out.expect(warm.stop(60) == 0, "the warm worker did not exit 0")
    limit_mb = warm_rss // MiB + HEADROOM_MB
    wide = {"model": {"kind": "mlp", "hidden": [4096] * 3}, "epochs": 1}
    study_id = api.create(faults.tiny_spec(1, 1, task=wide))
    worker = _limited_worker(stage, "limited", limit_mb)
    worker_watch = PeakWatch(worker.pid)
    final = api.wait_final(study_id, 300)
    trials = api.trials(study_id)
    faults.wait_for(lambda: not worker.alive(), 60, "the limited worker to stop itself")
    code = worker.popen.returncode if worker.popen else None
    _record(out, api_watch, worker_watch)
    reason = str(trials[0]["fail_reason"]) if trials else ""
    out.details.update(
        warm_rss_mib=round(warm_rss / MiB), limit_mb=limit_mb, fail_reason=reason,
        worker_exit=code, study_error=final["error"],
    )  # fmt: skip
    out.expect(
        [t["state"] for t in trials] == ["fail"] and reason.startswith("out of memory"),
        f"trials: {[(t['state'], t['fail_reason']) for t in trials]}",
    )
    out.expect("worker lost" not in reason, f"a lost worker, not a guarded trial: {reason}")
    out.expect(
        final["status"] == "failed" and final["progress"]["retried"] == 0,
        f"study {final['status']} {final['progress']}",
    )
    out.expect(code is not None and code >= 0, f"the worker was killed ({code})")
    faults.count_study(out, api, stage.db_url, study_id, 1)
    out.server_errors += api.server_errors()
    return out


# --- a dead worker under `lrsearch serve` ----------------------------------------------------


def dead_worker_under_serve(root: Path) -> faults.Outcome:
    """`lrsearch serve --workers 1`, its worker killed with SIGKILL mid-trial: a new worker
    (new pid) takes over, the dead trial is retried once, the study completes with exactly its
    trials, and /readyz counts one live worker again."""
    out = faults.Outcome("dead worker under serve (kill -9, restarted)", faults=1)
    env = {
        **os.environ,
        "LRSEARCH_HEARTBEAT_INTERVAL_S": str(faults.HEARTBEAT_S),
        "LRSEARCH_GRACE_PERIOD_S": "3",
        "LRSEARCH_CHECKPOINT_EVERY_S": "0",
        "CUDA_VISIBLE_DEVICES": "",
    }
    n_trials = 2
    with servers.serve(root / "serve", env=env, workers=1) as served:
        api = faults.Api(served.url)
        api_watch = PeakWatch(served.process.pid)
        (first,) = faults.wait_for(served.worker_pids, 60, "serve's worker")
        first_watch = PeakWatch(first)
        study_id = api.create(faults.tiny_spec(n_trials, faults.KILL_EPOCHS))
        victim = faults.wait_for(
            lambda: faults.running_trial_with_epochs(api, study_id, 3, faults.KILL_EPOCHS - 10),
            240,
            "a trial with >= 3 epochs",
        )
        first_watch.stop()
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        (second,) = faults.wait_for(
            lambda: [p for p in served.worker_pids() if p != first], 60, "a new worker"
        )
        restart_s = time.monotonic() - killed
        second_watch = PeakWatch(second)
        final = api.wait_final(study_id, 300)
        live = faults.wait_for(
            lambda: (w := api.poll("/readyz")["workers"])["live"] == 1 and w, 30, "live == 1"
        )
        _record(out, api_watch, second_watch)
        trials = {t["number"]: t for t in api.trials(study_id)}
        dead = trials[victim["number"]]
        out.details.update(
            killed_pid=first, new_pid=second, restart_s=round(restart_s, 1),
            killed_after_epochs=len(victim["intermediate_values"]),
            dead_reason=dead["fail_reason"], readyz_workers=live,
            killed_worker_peak_mib=first_watch.peak_mib,
            worker_peak_mib=max(first_watch.peak_mib, second_watch.peak_mib),
        )  # fmt: skip
        out.expect(final["status"] == "completed", f"study ended {final['status']}")
        out.expect(
            dead["state"] == "fail" and "worker lost" in str(dead["fail_reason"]),
            f"dead trial: {dead['state']} {dead['fail_reason']!r}",
        )
        out.expect(final["progress"]["retried"] == 1, f"progress: {final['progress']}")
        out.expect(
            f"restarted (pid {second}, was {first}" in served.log.read_text(errors="replace"),
            "serve did not log the restart",
        )
        faults.count_study(out, api, served.env["LRSEARCH_DATABASE_URL"], study_id, n_trials)
        out.server_errors += api.server_errors()
        api.close()
    return out
