"""`lrsearch serve` as a real subprocess for the tests that talk to it over HTTP only."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.cli.server import stop_processes
from service.demo import free_port, server_env, start_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Served:
    """A running `lrsearch serve`: its URL, its process, its log and its environment."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def worker_pids(self) -> list[int]:
        """The worker processes serve started (its children running `service.cli worker`)."""
        pids = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(
                    line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
                )
                cmdline = (status.parent / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(fields.get("PPid", "0")) == self.process.pid and b"worker" in cmdline:
                pids.append(int(status.parent.name))
        return pids


@contextmanager
def serve(data_dir: Path, env: dict[str, str] | None = None, workers: int = 1) -> Iterator[Served]:
    """Start `lrsearch serve --workers N` on a free loopback port with its own SQLite file;
    stop it (and its workers) afterwards."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / "serve.log"
    process = start_server(data_dir, port, workers, base_env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout_s=120, server=process, log=log)
        yield Served(url, process, log, server_env(data_dir, base_env=env))
    finally:
        stop_processes([process])


def wait_final(
    http: httpx.Client, study_id: str, timeout_s: float, on_poll: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Poll a study until it is completed, failed or cancelled; its final document."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        study: dict[str, Any] = http.get(f"/v1/studies/{study_id}").json()
        if study["status"] in ("completed", "failed", "cancelled"):
            return study
        if on_poll is not None:
            on_poll()
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} did not finish within {timeout_s:.0f}s")


def wait_offered(http: httpx.Client, plugins: set[str], timeout_s: float) -> dict[str, Any]:
    """Poll `/v1/tasks` until the live workers offer `plugins` (a worker process registers
    once it has started, a few seconds after the API answers); the offer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        offer: dict[str, Any] = http.get("/v1/tasks").json()
        if plugins <= {p["name"] for p in offer["plugins"]}:
            return offer
        time.sleep(0.3)
    raise AssertionError(f"no live worker offered {sorted(plugins)} within {timeout_s:.0f}s")
