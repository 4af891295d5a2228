"""Fault injection against real processes: API and worker subprocesses, a PostgreSQL cluster
the caller owns, and the scenarios built from them.

Shared by tests/integration/test_reliability.py (which asserts on each outcome) and
benchmarks/reliability.py (which runs them all and prints a table). Every process started here
is registered in a `ProcessGroup`, which kills whatever is still running when it closes.
Waits are bounded; a timeout raises with the process logs attached.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.demo import free_port
from tests.keras_files import unique_names

ROOT = Path(__file__).resolve().parents[1]
SHARED_PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
HEARTBEAT_S = 1
PROBLEM = "application/problem+json"


# --- waiting -------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll until `predicate()` is truthy (and return it); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- processes -----------------------------------------------------------------------------


class Proc:
    """One subprocess with its log file; started in its own session so signals hit it alone."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill9(self) -> None:
        """SIGKILL: no handler runs, nothing is cleaned up (a crash, an OOM kill)."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:.0f}s\n{self.log_tail()}"
            ) from None

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code (None if killed)."""
        if self.popen is None:
            return None
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=10)
                return None
        return self.popen.returncode

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"--- {self.name} log ({self.log_path}) ---\n{text[-chars:]}"


class ProcessGroup:
    """Every process a scenario starts; `close` stops those still running (SIGKILL last)."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop(timeout=20)

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.procs)


def _base_env(db_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LRSEARCH_DATABASE_URL": db_url,
        "LRSEARCH_DATA_DIR": str(data_dir),
        "LRSEARCH_TF_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONUNBUFFERED": "1",
    }


class ApiProcess:
    """`python -m service.cli api` on a fixed port, restartable on the same port."""

    def __init__(self, group: ProcessGroup, db_url: str, data_dir: Path, logs: Path) -> None:
        self.group, self.db_url, self.data_dir, self.logs = group, db_url, data_dir, logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self, timeout: float = 90) -> ApiProcess:
        self.starts += 1
        argv = [sys.executable, "-m", "service.cli", "api", "--port", str(self.port)]
        env = _base_env(self.db_url, self.data_dir)
        log = self.logs / f"api-{self.starts}.log"
        self.proc = self.group.add(Proc(f"api#{self.starts}", argv, env, log).start())
        wait_for(self._healthy, timeout, f"the API on port {self.port}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise AssertionError(f"the API exited\n{self.proc.log_tail()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


class WorkerProcess(Proc):
    """`python -m service.cli worker` with a short heartbeat and grace period."""

    def __init__(
        self,
        group: ProcessGroup,
        db_url: str,
        data_dir: Path,
        log: Path,
        grace_s: int,
        idle_exit_s: float | None = None,
        population: int = 1,
    ) -> None:
        argv = [sys.executable, "-m", "service.cli", "worker"]
        if idle_exit_s is not None:
            argv += ["--idle-exit", str(idle_exit_s)]
        if population != 1:
            argv += ["--population", str(population)]
        env = {
            **_base_env(db_url, data_dir),
            "LRSEARCH_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
            "LRSEARCH_GRACE_PERIOD_S": str(grace_s),
            "LRSEARCH_CHECKPOINT_EVERY_S": "0",  # tiny epochs: save each one, resume exactly
        }
        super().__init__(log.stem, argv, env, log)
        group.add(self)


# --- a PostgreSQL cluster the caller owns ----------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def own_cluster_unavailable() -> str | None:
    """Why a private cluster cannot run here (None when it can)."""
    if _pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0 and not (shutil.which("runuser") and _user_exists("postgres")):
        return "running as root without runuser or a postgres user to run initdb as"
    return None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PgCluster:
    """initdb into a fresh folder, pg_ctl start/stop on a free port, socket in that folder.

    As root the server runs as user postgres (initdb refuses root), through runuser.
    """

    def __init__(self) -> None:
        reason = own_cluster_unavailable()
        if reason:
            raise RuntimeError(reason)
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="lrsearch-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-instructions",
        )

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        assert self.bin is not None
        argv = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, timeout=timeout, capture_output=True)

    def start(self) -> PgCluster:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session at once, like a database restart or failover."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def shared_pg_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL at 127.0.0.1:5432, dropped afterwards."""
    import uuid

    import psycopg

    name = f"lrsearch_fault_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SHARED_PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- talking to the API ----------------------------------------------------------------------


