"""API latency on PostgreSQL with 100 and with 10,000 stored trials, 32 concurrent clients.

Starts the real API (`lrsearch api`, uvicorn, in a subprocess) on a fresh PostgreSQL database,
creates a study through the API, stores finished trials through Optuna's public API (with the
same user attributes a worker writes), then measures p50/p99 of `GET /v1/studies/{id}`, `/best`
and a trials page (`/trials?limit=50&order=value`), plus `GET /healthz` (no database) as the
floor of the HTTP stack on the same machine.

The load generator is a small raw asyncio HTTP/1.1 client: 32 keep-alive connections, each
sending its next GET as soon as the previous answer is read (closed loop). httpx costs about a
millisecond of CPU per request, which on a 2-core box shared with the server and PostgreSQL
dominated the measurement; this client costs about a tenth of that. Every response is checked:
status 200 and the JSON shape of its endpoint (parsed in full, after the timed run, so parsing
does not delay the other connections) - a wrong answer aborts the run. The client's garbage
collector is off while it measures.

    .venv/bin/python benchmarks/api_latency.py [--requests 600] [--concurrency 32]
        [--processes 1] [--root PATH]   # --root: serve another checkout (e.g. a baseline)

Last line: growth=<worst p99 at 10k / same endpoint's p99 at 100>.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import optuna
import psycopg
import sqlalchemy as sa

from search.store.optuna_private import study_id as optuna_study_id
from service.demo import free_port, wait_ready

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
ROOT = Path(__file__).resolve().parents[1]
SPEC = {"name": "latency", "task": {"epochs": 10}, "n_trials": 10000, "strategies": ["exponential"]}
optuna.logging.set_verbosity(optuna.logging.WARNING)


def start_api(
    db_url: str, port: int, data_dir: Path, root: Path, processes: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LRSEARCH_DATABASE_URL": db_url,
        "LRSEARCH_DATA_DIR": str(data_dir),
        "LRSEARCH_RATE_LIMIT_PER_MINUTE": "100000",
        "PYTHONPATH": str(root),
    }
    cmd = [sys.executable, "-m", "service.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    return subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def fill(db_url: str, study_id: str, start: int, stop: int) -> None:
    """Store finished trials numbered start..stop-1 as a worker leaves them.

    The first trial goes through Optuna's public API; the rest copy its rows in bulk (with
    their own number and value), because adding 10,000 trials one by one takes many minutes.
    """
    study = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=db_url)
    if start == 0:
        study.add_trial(_template_trial())
        start = 1
    engine = sa.create_engine(db_url)
    meta = sa.MetaData()
    meta.reflect(engine, only=[*_CHILDREN, "trials"])
    trials = meta.tables["trials"]
    with engine.begin() as conn:
        template = (
            conn.execute(
                sa.select(trials).where(
                    trials.c.number == 0, trials.c.study_id == optuna_study_id(study)
                )
            )
            .mappings()
            .one()
        )
        rows = [
            {k: v for k, v in template.items() if k != "trial_id"} | {"number": n}
            for n in range(start, stop)
        ]
        ids = conn.execute(
            sa.insert(trials).returning(trials.c.trial_id, sort_by_parameter_order=True), rows
        )
        new_ids = [r[0] for r in ids]
        for table_name, pk in _CHILDREN.items():
            table = meta.tables[table_name]
            kids = (
                conn.execute(sa.select(table).where(table.c.trial_id == template["trial_id"]))
                .mappings()
                .all()
            )
            copies = [
                {k: v for k, v in kid.items() if k != pk}
                | {"trial_id": tid}
                | _value_for(table_name, kid, n)
                for n, tid in zip(range(start, stop), new_ids, strict=True)
                for kid in kids
            ]
            if copies:
                conn.execute(sa.insert(table), copies)
    engine.dispose()


_CHILDREN = {
    "trial_params": "param_id",
    "trial_values": "trial_value_id",
    "trial_intermediate_values": "trial_intermediate_value_id",
    "trial_user_attributes": "trial_user_attribute_id",
}


def _value_for(table_name: str, row: Any, number: int) -> dict[str, Any]:
    if table_name == "trial_values":
        return {"value": 1.0 / (1 + (number * 7919) % 10007)}
    return {}


def _template_trial() -> optuna.trial.FrozenTrial:
    lr = 1e-3
    dists = {
        "strategy": optuna.distributions.CategoricalDistribution(["exponential"]),
        "exponential.initial_lr": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
    }
    attrs = {
        "strategy": "exponential",
        "params": {"initial_lr": lr},
        "lr": [lr] * 10,
        "history": {"loss": [1.0] * 10, "val_loss": [1.0] * 10},
        "epochs_run": 10,
        "seconds": 0.5,
        "export": {
            "schedule": None,
            "callbacks": [],
            "initial_lr": lr,
            "optimizer": {"class_name": "Adam", "config": {}},
            "python": "x",
        },
    }
    return optuna.trial.create_trial(
        params={"strategy": "exponential", "exponential.initial_lr": lr},
        distributions=dists,
        value=1.0,
        user_attrs=attrs,
        intermediate_values={e: 1.0 for e in range(10)},
    )


def _has_export(best: Any) -> bool:
    """The export `apply()` takes; a --root baseline older than `export` spread it at the top."""
    if "export" in best:
        return {"schedule", "python"} <= set(best["export"])
    return {"keras", "python"} <= set(best)


Check = Callable[[Any], bool]
CHECKS: dict[str, Check] = {
    "status": lambda b: (
        {"id", "status", "progress", "best_value", "spec"} <= set(b)
        and b["progress"]["complete"] >= 100
    ),
    "best": lambda b: {"trial_number", "value"} <= set(b) and _has_export(b),
    "page": lambda b: (
        len(b["items"]) == 50
        and b["next_cursor"] is not None
        and {"number", "value", "lr", "history"} <= set(b["items"][0])
    ),
    "healthz": lambda b: b == {"status": "ok"},
}


async def _connection(
    port: int,
    request: bytes,
    queue: asyncio.Queue[int],
    latencies: list[float],
    answers: list[tuple[int, bytes]],
) -> None:
    """One keep-alive HTTP/1.1 connection sending GETs back to back until the queue is empty;
    answers are kept to be checked after the timed run (parsing them here would stall the
    other 31 connections' reads and be counted in their latency)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            answers.append((int(head.split(b" ", 2)[1]), body))
    finally:
        writer.close()


async def measure(port: int, path: str, n: int, concurrency: int, check: Check) -> list[float]:
    """Latencies in ms of n GETs of path, with `concurrency` connections each keeping one
    request in flight."""
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    answers: list[tuple[int, bytes]] = []
    gc.collect()
    gc.disable()  # the load generator's own collector pauses are not the server's latency
    try:
        await asyncio.gather(
            *(_connection(port, request, queue, latencies, answers) for _ in range(concurrency))
        )
    finally:
        gc.enable()
    for status, body in answers:  # every answer checked, after the clock
        if status != 200 or not check(json.loads(body)):
            raise RuntimeError(f"unexpected answer {status}: {body[:300]!r}")
    return latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(requests: int, concurrency: int, root: Path, processes: int) -> dict[str, Any]:
    name = f"lrsearch_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = start_api(db_url, port, Path("/tmp") / name, root, processes)
    results: dict[str, Any] = {}
    try:
        wait_ready(base)
        study_id = httpx.post(f"{base}/v1/studies", json=SPEC, timeout=30).json()["id"]
        stored = 0
        for size in (100, 10000):
            fill(db_url, study_id, stored, size)
            stored = size
            with psycopg.connect(
                ADMIN_DSN.replace("dbname=test", f"dbname={name}"), autocommit=True
            ) as conn:
                # The bulk fill is not how trials arrive; settle what autovacuum would do
                # next (so it does not run during the measurement) and refresh planner stats.
                conn.execute("VACUUM ANALYZE")
            paths = {
                "status": f"/v1/studies/{study_id}",
                "best": f"/v1/studies/{study_id}/best",
                "page": f"/v1/studies/{study_id}/trials?limit=50&order=value",
                "healthz": "/healthz",
            }
            for label, path in paths.items():
                check = CHECKS[label]
                asyncio.run(measure(port, path, 50, concurrency, check))  # warm-up
                lat = asyncio.run(measure(port, path, requests, concurrency, check))
                results[f"{label}@{size}"] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
    finally:
        api.terminate()
        api.wait(timeout=30)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1, help="`lrsearch api --processes`")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose API is served")
    parser.add_argument("--out", default="benchmarks/out/api_latency.json")
    args = parser.parse_args()
    results = run(args.requests, args.concurrency, args.root.resolve(), args.processes)
    print(f"{'endpoint':<10}{'trials':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for key, row in results.items():
        label, size = key.split("@")
        print(f"{label:<10}{size:>8}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}")
    growth = max(
        results[f"{e}@10000"]["p99_ms"] / results[f"{e}@100"]["p99_ms"]
        for e in ("status", "best", "page")
    )
    out = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%F"),
        "concurrency": args.concurrency,
        "requests": args.requests,
        "processes": args.processes,
        "root": str(args.root),
        "results": results,
        "growth": growth,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"growth={growth:.2f}")


if __name__ == "__main__":
    main()
