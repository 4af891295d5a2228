"""`lrsearch serve`'s watch over its worker processes: a worker that dies (killed, out of
memory, crashed) is started again in its slot, with the same GPU placement, after a back-off
that doubles while it keeps dying young, so a worker that cannot start does not spin."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("lrsearch.supervisor")

FIRST_BACKOFF_S = 1.0  # before the first restart of a slot
MAX_BACKOFF_S = 60.0  # the back-off doubles up to this
STABLE_AFTER_S = 60.0  # a worker that lived this long resets its slot's back-off
POLL_S = 0.5  # between two looks at the workers

Spawn = Callable[[], subprocess.Popen[bytes]]


@dataclass
class _Slot:
    """One worker position: how to start it, its current process and its back-off."""

    spawn: Spawn
    proc: subprocess.Popen[bytes]
    started: float
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None  # set while the slot waits out its back-off
    restarts: int = 0


class Supervisor:
    """`with Supervisor(spawns):` keeps one process per spawn function alive until the block
    ends; `stop()` (or leaving the block) stops watching and returns the processes to end."""

    def __init__(self, spawns: list[Spawn], poll_s: float = POLL_S) -> None:
        now = time.monotonic()
        self._slots = [_Slot(spawn, spawn(), now) for spawn in spawns]
        self._poll_s = poll_s
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="supervisor")

    def __enter__(self) -> Supervisor:
        if self._slots:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The current process of every slot (a dead one until its restart)."""
        with self._lock:
            return [slot.proc for slot in self._slots]

    def stop(self) -> list[subprocess.Popen[bytes]]:
        """Stop restarting (before the workers are terminated on purpose)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.processes()

    def _watch(self) -> None:
        while not self._done.wait(self._poll_s):
            for index, slot in enumerate(self._slots):
                self._check(index, slot, time.monotonic())

    def _check(self, index: int, slot: _Slot, now: float) -> None:
        code = slot.proc.poll()
        if code is None:
            if now - slot.started >= STABLE_AFTER_S:
                slot.backoff_s = FIRST_BACKOFF_S
            return
        if slot.restart_at is None:
            lived = now - slot.started
            if lived >= STABLE_AFTER_S:
                slot.backoff_s = FIRST_BACKOFF_S
            slot.restart_at = now + slot.backoff_s
            log.warning(
                "worker %d (pid %d) exited with code %s after %.0fs; restarting it in %.0fs",
                index,
                slot.proc.pid,
                code,
                lived,
                slot.backoff_s,
            )
            slot.backoff_s = min(MAX_BACKOFF_S, slot.backoff_s * 2)
            return
        if now < slot.restart_at or self._done.is_set():
            return
        try:
            proc = slot.spawn()
        except OSError as exc:
            slot.restart_at = now + slot.backoff_s
            log.error("cannot restart worker %d: %s", index, exc)
            return
        with self._lock:
            old_pid, slot.proc = slot.proc.pid, proc
        slot.started, slot.restart_at = now, None
        slot.restarts += 1
        log.warning(
            "worker %d restarted (pid %d, was %d; restart %d)",
            index,
            proc.pid,
            old_pid,
            slot.restarts,
        )
