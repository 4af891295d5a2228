"""A worker's liveness row while it runs: registered at start with what it can run (its
task plugins with their versions, its device), `last_seen` and the trial it trains now
refreshed every heartbeat interval by a thread (training blocks the loop for minutes),
deleted on a clean exit."""

from __future__ import annotations

import logging
import os
import socket
import threading

from search import store
from search.worker.resources import WorkerResources

log = logging.getLogger("lrsearch.worker.liveness")


class Liveness:
    """`with Liveness(...):` keeps this worker's row fresh for as long as the block runs."""

    def __init__(self, resources: WorkerResources, plugins: dict[str, str], device: str) -> None:
        self.worker_id = store.new_id()
        self._resources, self._plugins, self._device = resources, dict(plugins), device
        self._interval = resources.config.heartbeat_interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="liveness")

    def __enter__(self) -> Liveness:
        self._register()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        try:
            with self._resources.sessions() as session:
                store.remove_worker(session, self.worker_id)
        except Exception as exc:  # the row then ages out of the live window
            log.warning("cannot remove the worker's liveness row: %s", exc.__class__.__name__)

    def _register(self) -> None:
        try:
            with self._resources.sessions() as session:
                store.register_worker(
                    session,
                    self.worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    device=self._device,
                    plugins=self._plugins,
                )
        except Exception as exc:  # the database is away: the next beat registers again
            log.warning("cannot register the worker: %s", exc.__class__.__name__)

    def _beat(self) -> None:
        while not self._done.wait(self._interval):
            try:
                with self._resources.sessions() as session:
                    found = store.touch_worker(
                        session, self.worker_id, current_trial=self._resources.current_trial
                    )
            except Exception as exc:
                log.warning("liveness refresh failed: %s", exc.__class__.__name__)
                continue
            if not found:  # pruned, or never registered (the database was away at start)
                self._register()