class Api:
    """A small HTTP client that keeps polling through an API restart or a database outage."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=30)
        self.statuses: list[int] = []  # every status seen (5xx other than 503 are bugs)
        self.unreachable = 0

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self.client.request(method, path, **kw)
        self.statuses.append(response.status_code)
        return response

    def poll(self, path: str, timeout: float = 120) -> Any:
        """GET until it answers 200 (connection errors and 503s are waited out)."""

        def attempt() -> Any:
            try:
                response = self.request("GET", path)
            except httpx.TransportError:
                self.unreachable += 1
                return None
            if response.status_code == 503:
                return None
            assert response.status_code == 200, (path, response.status_code, response.text)
            return response.json()

        return wait_for(attempt, timeout, f"GET {path}", every=0.3)

    def create(self, spec: dict[str, Any]) -> str:
        response = self.request("POST", "/v1/studies", json=spec)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def upload(self, data: bytes, filename: str = "d.npz") -> str:
        response = self.request("POST", "/v1/datasets", files={"file": (filename, data)})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def study(self, study_id: str) -> dict[str, Any]:
        return dict(self.poll(f"/v1/studies/{study_id}"))

    def trials(self, study_id: str) -> list[dict[str, Any]]:
        return list(self.poll(f"/v1/studies/{study_id}/trials?limit=500")["items"])

    def wait_final(self, study_id: str, timeout: float) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (
                    (body := self.study(study_id))["status"] in ("completed", "failed", "cancelled")
                    and body
                ),
                timeout,
                f"study {study_id} to finish",
                every=0.5,
            )
        )

    def server_errors(self) -> int:
        """Responses with a 5xx other than the 503 a database outage is documented to give."""
        return sum(1 for s in self.statuses if s >= 500 and s != 503)

    def close(self) -> None:
        self.client.close()


def tiny_spec(n_trials: int, epochs: int, **over: Any) -> dict[str, Any]:
    """A study small enough for a shared 2-core machine: mlp [16] on digits, constant LR."""
    task = {
        "dataset": "digits",
        "model": {"kind": "mlp", "hidden": [16]},
        "epochs": epochs,
        "batch_size": 128,
        **over.pop("task", {}),
    }
    return {
        "name": "fault",
        "task": task,
        "strategies": ["constant"],
        "pruner": "none",
        "n_trials": n_trials,
        "seed": 0,
        **over,
    }


def npz_bytes(regression: bool = False) -> bytes:
    """A small upload; the regression one diverges at once with SGD and lr >= 1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype("float32") * 10
    y = (x @ rng.normal(size=6) * 100).astype("float32") if regression else np.arange(240) % 3
    buf = io.BytesIO()
    np.savez(buf, x_train=x[:200], y_train=y[:200], x_val=x[200:], y_val=y[200:])
    return buf.getvalue()


def running_trial_with_epochs(
    api: Api, study_id: str, min_epochs: int, max_epochs: int
) -> dict[str, Any] | None:
    """A running trial that has reported at least `min_epochs` (and not yet `max_epochs`)."""
    for trial in api.poll(f"/v1/studies/{study_id}/trials?state=running")["items"]:
        if min_epochs <= len(trial["intermediate_values"]) < max_epochs:
            return dict(trial)
    return None


# --- accounting ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario did and found; `problems` lists every expectation it missed."""

    name: str
    faults: int = 0
    lost: int = 0
    double_counted: int = 0
    server_errors: int = 0
    bad_inputs: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    @property
    def ok(self) -> bool:
        return not self.problems and not (self.lost or self.double_counted or self.server_errors)


def count_study(outcome: Outcome, api: Api, db_url: str, study_id: str, n_trials: int) -> None:
    """Add the study's lost and double-counted trials to the outcome.

    Finished = complete + pruned + failed (a failure that was retried is not counted). Lost:
    fewer finished than asked for. Double counted: more, or a dead trial retried twice.
    """
    body = api.study(study_id)
    progress = body["progress"]
    finished = progress["complete"] + progress["pruned"] + progress["failed"]
    outcome.lost += max(0, n_trials - finished)
    outcome.double_counted += max(0, finished - n_trials) + duplicate_retries(db_url, study_id)
    outcome.details.setdefault("studies", {})[study_id[:8]] = {
        "status": body["status"],
        **{k: progress[k] for k in ("complete", "failed", "retried")},
    }


