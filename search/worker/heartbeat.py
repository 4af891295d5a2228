"""While a trial trains: its heartbeat (so a sweep can tell a dead worker from a slow one; one
thread beats for every member of a population), and the check that tells it to stop (the
worker is stopping, or the study was cancelled)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import optuna

log = logging.getLogger("lrsearch.worker.heartbeat")


class StopCheck:
    """Stop when the worker is told to, or the study was cancelled (asked at most once a second)."""

    def __init__(self, stop: threading.Event, cancelled: Callable[[], bool]) -> None:
        self._stop, self._cancelled = stop, cancelled
        self._last, self._answer = 0.0, False

    def __call__(self) -> bool:
        if self._stop.is_set():
            return True
        if time.monotonic() - self._last >= 1.0:
            self._last = time.monotonic()
            try:
                self._answer = self._cancelled()
            except Exception as exc:  # the database is away: keep training, ask again later
                log.warning("cannot read the study's status: %s", exc.__class__.__name__)
        return self._answer


class Heartbeats:
    """Records the heartbeat of every trial it holds, every interval, from one thread: each
    member of a population is alive on its own until it is dropped (told)."""

    def __init__(
        self, storage: optuna.storages.RDBStorage, interval: int, trial_ids: tuple[int, ...] = ()
    ) -> None:
        self._storage, self._interval = storage, interval
        self._trial_ids, self._lock = list(trial_ids), threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeats:
        for trial_id in self._held():
            self._record(trial_id)  # a trial without any heartbeat is only swept after leak_after_s
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def add(self, trial_id: int) -> None:
        """Beat for this trial too, from now on (its first heartbeat at once)."""
        with self._lock:
            self._trial_ids.append(trial_id)
        self._record(trial_id)

    def drop(self, trial_id: int) -> None:
        """This trial was told: no more heartbeats for it."""
        with self._lock:
            if trial_id in self._trial_ids:
                self._trial_ids.remove(trial_id)

    def _held(self) -> list[int]:
        with self._lock:
            return list(self._trial_ids)

    def _beat(self) -> None:
        while not self._done.wait(self._interval):
            for trial_id in self._held():
                self._record(trial_id)

    def _record(self, trial_id: int) -> None:
        try:
            self._storage.record_heartbeat(trial_id)
        except Exception:  # the database may be away for a moment; try again next beat
            log.warning("heartbeat for trial %s failed", trial_id)


class Heartbeat(Heartbeats):
    """Records one trial's heartbeat every interval while it trains."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        super().__init__(storage, interval, (trial_id,))
