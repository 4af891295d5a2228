"""Worker scaling on PostgreSQL: trials per minute with 1 and 2 worker processes, where a
trial's time goes, and how far a trial's cost is from its pure compute.

Real processes only: `lrsearch api` and K `lrsearch worker` processes (LRSEARCH_TF_THREADS=1,
so two workers on two cores do not fight over them) on a fresh PostgreSQL database that is
dropped at the end. For each K: a warm-up study (every worker loads TensorFlow, the dataset and
compiles the model once), then the measured study of N trials (digits MLP, 5 epochs, no
pruning, rates kept below divergence so every trial trains all its epochs), timed from its
POST to its last trial's completion. K = 1 and K = 2 alternate for R rounds, so a slow spell
of a shared machine hits both, and each K's rate pools its rounds (all trials over all wall
time). CPU busy is per process, plus all PostgreSQL server processes together, plus this
script's own polling (one keep-alive client: it should stay near 0.01). The whole machine's
CPU per trial, per K, tells whether a second worker wastes CPU (it rises with K) or only
leaves cores idle (it stays the same). Run it with another
checkout's code (a baseline) by putting that checkout first:
`cd BASE && PYTHONPATH=BASE python /path/to/this/worker_scaling.py`.

The per-trial split is read from the outside (1 worker, median over the measured trials):
claim = previous trial's completion -> this trial's start (pick a study, claim a slot, open it,
ask); fit = the Trainer's `seconds` (sample, build the schedule, fit with per-epoch report,
prune check and checkpoint); report = the rest of the trial (heartbeat, user attrs, tell).
dataset and build are paid once per worker: the first trial's extra claim time and extra trial
time over the median. Pure compute is `model.fit` of the same compiled model for the same
epochs in this process, warm (what a user's own training costs); the stricter floor is the
same epochs through lrsearch's epoch loop alone (`search.training.epoch_loop`); "engine only" is a
whole trial (ask, TPE, Trainer.run, tell) on an in-memory Optuna study in this process, to
separate the engine from the coordination through the database.
The ceiling is the same engine-only loop in two processes at once against one: what two
workers could gain on this machine if coordination cost nothing.

    .venv/bin/python benchmarks/worker_scaling.py [--trials 120] [--rounds 3] [--epochs 5]
        [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--out benchmarks/out/worker_scaling.json]

Last line: scaling=<trials per minute with 2 workers / with 1, all rounds> (target >= 1.7).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["LRSEARCH_TF_THREADS"] = "1"

import httpx

from service.cli.server import stop_processes
from service.client import Client
from service.demo import free_port, wait_ready

MODEL = {"kind": "mlp", "hidden": [64, 32]}
BATCH = 64
POLL_S = 1.0  # between status reads of a running study


def study_body(name: str, n_trials: int, epochs: int) -> dict[str, Any]:
    """Equal-length trials: no pruning, rates that do not diverge, same seed (shared graph)."""
    return {
        "name": name,
        "task": {"dataset": "digits", "model": MODEL, "epochs": epochs, "batch_size": BATCH},
        "n_trials": n_trials,
        "pruner": "none",
        "ranges": {"initial_lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        "seed": 0,
    }


# --- PostgreSQL database and processes -------------------------------------------------------


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new database for this run, dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg

    name = f"lrsearch_bench_scaling_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Processes:
    """The API and the workers of one measurement, with their logs in a temp dir."""

    def __init__(self, database_url: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lrsearch-scaling-"))
        self.env = {
            **os.environ,
            "LRSEARCH_DATABASE_URL": database_url,
            "LRSEARCH_DATA_DIR": str(self.root),
            "LRSEARCH_TF_THREADS": "1",
        }
        self.env.pop("DATABASE_URL", None)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []

    def start(self, name: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "service.cli", *args]
        with open(self.root / f"{name}.log", "wb") as log:
            self.procs.append(
                subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            )
        self.names.append(name)

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far of each live process, and of all PostgreSQL server
        processes on this machine together (Linux /proc; else empty)."""
        out = {}
        for name, proc in zip(self.names, self.procs, strict=True):
            seconds = _process_cpu_s(proc.pid)
            if seconds is not None:
                out[name] = seconds
        postgres = [_process_cpu_s(pid) for pid in _pids_named("postgres")]
        if postgres:
            out["postgres"] = sum(s for s in postgres if s is not None)
        return out

    def stop(self) -> None:
        stop_processes(self.procs, timeout_s=60)
        shutil.rmtree(self.root, ignore_errors=True)