def retried_trials(db_url: str, study_id: str) -> dict[int, int]:
    """Each retried trial's number -> its retry's number (read from Optuna's storage)."""
    import optuna

    from search import store

    storage = store.optuna_storage(db_url)
    try:
        study = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage)
        trials = study.get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    return {
        int(t.system_attrs["failed_trial"]): t.number
        for t in trials
        if t.system_attrs.get("failed_trial") is not None
    }


def duplicate_retries(db_url: str, study_id: str) -> int:
    """Dead trials that were queued again more than once (each must be retried once at most)."""
    import optuna

    from search import store

    storage = store.optuna_storage(db_url)
    try:
        study = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage)
        originals = [t.system_attrs.get("failed_trial") for t in study.get_trials(deepcopy=False)]
    finally:
        storage.engine.dispose()
    seen = [o for o in originals if o is not None]
    return len(seen) - len(set(seen))


# --- the stage a scenario plays on -----------------------------------------------------------


@dataclass
class Stage:
    """A database, a data folder, a log folder and the processes started on them."""

    db_url: str
    root: Path
    group: ProcessGroup = field(default_factory=ProcessGroup)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def api(self) -> tuple[ApiProcess, Api]:
        process = ApiProcess(self.group, self.db_url, self.data_dir, self.logs).start()
        return process, Api(process.url)

    def worker(
        self, name: str, grace_s: int = 3, idle_exit_s: float | None = None, population: int = 1
    ) -> Proc:
        log = self.logs / f"{name}.log"
        return WorkerProcess(
            self.group, self.db_url, self.data_dir, log, grace_s, idle_exit_s, population
        ).start()


@contextlib.contextmanager
def stage_on(db_url: str, root: Path) -> Iterator[Stage]:
    """A stage whose processes are all stopped on exit, whatever happened."""
    stage = Stage(db_url, root)
    try:
        yield stage
    finally:
        stage.group.close()


# --- scenarios -------------------------------------------------------------------------------

KILL_EPOCHS = 80


def _worker_mid_trial(stage: Stage, n_trials: int) -> tuple[Api, str, Proc, dict[str, Any]]:
    """A study of KILL_EPOCHS-epoch trials, one worker, and its trial once >= 3 epochs ran:
    (api, study id, the worker, that trial)."""
    _, api = stage.api()
    study_id = api.create(tiny_spec(n_trials, KILL_EPOCHS))
    worker = stage.worker("worker-a")
    victim = wait_for(
        lambda: running_trial_with_epochs(api, study_id, 3, KILL_EPOCHS - 10),
        240,
        "a trial with >= 3 epochs",
    )
    return api, study_id, worker, victim


def kill9_mid_trial(stage: Stage) -> Outcome:
    """kill -9 a worker after >= 3 reported epochs; another worker fails the dead trial after
    the grace period, retries it once, and the retry resumes from the last checkpoint."""
    out = Outcome("kill -9 worker mid-trial", faults=1)
    api, study_id, first, victim = _worker_mid_trial(stage, n_trials=3)
    first.kill9()
    stage.worker("worker-b")
    final = api.wait_final(study_id, 300)
    trials = {t["number"]: t for t in api.trials(study_id)}
    dead = trials[victim["number"]]
    retry = next((t for t in trials.values() if t.get("resumed_from_epoch") is not None), None)
    out.details.update(
        dead_trial=dead["number"],
        dead_reason=dead["fail_reason"],
        killed_after_epochs=len(victim["intermediate_values"]),
        resumed_from_epoch=retry and retry["resumed_from_epoch"],
        retry_epochs_run=retry and retry["epochs_run"],
    )
    out.expect(final["status"] == "completed", f"study ended {final['status']}")
    out.expect(dead["state"] == "fail", f"dead trial is {dead['state']}")
    out.expect(
        "worker lost" in str(dead["fail_reason"]) and "retried" in str(dead["fail_reason"]),
        f"dead trial's reason: {dead['fail_reason']!r}",
    )
    out.expect(final["progress"]["retried"] == 1, f"progress: {final['progress']}")
    out.expect(retry is not None, "no trial resumed from a checkpoint")
    if retry is not None:
        out.expect(retry["state"] == "complete", f"retry is {retry['state']}")
        out.expect(retry["resumed_from_epoch"] >= 2, f"resumed from {retry['resumed_from_epoch']}")
        out.expect(
            retry["epochs_run"]
            == KILL_EPOCHS
            == len(retry["lr"])
            == len(retry["history"]["val_loss"]),
            f"retry ran {retry['epochs_run']} epochs",
        )
    out.expect(
        not list((stage.data_dir / "checkpoints").glob("*/*.npz")), "checkpoints left behind"
    )
    count_study(out, api, stage.db_url, study_id, 3)
    out.server_errors += api.server_errors()
    return out


