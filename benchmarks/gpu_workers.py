"""GPU workers: trials per minute with 1, 2, 4 and 8 workers sharing one GPU.

Real processes only: `lrsearch serve --workers K --gpus G --gpu-memory-mb M` (the API and K
workers, each worker a TensorFlow logical device of M MiB on GPU G, M = 90% of the GPU's
memory / K unless --gpu-memory-mb says otherwise) on a fresh database per K (its own SQLite
file, or --database-url). For each model (the digits MLP and a small CNN on the 8x8 digit
images) and each K: a warm-up study (every worker loads TensorFlow, the dataset and compiles
once), then the measured study of N trials (no pruning, rates kept below divergence so every
trial trains all its epochs), timed from its POST to its last trial's completion by the
trials' own timestamps. A small model leaves a big GPU mostly idle, so several workers should
overlap one another's host-side work (batching, reports, the database) with GPU compute; the
table says from which K that stops paying.

    .venv/bin/python benchmarks/gpu_workers.py [--workers 1,2,4,8] [--trials 32] [--epochs 5]
        [--gpu 0] [--gpu-memory-mb M] [--database-url URL] [--out FILE]

Last line: best_workers=K speedup=<trials/min with K workers / with 1, geometric mean over the
models>. On a machine without a GPU it says so and exits 0 (nothing to measure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx

from service.cli.server import stop_processes
from service.client import Client
from service.demo import free_port, start_server, wait_ready

MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"kind": "mlp", "hidden": [64, 32]},
    "cnn": {"kind": "cnn", "filters": [16, 32], "dense": 64},
}
BATCH = 64
POLL_S = 1.0
MEMORY_SHARE = 0.9  # of the GPU's memory, split between the workers


def study_body(name: str, model: dict[str, Any], n_trials: int, epochs: int) -> dict[str, Any]:
    """Equal-length trials: no pruning, rates that do not diverge, a fixed seed."""
    return {
        "name": name,
        "task": {"dataset": "digits", "model": model, "epochs": epochs, "batch_size": BATCH},
        "n_trials": n_trials,
        "pruner": "none",
        "ranges": {"initial_lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        "seed": 0,
    }


# --- the GPU ----------------------------------------------------------------------------------


def gpu_memory_mib() -> list[int]:
    """Total memory of each GPU the driver reports (nvidia-smi); empty without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    done = subprocess.run(
        [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        return []
    return [int(float(line)) for line in done.stdout.split() if line.strip()]


def tensorflow_gpus() -> int:
    """How many GPUs TensorFlow itself sees (in a child: this process stays TF-free)."""
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = done.stdout.split()
    return int(lines[-1]) if done.returncode == 0 and lines else 0


# --- one measurement --------------------------------------------------------------------------


def run_study(http: httpx.Client, body: dict[str, Any], timeout_s: float) -> tuple[float, str]:
    """POST and wait for `completed`; returns (the POST's wall-clock time, study id)."""
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


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def measure(args: argparse.Namespace, model: str, workers: int, memory_mb: int) -> dict[str, Any]:
    """`lrsearch serve` with `workers` workers on the GPU: a warm-up study, then the measured."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"lrsearch-gpu-{model}-{workers}-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    placement = ["--gpus", str(args.gpu), "--gpu-memory-mb", str(memory_mb)]
    server = start_server(
        data_dir, port, workers, args.database_url, tf_threads=threads, serve_args=placement
    )
    http = httpx.Client(base_url=base, timeout=30)
    try:
        wait_ready(base, timeout_s=300, server=server, log=data_dir / "serve.log")
        spec = MODELS[model]
        run_study(http, study_body("warm-up", spec, 2 * workers, args.epochs), 1800)
        posted, study_id = run_study(
            http, study_body("measured", spec, args.trials, args.epochs), 3600
        )
        trials = list(Client(http=http).study(study_id).trials(page_size=500))
    finally:
        http.close()
        stop_processes([server])
        shutil.rmtree(data_dir, ignore_errors=True)
    states = {t["state"] for t in trials}
    if states != {"complete"}:
        raise SystemExit(f"{model}, {workers} workers: trials are not all complete: {states}")
    wall_s = max(_time(t["datetime_complete"]) for t in trials) - posted
    return {
        "model": model,
        "workers": workers,
        "memory_mb": memory_mb,
        "trials": len(trials),
        "wall_s": wall_s,
        "trials_per_min": 60 * len(trials) / wall_s,
    }


# --- the summary ------------------------------------------------------------------------------


def speedups(results: list[dict[str, Any]]) -> dict[int, float]:
    """Per K: the geometric mean over the models of (trials/min with K) / (with 1)."""
    rate = {(r["model"], r["workers"]): r["trials_per_min"] for r in results}
    models = sorted({r["model"] for r in results})
    ks = sorted({r["workers"] for r in results})
    return {
        k: math.exp(sum(math.log(rate[m, k] / rate[m, ks[0]]) for m in models) / len(models))
        for k in ks
    }


def print_table(results: list[dict[str, Any]]) -> None:
    first = {r["model"]: r["trials_per_min"] for r in results if r["workers"] == 1}
    print(
        f"{'model':<6}{'workers':>8}{'MiB each':>10}{'trials':>8}{'wall s':>9}"
        f"{'trials/min':>12}{'x 1 worker':>12}"
    )
    for r in results:
        ratio = r["trials_per_min"] / first[r["model"]] if r["model"] in first else float("nan")
        print(
            f"{r['model']:<6}{r['workers']:>8}{r['memory_mb']:>10}{r['trials']:>8}"
            f"{r['wall_s']:>9.1f}{r['trials_per_min']:>12.1f}{ratio:>12.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts (1 comes first)")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--gpu", type=int, default=0, help="the GPU index the workers share")
    parser.add_argument("--gpu-memory-mb", type=int, help="per worker (default: 90%% / K)")
    parser.add_argument("--database-url", help="default: a fresh SQLite file per run")
    parser.add_argument("--out", default="benchmarks/out/gpu_workers.json")
    args = parser.parse_args()
    counts = sorted({int(k) for k in args.workers.split(",")} | {1})

    memory = gpu_memory_mib()
    if not memory or tensorflow_gpus() == 0:
        print("no GPU found (nvidia-smi reports none, or TensorFlow sees none): nothing to measure")
        return 0
    if args.gpu >= len(memory):
        raise SystemExit(f"--gpu {args.gpu}: the machine has {len(memory)} GPU(s)")
    print(
        f"GPU {args.gpu}: {memory[args.gpu]} MiB; digits, {args.epochs} epochs, "
        f"{args.trials} trials per study, workers {counts}"
    )
    results = []
    for model in MODELS:
        for k in counts:
            share = args.gpu_memory_mb or int(memory[args.gpu] * MEMORY_SHARE / k)
            results.append(measure(args, model, k, share))
            print(f"  {model} x{k}: {results[-1]['trials_per_min']:.1f} trials/min", flush=True)
    print_table(results)
    gains = speedups(results)
    best = max(gains, key=lambda k: gains[k])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "args": vars(args),
                "gpu_mib": memory,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"best_workers={best} speedup={gains[best]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