def _machine_cpu() -> dict[str, int]:
    """The machine's CPU time so far by kind, in clock ticks (Linux /proc/stat; else empty)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    except OSError:
        return {}
    kinds = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return dict(zip(kinds, map(int, fields), strict=True))


def _machine_shares(ticks: dict[str, int], wall_s: float) -> dict[str, float]:
    """Busy, iowait and steal of the whole machine in cores over the study's `wall_s`, and the
    idle rest. The ticks run on until the poll sees the study end (up to POLL_S later), when
    the machine is nearly idle: averaging over them would understate busy, over wall_s not."""
    if not ticks or wall_s <= 0:
        return {}
    per_s = os.sysconf("SC_CLK_TCK") * wall_s
    shares = {
        "busy": _machine_core_s(ticks) / wall_s,
        "iowait": ticks["iowait"] / per_s,
        "steal": ticks["steal"] / per_s,
    }
    cores = os.cpu_count() or 1
    shares["idle"] = max(0.0, cores - sum(shares.values()))
    return {k: round(shares[k], 2) for k in ("busy", "idle", "iowait", "steal")}


def _machine_core_s(ticks: dict[str, int]) -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores)."""
    if not ticks:
        return 0.0
    busy = sum(ticks.values()) - ticks["idle"] - ticks["iowait"] - ticks["steal"]
    return busy / os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _pids_named(command: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == command:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def run_study(http: httpx.Client, body: dict[str, Any], timeout_s: float) -> tuple[float, str]:
    """POST and wait for `completed`; returns (the POST's wall-clock time, study id).

    One keep-alive client for every call: `httpx.get` builds a new client (and TLS context)
    per call, ~38 ms of CPU here, so polling with it every 0.2 s took ~0.18 of the 2 cores
    from the workers being measured. It polls once a second, as `lrsearch wait` does: each
    status read costs the API and PostgreSQL ~8 ms of CPU (0.04 cores at five a second), and
    the wall time comes from the trials' own timestamps, not from when the poll saw the end."""
    started = time.time()
    created = http.post("/v1/studies", json=body)
    created.raise_for_status()
    study_id = created.json()["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = http.get(f"/v1/studies/{study_id}").json()
        if status["status"] == "completed":
            return started, study_id
        if status["status"] in ("failed", "cancelled"):
            raise SystemExit(f"study {study_id} ended {status['status']}: {status.get('error')}")
        time.sleep(POLL_S)
    raise SystemExit(f"study {study_id} did not complete within {timeout_s:.0f}s")


# --- measurements -----------------------------------------------------------------------------


def measure(database_url: str, workers: int, n_trials: int, epochs: int) -> dict[str, Any]:
    """One API and `workers` workers: a warm-up study, then the measured one."""
    procs = Processes(database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base, timeout=30)
    try:
        procs.start("api", "api", "--host", "127.0.0.1", "--port", str(port))
        wait_ready(base, timeout_s=180)
        for i in range(workers):
            procs.start(f"worker{i}", "worker")
        warm_posted, warm_id = run_study(http, study_body("warm-up", 3 * workers, epochs), 600)
        cpu_before, client_before = procs.cpu_seconds(), time.process_time()
        machine_before = _machine_cpu()
        posted, study_id = run_study(http, study_body("measured", n_trials, epochs), 1800)
        machine = {k: v - machine_before.get(k, 0) for k, v in _machine_cpu().items()}
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in procs.cpu_seconds().items()}
        cpu["this client"] = time.process_time() - client_before
        client = Client(http=http)  # trials come by number, page after page
        warm = list(client.study(warm_id).trials(page_size=500))
        trials = list(client.study(study_id).trials(page_size=500))
    finally:
        http.close()
        procs.stop()
    # from the POST to the last trial's completion (server clock = this clock): the client's
    # status polling adds nothing
    wall_s = max(_time(t["datetime_complete"]) for t in trials) - posted
    warm_s = max(_time(t["datetime_complete"]) for t in warm) - warm_posted
    states = {t["state"] for t in trials}
    if states != {"complete"}:
        raise SystemExit(f"measured trials are not all complete: {states}")
    return {
        "workers": workers,
        "trials": n_trials,
        "wall_s": wall_s,
        "trials_per_min": 60 * n_trials / wall_s,
        "warm_up_s": warm_s,
        "trial_wall_s_median": statistics.median(_trial_wall(t) for t in trials),
        "fit_s_median": statistics.median(float(t["seconds"]) for t in trials),
        # CPU seconds per wall second of the measured study, per process (1.0 = one core)
        "cpu_busy": {k: round(v / wall_s, 2) for k, v in cpu.items()},
        # the whole machine, in cores: what else ran, what stayed idle, what the host took
        "machine": _machine_shares(machine, wall_s),
        # the whole machine's busy CPU seconds: per trial, equal for 1 and 2 workers when the
        # second worker wastes nothing (then only idle cores keep scaling below 2)
        "machine_core_s": _machine_core_s(machine),
        "split": split(warm, trials) if workers == 1 else None,
    }


def pooled_rate(runs: list[dict[str, Any]]) -> float:
    """Trials per minute over several runs: all their trials over all their wall time."""
    return 60 * sum(r["trials"] for r in runs) / sum(r["wall_s"] for r in runs)


def pooled_core_s(runs: list[dict[str, Any]]) -> float:
    """The whole machine's busy CPU seconds per trial over several runs."""
    return sum(r["machine_core_s"] for r in runs) / sum(r["trials"] for r in runs)


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _trial_wall(t: dict[str, Any]) -> float:
    return _time(t["datetime_complete"]) - _time(t["datetime_start"])


def split(warm: list[dict[str, Any]], trials: list[dict[str, Any]]) -> dict[str, float]:
    """Median per-trial phases of a one-worker run (see the module docstring)."""
    gaps = [
        _time(b["datetime_start"]) - _time(a["datetime_complete"])
        for a, b in itertools.pairwise(trials)
    ]
    claim = statistics.median(gaps)
    fit = statistics.median(float(t["seconds"]) for t in trials)
    report = statistics.median(_trial_wall(t) - float(t["seconds"]) for t in trials)
    steady = statistics.median(_trial_wall(t) for t in trials)
    return {
        "claim": claim,
        "fit": fit,
        "report": report,
        "trial": claim + fit + report,
        # paid once per worker: TensorFlow import, build, compile and tracing
        "first_trial_extra": _trial_wall(warm[0]) - steady,
    }


def pure_compute(epochs: int, repeats: int = 3) -> dict[str, float]:
    """In this process: load digits, build and compile the Trainer's setup, then `model.fit`
    for `epochs` (first: with tracing; then warm, median of `repeats`)."""
    import keras
    import tensorflow as tf

    from search.data import load_dataset
    from search.spec import MlpModel
    from search.training.devices import configure_devices
    from search.training.models import build_model, loss_and_metrics

    configure_devices()
    started = time.perf_counter()
    data = load_dataset("digits", tempfile.gettempdir())
    dataset_s = time.perf_counter() - started
    started = time.perf_counter()
    model = build_model(MlpModel(hidden=MODEL["hidden"]), data, 0)
    loss, metrics = loss_and_metrics(data, model)
    steps = -(-len(data.x_train) // BATCH)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=loss,
        metrics=metrics,
        steps_per_execution=steps,
    )
    build_s = time.perf_counter() - started
    train = (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(len(data.x_train), seed=0)
        .batch(BATCH)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(1024).cache()
    times = []
    for _ in range(repeats + 1):  # the first fit traces the graph
        started = time.perf_counter()
        model.fit(train, validation_data=val, epochs=epochs, verbose=0, shuffle=False)
        times.append(time.perf_counter() - started)
    return {
        "dataset": dataset_s,
        "build": build_s,
        "first_fit": times[0],
        "fit": statistics.median(times[1:]),
        "loop_fit": loop_compute(model, data, epochs, repeats),
        "engine_trial": engine_trial(data, epochs),
    }


def loop_compute(model: Any, data: Any, epochs: int, repeats: int) -> float | None:
    """The same epochs through lrsearch's epoch loop alone (one graph call per epoch, no
    callbacks): the stricter floor, what the training itself costs. None where there is no
    `search.training.epoch_loop` to import; a baseline run with PYTHONPATH=BASE from a venv that has
    this checkout installed in editable mode imports this checkout's loop instead."""
    try:
        from search.training.epoch_loop import EpochLoop
    except ImportError:  # a baseline checkout
        return None
    loop = EpochLoop(model, (data.x_train, data.y_train), (data.x_val, data.y_val), BATCH, 1024)
    times = []
    for _ in range(repeats + 1):  # the first traces the graph
        loop.restart()
        started = time.perf_counter()
        loop.fit(epochs=epochs, seed=0, callbacks=[])
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def engine_trial(data: Any, epochs: int, trials: int = 30, go: Path | None = None) -> float:
    """Median seconds of one whole trial (ask, TPE sampling, Trainer.run, tell) on an
    in-memory Optuna study: lrsearch's engine without the database and the worker loop.
    With `go`, the timed trials start once that file exists (to start several together)."""
    import optuna

    from search.spec import parse_spec
    from search.study_policy import make_sampler
    from search.training.trainer import Trainer

    spec = parse_spec(study_body("engine", trials, epochs))
    study = optuna.create_study(sampler=make_sampler(spec, 0), pruner=optuna.pruners.NopPruner())
    trainer, times = Trainer(), []
    for i in range(trials + 3):  # the first trials compile and trace
        while i == 3 and go is not None and not go.exists():
            time.sleep(0.01)
        started = time.perf_counter()
        trial = study.ask()
        study.tell(trial, trainer.run(trial, spec, data))
        if i >= 3:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def engine_pair(epochs: int) -> float:
    """Trials per second of two engine-only processes at once over one alone: the most two
    workers could gain on this machine if coordination cost nothing."""

    def run(k: int) -> float:
        go = Path(tempfile.mkdtemp(prefix="lrsearch-go-")) / "go"
        cmd = [sys.executable, __file__, "--engine-child", str(go), "--epochs", str(epochs)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
        time.sleep(5)
        while not all((go.parent / f"ready{p.pid}").exists() for p in procs):
            time.sleep(0.1)
        go.touch()
        medians = [float(p.communicate()[0].split()[-1]) for p in procs]
        return sum(1 / m for m in medians)

    return run(2) / run(1)


def _engine_child(go: str, epochs: int) -> None:
    from search.data import load_dataset
    from search.training.devices import configure_devices

    configure_devices()
    data = load_dataset("digits", tempfile.gettempdir())
    (Path(go).parent / f"ready{os.getpid()}").touch()
    print(engine_trial(data, epochs, go=Path(go)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL database to CREATE/DROP the scratch database from",
    )
    parser.add_argument("--out", default="benchmarks/out/worker_scaling.json")
    parser.add_argument("--engine-child", help=argparse.SUPPRESS)  # internal: engine_pair
    args = parser.parse_args()
    if args.engine_child:
        _engine_child(args.engine_child, args.epochs)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop servers, drop the DB

    pure = pure_compute(args.epochs)
    pair = engine_pair(args.epochs)
    pure_s = pure["fit"]
    results = []
    with scratch_database(args.admin_url) as url:
        for round_ in range(1, args.rounds + 1):  # interleaved: a slow spell hits both rows
            for workers in (1, 2):
                results.append({"round": round_, **measure(url, workers, args.trials, args.epochs)})
    rate = {k: pooled_rate([r for r in results if r["workers"] == k]) for k in (1, 2)}
    scaling = rate[2] / rate[1]
    machine_cost = {k: pooled_core_s([r for r in results if r["workers"] == k]) for k in (1, 2)}
    ones = [r for r in results if r["workers"] == 1]
    per_round = [
        two["trials_per_min"] / one["trials_per_min"]
        for one, two in zip(ones, [r for r in results if r["workers"] == 2], strict=True)
    ]

    print(
        f"digits MLP {MODEL['hidden']}, {args.epochs} epochs, {args.trials} trials per study,"
        f" {args.rounds} round(s) of 1 then 2 workers, PostgreSQL"
    )
    print(
        f"{'round':>6}{'workers':>8}{'wall s':>8}{'trials/min':>12}{'trial wall s':>14}"
        f"{'of which fit':>14}   CPU busy (cores)"
    )
    for r in results:
        busy = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_busy"].items())
        print(
            f"{r['round']:>6}{r['workers']:>8}{r['wall_s']:>8.1f}{r['trials_per_min']:>12.1f}"
            f"{r['trial_wall_s_median']:>14.3f}{r['fit_s_median']:>14.3f}   {busy}"
        )
        if r["machine"]:
            m = ", ".join(f"{k} {v:.2f}" for k, v in r["machine"].items())
            print(f"{'':>62}whole machine: {m}")
    print(
        f"all rounds: {rate[1]:.1f} trials/min with 1 worker, {rate[2]:.1f} with 2;"
        f" per round {', '.join(f'{x:.2f}' for x in per_round)}"
    )
    print(
        "whole machine CPU per trial (core-seconds, all rounds): "
        + ", ".join(f"{k} worker(s) {cost:.3f}" for k, cost in machine_cost.items())
    )
    s = {key: statistics.median(r["split"][key] for r in ones) for key in ones[0]["split"]}
    print("\nper-trial time, 1 worker (median seconds, median over rounds):")
    for key in ("claim", "fit", "report", "trial", "first_trial_extra"):
        print(f"  {key:<24}{s[key]:>8.3f}")
    print("once per worker, measured in this process (seconds):")
    for key in ("dataset", "build", "first_fit"):
        print(f"  {key:<24}{pure[key]:>8.3f}")
    cost_ratio = s["trial"] / pure_s
    engine_ratio = pure["engine_trial"] / pure_s
    print(
        f"\n{args.epochs}-epoch trial vs pure compute (model.fit, compiled, warm) {pure_s:.3f}s:"
        f"\n  engine only (in-memory study, TPE, Trainer): {pure['engine_trial']:.3f}s ="
        f" {engine_ratio:.2f}x"
        f"\n  worker on PostgreSQL (claim+fit+report): {s['trial']:.3f}s ="
        f" cost/compute {cost_ratio:.2f}x"
    )
    loop_s = pure["loop_fit"]
    if loop_s:
        print(
            f"  stricter: the same epochs through the epoch loop alone {loop_s:.3f}s;"
            f" worker trial = {s['trial'] / loop_s:.2f}x that"
        )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "args": vars(args),
        "results": results,
        "pure_compute": pure,
        "cost_over_compute": cost_ratio,
        "cost_over_loop_compute": s["trial"] / pure["loop_fit"] if pure["loop_fit"] else None,
        "engine_over_compute": engine_ratio,
        "trials_per_min": rate,
        "scaling_per_round": per_round,
        "machine_core_s_per_trial": machine_cost,
        "scaling": scaling,
        "engine_pair_scaling": pair,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        f"ceiling: two engine-only processes (no database) run {pair:.2f}x the trials per"
        f" second of one on this machine"
    )
    print(f"scaling={scaling:.3f}")


if __name__ == "__main__":
    main()