POPULATION = 3


def kill9_mid_population(stage: Stage) -> Outcome:
    """kill -9 a worker training a population of POPULATION trials once one of them reported
    >= 3 epochs: every member is failed by another population worker's sweep and retried
    once, each retry resumes from its own checkpoint (if it had saved one), none is lost or
    counted twice."""
    out = Outcome("kill -9 worker mid-population", faults=1)
    _, api = stage.api()
    study_id = api.create(tiny_spec(POPULATION, KILL_EPOCHS))
    first = stage.worker("worker-a", population=POPULATION)
    victim = wait_for(
        lambda: running_trial_with_epochs(api, study_id, 3, KILL_EPOCHS - 10),
        240,
        "a member with >= 3 epochs",
    )
    running = api.poll(f"/v1/studies/{study_id}/trials?state=running")["items"]
    first.kill9()
    stage.worker("worker-b", population=POPULATION)
    final = api.wait_final(study_id, 300)
    trials = {t["number"]: t for t in api.trials(study_id)}
    dead = [trials[r["number"]] for r in running]
    retry_of = retried_trials(stage.db_url, study_id)  # original number -> its retry's
    retries = [trials[number] for number in retry_of.values()]
    resumed = {original: trials[r]["resumed_from_epoch"] for original, r in retry_of.items()}
    out.details.update(
        members_running_at_kill=len(running),
        dead_reasons=sorted({str(t["fail_reason"])[:40] for t in dead}),
        resumed_from=resumed,
        retry_epochs=[t["epochs_run"] for t in retries],
    )
    out.expect(final["status"] == "completed", f"study ended {final['status']}")
    out.expect(len(running) == POPULATION, f"{len(running)} members were running")
    for trial in dead:
        out.expect(
            trial["state"] == "fail"
            and "worker lost" in str(trial["fail_reason"])
            and "retried" in str(trial["fail_reason"]),
            f"dead member {trial['number']}: {trial['state']} {trial['fail_reason']!r}",
        )
    out.expect(final["progress"]["retried"] == POPULATION, f"progress: {final['progress']}")
    out.expect(
        sorted(resumed) == sorted(t["number"] for t in dead), f"retries of {sorted(resumed)}"
    )
    out.expect(
        (resumed.get(victim["number"]) or 0) >= 2,
        f"the member killed after >= 3 epochs resumed from {resumed.get(victim['number'])}",
    )
    for retry in retries:
        out.expect(
            retry["state"] == "complete"
            and retry["epochs_run"] == KILL_EPOCHS == len(retry["lr"])
            and len(retry["intermediate_values"]) == KILL_EPOCHS,
            f"retry {retry['number']}: {retry['state']}, {retry['epochs_run']} epochs",
        )
    out.expect(
        not list((stage.data_dir / "checkpoints").glob("*/*.npz")), "checkpoints left behind"
    )
    count_study(out, api, stage.db_url, study_id, POPULATION)
    out.server_errors += api.server_errors()
    return out


def sigterm_mid_population(stage: Stage) -> Outcome:
    """SIGTERM a worker training a population: it exits 0 with every member released for one
    retry (none left running), and the next population worker runs them to the budget."""
    out = Outcome("SIGTERM worker mid-population", faults=1)
    _, api = stage.api()
    study_id = api.create(tiny_spec(POPULATION, KILL_EPOCHS))
    first = stage.worker("worker-a", population=POPULATION)
    wait_for(
        lambda: running_trial_with_epochs(api, study_id, 3, KILL_EPOCHS - 10),
        240,
        "a member with >= 3 epochs",
    )
    first.signal(signal.SIGTERM)
    code = first.wait(120)
    released = api.trials(study_id)
    stage.worker("worker-b", population=POPULATION)
    final = api.wait_final(study_id, 300)
    out.details.update(exit_code=code, released=[t["state"] for t in released])
    out.expect(code == 0, f"worker exited {code}")
    shut = [t for t in released if "worker shut down" in str(t["fail_reason"])]
    out.expect(len(shut) == POPULATION, f"{len(shut)} members released")
    out.expect(sum(t["state"] == "waiting" for t in released) == POPULATION, "retries queued")
    out.expect(not any(t["state"] == "running" for t in released), "a member left running")
    out.expect(final["status"] == "completed", f"study ended {final['status']}")
    out.expect(final["progress"]["retried"] == POPULATION, f"progress: {final['progress']}")
    count_study(out, api, stage.db_url, study_id, POPULATION)
    out.server_errors += api.server_errors()
    return out


