"""`make demo`: start the embedded service, run a real study on digits, print the best schedule.

Everything is real: `lrsearch serve` (API + worker processes on a SQLite file), HTTP calls, Keras
training. Nothing is downloaded: digits ships with scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from service.cli.server import stop_processes

DEMO_SPEC: dict[str, Any] = {
    "name": "digits-demo",
    "task": {
        "dataset": "digits",
        "model": {"kind": "mlp", "hidden": [64, 32]},
        "epochs": 8,
        "batch_size": 64,
        "optimizer": "adam",
    },
    "objective": {"metric": "val_loss"},
    "n_trials": 16,
    "seed": 0,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(
    data_dir: Path,
    database_url: str | None = None,
    tf_threads: str = "1",
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment `start_server` gives `lrsearch serve`: `base_env` (default: this
    process's) with the data directory, the database (its own SQLite file under data_dir
    unless `database_url`) and the TensorFlow threads set."""
    env = {
        **(os.environ if base_env is None else base_env),
        "LRSEARCH_DATA_DIR": str(data_dir),
        "LRSEARCH_DATABASE_URL": database_url or f"sqlite:///{data_dir / 'lrsearch.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "LRSEARCH_TF_THREADS": tf_threads,
    }
    env.pop("DATABASE_URL", None)
    return env


def start_server(
    data_dir: Path,
    port: int,
    workers: int,
    database_url: str | None = None,
    tf_threads: str = "1",
    serve_args: Sequence[str] = (),
    base_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`lrsearch serve` on loopback, logging to data_dir/serve.log, in `server_env`'s
    environment; `serve_args` are more flags (e.g. --gpus 0)."""
    env = server_env(data_dir, database_url, tf_threads, base_env)
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *serve_args,
    ]
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(
    base: str,
    timeout_s: float = 120,
    server: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll /readyz; with `server`, stop at once (showing the end of `log`) if it exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise SystemExit(f"the server exited with {server.returncode}:\n{tail}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the API did not become ready at {base} within {timeout_s:.0f}s")


def run_study(http: httpx.Client, spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Submit, show progress on one line, and return the study's final state.

    `http` keeps one connection: a bare `httpx.get` per poll builds a new client and TLS
    context each time (~40 ms of CPU), taken from the workers training beside it."""
    created = http.post("/v1/studies", json=spec)
    created.raise_for_status()
    study_id = created.json()["id"]
    print(f"study {study_id} submitted ({spec['n_trials']} trials)")
    deadline, last = time.monotonic() + timeout_s, ""
    live = sys.stdout.isatty()  # redraw one line on a terminal, a line per change in a log
    while time.monotonic() < deadline:
        study: dict[str, Any] = http.get(f"/v1/studies/{study_id}").json()
        p = study["progress"]
        best = study.get("best_value")
        best_s = f"{best:.4f}" if best is not None else "-"
        line = (
            f"  {study['status']:<9} complete={p['complete']} pruned={p['pruned']} "
            f"failed={p['failed']} running={p['running']} best={best_s}"
        )
        if line != last:
            print(f"\r{line}" if live else line, end="" if live else "\n", flush=True)
            last = line
        if study["status"] in ("completed", "failed", "cancelled"):
            if live:
                print()
            return study
        time.sleep(1.0)
    raise SystemExit(f"\nstudy {study_id} did not finish within {timeout_s:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=DEMO_SPEC["n_trials"])
    parser.add_argument("--epochs", type=int, default=DEMO_SPEC["task"]["epochs"])
    parser.add_argument("--data-dir", default="var/demo")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        **DEMO_SPEC,
        "n_trials": args.trials,
        "task": {**DEMO_SPEC["task"], "epochs": args.epochs},
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(data_dir, port, args.workers)
    http = httpx.Client(base_url=base, timeout=30)
    try:
        wait_ready(base, server=server, log=data_dir / "serve.log")
        study = run_study(http, spec, args.timeout)
        if study["status"] != "completed":
            print(f"study ended {study['status']}: {study.get('error')}")
            return 1
        best = http.get(f"/v1/studies/{study['id']}/best").json()
        print(
            f"\nbest trial #{best['trial_number']}: {best['strategy']}"
            f"  val_loss={best['value']:.4f}"
        )
        print("params:", json.dumps(best["params"], indent=None))
        export = best["export"]
        print("keras schedule:", json.dumps(export["schedule"], indent=2))
        print("callbacks:", json.dumps(export["callbacks"]))
        print("\n# Python that rebuilds it:\n" + export["python"])
        return 0
    finally:
        http.close()
        stop_processes([server])


if __name__ == "__main__":
    sys.exit(main())