def sigterm_mid_trial(stage: Stage) -> Outcome:
    """SIGTERM a worker mid-trial: it finishes the epoch, fails the trial with a reason,
    queues its retry and exits 0; the next worker resumes the retry from that very epoch."""
    out = Outcome("SIGTERM worker mid-trial", faults=1)
    api, study_id, first, victim = _worker_mid_trial(stage, n_trials=2)
    first.signal(signal.SIGTERM)
    code = first.wait(60)
    released = api.trials(study_id)
    dead = next(t for t in released if t["number"] == victim["number"])
    waiting = [t for t in released if t["state"] == "waiting"]
    stage.worker("worker-b")
    final = api.wait_final(study_id, 300)
    retry = next((t for t in api.trials(study_id) if t.get("resumed_from_epoch") is not None), None)
    out.details.update(
        exit_code=code,
        dead_reason=dead["fail_reason"],
        dead_epochs=dead["epochs_run"],
        resumed_from_epoch=retry and retry["resumed_from_epoch"],
    )
    out.expect(code == 0, f"worker exited {code}")
    out.expect(
        dead["state"] == "fail"
        and "worker shut down" in str(dead["fail_reason"])
        and "retried" in str(dead["fail_reason"]),
        f"released trial: {dead}",
    )
    out.expect(len(waiting) == 1, f"{len(waiting)} retries queued")
    out.expect(final["status"] == "completed", f"study ended {final['status']}")
    out.expect(
        retry is not None and retry["resumed_from_epoch"] == dead["epochs_run"],
        f"retry resumed from {retry and retry['resumed_from_epoch']}, "
        f"dead trial ran {dead['epochs_run']} epochs",
    )
    out.expect(retry is not None and retry["epochs_run"] == KILL_EPOCHS, "retry epochs")
    count_study(out, api, stage.db_url, study_id, 2)
    out.server_errors += api.server_errors()
    return out


def api_restart(stage: Stage) -> Outcome:
    """kill -9 the API, then SIGTERM it, mid-study; clients poll through both restarts and
    no study, trial or dataset goes missing."""
    out = Outcome("API restart mid-study (kill -9, then SIGTERM)", faults=2)
    process, api = stage.api()
    dataset_id = api.upload(npz_bytes())
    digits = api.create(tiny_spec(4, 30))
    uploaded = api.create(tiny_spec(2, 10, task={"dataset": dataset_id}))
    stage.worker("worker")
    wait_for(lambda: api.study(digits)["progress"]["complete"] >= 1, 240, "a finished trial")
    poller = Poller(process.url, f"/v1/studies/{digits}")
    for how in (signal.SIGKILL, signal.SIGTERM):
        before = _snapshot(api)
        answered = poller.answered
        assert process.proc is not None
        process.proc.signal(how)
        process.proc.wait(30)
        time.sleep(1.0)
        out.expect(_unreachable(api), "the API answered while it was down")
        process.start()
        after = _snapshot(api)
        out.expect(before["studies"] <= after["studies"], "a study disappeared")
        out.expect(before["datasets"] <= after["datasets"], "a dataset disappeared")
        missing = before["finished"] - after["finished"]
        out.expect(not missing, f"finished trials disappeared: {sorted(missing)}")
        wait_for(
            functools.partial(_answered_since, poller, answered + 2),
            30,
            "the polling client to be answered again",
        )
    poller.close()
    for study_id, n in ((digits, 4), (uploaded, 2)):
        final = api.wait_final(study_id, 300)
        out.expect(final["status"] == "completed", f"study {study_id} ended {final['status']}")
        count_study(out, api, stage.db_url, study_id, n)
    out.details.update(
        api_starts=process.starts, poller_refused=poller.refused, poller_answered=poller.answered
    )
    out.expect(poller.refused > 0, "the polling client never saw the API down")
    out.server_errors += api.server_errors() + poller.server_errors
    return out


def _answered_since(poller: Poller, count: int) -> bool:
    return poller.answered > count


class Poller:
    """A client polling one URL in the background, as a user's `--wait` does, through
    restarts: it counts refused connections, answers and 5xx."""

    def __init__(self, url: str, path: str, every: float = 0.2) -> None:
        self.refused = self.answered = self.server_errors = 0
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=url, timeout=5)
        self._thread = threading.Thread(target=self._run, args=(path, every), daemon=True)
        self._thread.start()

    def _run(self, path: str, every: float) -> None:
        while not self._stop.wait(every):
            try:
                status = self._client.get(path).status_code
            except httpx.TransportError:
                self.refused += 1
                continue
            self.answered += 1
            self.server_errors += int(status >= 500 and status != 503)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()


def _snapshot(api: Api) -> dict[str, set[Any]]:
    studies = {s["id"] for s in api.poll("/v1/studies?limit=200")["items"]}
    datasets = {d["id"] for d in api.poll("/v1/datasets")["items"]}
    finished = {
        (sid, t["number"], t["state"])
        for sid in studies
        for t in api.trials(sid)
        if t["state"] in ("complete", "pruned", "fail")
    }
    return {"studies": studies, "datasets": datasets, "finished": finished}


def _unreachable(api: Api) -> bool:
    try:
        api.client.get("/healthz", timeout=2)
    except httpx.TransportError:
        return True
    return False


OUTAGE_S = 6.0


def database_outage(stage: Stage, cluster: PgCluster) -> Outcome:
    """Stop the PostgreSQL cluster mid-trial for a few seconds: the API answers 503 (never
    500) and the worker keeps training and retrying; both recover by themselves, and every
    trial is counted once."""
    out = Outcome("database unreachable mid-study", faults=1)
    _, api = stage.api()
    n_trials = 4
    study_id = api.create(tiny_spec(n_trials, 40))
    worker = stage.worker("worker", grace_s=30)
    wait_for(lambda: running_trial_with_epochs(api, study_id, 2, 35), 240, "a training trial")
    cluster.stop("fast")
    stopped = time.monotonic()
    during = api.request("GET", f"/v1/studies/{study_id}")
    ready = api.request("GET", "/readyz")
    health = api.request("GET", "/healthz")
    out.details.update(
        during_outage={
            "study": during.status_code,
            "readyz": ready.status_code,
            "healthz": health.status_code,
        }
    )
    out.expect(
        during.status_code == 503
        and during.headers.get("content-type", "").startswith(PROBLEM)
        and "retry-after" in during.headers,
        f"study during outage: {during.status_code}",
    )
    out.expect(ready.status_code == 503, f"readyz during outage: {ready.status_code}")
    out.expect(health.status_code == 200, f"healthz during outage: {health.status_code}")
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    out.expect(worker.alive(), "the worker died during the outage")
    cluster.start()
    recovered = time.monotonic()
    api.study(study_id)
    out.details["api_recovered_s"] = round(time.monotonic() - recovered, 1)
    final = api.wait_final(study_id, 300)
    out.expect(final["status"] == "completed", f"study ended {final['status']}")
    out.expect(worker.alive(), "the worker died after the outage")
    code = worker.stop(60)
    out.expect(code == 0, f"worker exited {code}")
    noticed = _outage_lines(worker.log_path)
    out.details["worker_outage_log_lines"] = noticed
    out.expect(noticed > 0, "the worker never noticed the outage (it hit nothing)")
    count_study(out, api, stage.db_url, study_id, n_trials)
    out.server_errors += api.server_errors()
    return out


def _outage_lines(log: Path) -> int:
    """Lines where the worker logged a failed storage call it retried or tolerated."""
    text = log.read_text(errors="replace")
    return sum(
        1
        for line in text.splitlines()
        if "retrying" in line
        or "heartbeat for trial" in line
        or "cannot read the study's status" in line
    )


def failing_trials(stage: Stage) -> Outcome:
    """Trials that raise fail alone and the worker lives on: a dataset file deleted under a
    study (the study fails after 3 such trials, with the reason), a loss that becomes NaN
    (both trials of a 2-trial study: it fails, as no trial completed)."""
    out = Outcome("failing trials (dataset deleted, NaN loss)", faults=2)
    _, api = stage.api()
    doomed_data = api.upload(npz_bytes())
    diverging_data = api.upload(npz_bytes(regression=True))
    doomed = api.create(tiny_spec(3, 2, task={"dataset": doomed_data}))
    (stage.data_dir / "datasets" / f"{doomed_data}.npz").unlink()
    nan = api.create(
        tiny_spec(
            2,
            3,
            ranges={"initial_lr": {"low": 1, "high": 10, "log": True}},
            task={"dataset": diverging_data, "optimizer": "sgd", "batch_size": 20},
        )
    )
    healthy = api.create(tiny_spec(2, 2))
    worker = stage.worker("worker")
    finals = {sid: api.wait_final(sid, 300) for sid in (doomed, nan, healthy)}
    reasons = {sid: [t["fail_reason"] for t in api.trials(sid)] for sid in (doomed, nan)}
    out.details.update(doomed_error=finals[doomed]["error"], nan_reasons=reasons[nan])
    out.expect(
        finals[doomed]["status"] == "failed" and "dataset" in str(finals[doomed]["error"]),
        f"deleted-dataset study: {finals[doomed]['status']}",
    )
    out.expect(
        len(reasons[doomed]) == 3 and all("DatasetError" in str(r) for r in reasons[doomed]),
        str(reasons[doomed]),
    )
    nan_error = str(finals[nan]["error"])
    out.details.update(nan_error=nan_error)
    out.expect(  # no trial completed: failed with the reasons (it used to say "completed")
        finals[nan]["status"] == "failed"
        and finals[nan]["progress"]["failed"] == 2
        and nan_error.startswith("no trial completed (2 failed): diverged at epoch"),
        f"NaN study: {finals[nan]['status']} {finals[nan]['progress']} {nan_error}",
    )
    out.expect(all("diverged" in str(r) for r in reasons[nan]), str(reasons[nan]))
    out.expect(
        finals[healthy]["status"] == "completed" and finals[healthy]["progress"]["complete"] == 2,
        "healthy study",
    )
    out.expect(worker.alive(), "the worker died")
    out.expect(worker.stop(60) == 0, "the worker did not exit 0")
    for sid, n in ((doomed, 3), (nan, 2), (healthy, 2)):
        count_study(out, api, stage.db_url, sid, n)
    out.server_errors += api.server_errors()
    return out


# --- bad inputs: each must be a 4xx problem naming the field ---------------------------------


def sequential(*layers: dict[str, Any]) -> str:
    """A Keras 3 `Sequential.to_json()` text built by hand (no Keras import in API tests):
    digits' (8, 8) examples flattened to 64 values, then `layers`."""
    inputs = {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "registered_name": None,
        "config": {"batch_shape": [None, 8, 8], "dtype": "float32", "name": "features"},
    }
    flatten = {
        "module": "keras.layers",
        "class_name": "Flatten",
        "registered_name": None,
        "config": {"name": "flatten"},
    }
    return json.dumps(
        {
            "module": "keras",
            "class_name": "Sequential",
            "registered_name": None,
            "config": {"name": "m", "layers": unique_names([inputs, flatten, *layers])},
        }
    )


def dense(units: int = 10, **over: Any) -> dict[str, Any]:
    """A serialized Dense layer; `over` replaces top-level keys (module, class_name...)."""
    return {
        "module": "keras.layers",
        "class_name": "Dense",
        "registered_name": None,
        "config": {"name": f"dense_{units}", "units": units, "activation": "softmax"},
        **over,
    }


LAMBDA = {
    "module": "keras.layers",
    "class_name": "Lambda",
    "registered_name": None,
    "config": {
        "name": "l",
        "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAA"}},
    },
}


def keras_json_spec(model: str | dict[str, Any]) -> dict[str, Any]:
    """A spec training this model JSON (a layer dict is wrapped in a Sequential first)."""
    config = model if isinstance(model, str) else sequential(model)
    return {"task": {"model": {"kind": "keras_json", "config": config}, "epochs": 2}}


BAD_SPECS: list[tuple[str, Any, str]] = [
    (
        "inverted-range",
        {"ranges": {"initial_lr": {"low": 0.1, "high": 0.001}}},
        "ranges.initial_lr",
    ),
    ("trials-1e9", {"n_trials": 1e9}, "n_trials"),
    ("lr-zero", {"ranges": {"initial_lr": {"low": 0, "high": 0.1}}}, "ranges.initial_lr"),
    (
        "decay-rate-2",
        {"strategies": ["exponential"], "ranges": {"decay_rate": {"low": 0.5, "high": 2}}},
        "ranges.decay_rate",
    ),
    ("bool-for-int", {"n_trials": True}, "n_trials"),
    ("bool-for-float", {"ranges": {"initial_lr": {"low": True, "high": 0.1}}}, "ranges.initial_lr"),
    ("digits-for-int", {"n_trials": "3"}, "n_trials"),
    ("text-for-bool", {"range_test": "yes"}, "range_test"),
    (
        "number-for-bool",
        {"ranges": {"initial_lr": {"low": 0.001, "high": 0.1, "log": 1}}},
        "ranges.initial_lr.log",
    ),
    ("string-for-list", {"strategies": "constant"}, "strategies"),
    ("text-for-number", {"task": {"epochs": "ten"}}, "task.epochs"),
    ("nul-in-name", {"name": "a\x00b"}, "name"),
    (
        "nul-in-key",
        {"ranges": {"initial_lr\x00": {"low": 0.001, "high": 0.1}}},
        "ranges.initial_lr\x00",
    ),
    ("dataset-traversal", {"task": {"dataset": "../../etc/passwd"}}, "task.dataset"),
    ("lambda-layer", keras_json_spec(sequential(LAMBDA, dense())), "task.model.config"),
    (
        "foreign-module",
        keras_json_spec(sequential(dense(module="evil.layers"))),
        "task.model.config",
    ),
    (
        "custom-registered",
        keras_json_spec(sequential(dense(registered_name="My>Dense"))),
        "task.model.config",
    ),
    ("not-a-model", keras_json_spec(json.dumps(dense())), "task.model.config"),
    (
        "unknown-class",
        keras_json_spec(sequential(dense(class_name="Dense; import os"))),
        "task.model.config",
    ),
    ("model-not-json", keras_json_spec("{not json"), "task.model.config"),
]


def csv_bytes(header: list[str], rows: int) -> bytes:
    """A CSV with this header and `rows` rows of 0/1 values."""
    lines = [",".join(header)] + [",".join(str(i % 2) for _ in header) for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def npz_of(**arrays: Any) -> bytes:
    """These arrays as NPZ bytes."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_EMPTY = {
    "x_train": np.zeros((0, 3)),
    "y_train": np.zeros(0, dtype=int),
    "x_val": np.zeros((0, 3)),
    "y_val": np.zeros(0, dtype=int),
}
BAD_UPLOADS: list[tuple[str, bytes, str, dict[str, str], str, int]] = [
    ("csv-zero-rows", csv_bytes(["a", "b", "label"], 0), "t.csv", {"target": "label"}, "file", 422),
    ("csv-no-target-column", csv_bytes(["a", "b"], 30), "t.csv", {"target": "label"}, "file", 422),
    ("csv-no-target-field", csv_bytes(["a", "label"], 30), "t.csv", {}, "target", 422),
    (
        "csv-too-many-columns",
        csv_bytes([f"c{i}" for i in range(100_002)] + ["label"], 3),
        "t.csv",
        {"target": "label"},
        "file",
        422,
    ),
    ("csv-not-utf8", b"a,label\n\xff\xfe,1\n", "t.csv", {"target": "label"}, "file", 422),
    ("npz-zero-rows", npz_of(**_EMPTY), "z.npz", {}, "file", 422),
    ("npz-garbage", b"PK\x03\x04" + b"\x00" * 64, "g.npz", {}, "file", 422),
    (
        "nul-in-name",
        csv_bytes(["a", "label"], 30),
        "t.csv",
        {"target": "label", "name": "x\x00y"},
        "name",
        422,
    ),
]


# Ids shaped like paths, encoded the ways a client can send them. None may reach a file.
TRAVERSAL_IDS = [
    "..",
    "..%2F..%2Fsentinel",
    "%2E%2E%2F%2E%2E%2Fsentinel",
    "..%5C..%5Csentinel",
    "sentinel%00",
    "%00",
    "a%2Fb",
    "x" * 300,
    "%C0%AE%C0%AE%2Fsentinel",  # overlong UTF-8 dots
]
ID_ROUTES = [
    ("GET", "/v1/studies/{id}"),
    ("POST", "/v1/studies/{id}/cancel"),
    ("DELETE", "/v1/studies/{id}"),
    ("GET", "/v1/studies/{id}/trials"),
    ("GET", "/v1/studies/{id}/trials/0"),
    ("GET", "/v1/studies/{id}/best"),
    ("GET", "/v1/studies/{id}/plots/lr.png"),
    ("GET", "/v1/datasets/{id}"),
    ("DELETE", "/v1/datasets/{id}"),
]


def as_json(outcomes: list[Outcome]) -> str:
    return json.dumps([o.__dict__ | {"ok": o.ok} for o in outcomes], indent=2, default=str)
