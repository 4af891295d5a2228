"""A trial's memory guard: while it trains, a watchdog thread samples the worker's resident
memory; past the worker's limit (LRSEARCH_WORKER_MEMORY_MB) it raises `TrialOutOfMemory` in
the training thread, so the trial fails alone instead of the kernel killing the worker.

Why a watchdog and not RLIMIT_AS or RLIMIT_DATA: TensorFlow reserves far more virtual memory
than it uses, and RLIMIT_DATA is unreliable with many threads; resident memory is what a
container's limit and the kernel's OOM killer count. The exception arrives at the training
thread's next Python instruction: between layers while a model is built, between epochs (one
graph call each) while it trains. One allocation larger than the headroom can still kill the
worker before that: the submit-time budget (search.model_size) is the first line, this the second.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from search.worker.config import MEMORY_ENV

log = logging.getLogger("lrsearch.worker.memory")
_MIB = 1024 * 1024
#: How often the watchdog samples the worker's resident memory.
SAMPLE_EVERY_S = 0.05


class TrialOutOfMemory(BaseException):
    """Raised in the training thread by the watchdog. A BaseException, like KeyboardInterrupt,
    so that no `except Exception` inside training code swallows it."""


def rss_bytes() -> int:
    """This process's resident memory (VmRSS); 0 where /proc is not there (no guard)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def over_limit_reason(rss: int, limit_mb: int) -> str:
    return (
        f"out of memory: worker RSS {rss // _MIB} MiB over the limit {limit_mb} MiB ({MEMORY_ENV})"
    )


class MemoryGuard:
    """Watches one region at a time (`watching`); `limit_mb` None: watches nothing."""

    def __init__(
        self,
        limit_mb: int | None,
        every_s: float = SAMPLE_EVERY_S,
        read_rss: Callable[[], int] = rss_bytes,
    ) -> None:
        self.limit_mb, self.every_s, self.read_rss = limit_mb, every_s, read_rss
        self.tripped: str | None = None  # the reason, once the last region went over

    def over_limit(self) -> str | None:
        """The reason when the process is over the limit now, else None."""
        if self.limit_mb is None:
            return None
        rss = self.read_rss()
        return over_limit_reason(rss, self.limit_mb) if rss > self.limit_mb * _MIB else None

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Raise `TrialOutOfMemory` in this thread when the process goes over the limit
        within the block (never after it: a pending exception is withdrawn at its end)."""
        self.tripped = None
        if self.limit_mb is None:
            yield
            return
        target, done, lock = threading.get_ident(), threading.Event(), threading.Lock()
        armed = [True]

        def watch() -> None:
            while not done.wait(self.every_s):
                reason = self.over_limit()
                if reason is None:
                    continue
                with lock:
                    if armed[0]:
                        self.tripped = reason
                        log.error("%s: stopping the trial", reason)
                        _raise_in(target, TrialOutOfMemory)
                return

        watcher = threading.Thread(target=watch, name="memory-guard", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            with lock:
                armed[0] = False
                if self.tripped is not None:
                    _raise_in(target, None)  # not delivered yet: withdrawn
            done.set()
            watcher.join()


def release_memory() -> None:
    """Hand what the last trial left back to the system: Keras's graphs, Python's garbage,
    and the C heap's free pages (glibc keeps them otherwise)."""
    try:
        from search.training.devices import clear_session

        clear_session()
    except Exception as exc:  # never fail the worker over its cleanup
        log.warning("clear_session failed: %s", exc)
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in the thread at its next Python instruction (None: withdraw it)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


__all__ = ["MemoryGuard", "TrialOutOfMemory", "release_memory", "rss_bytes"]
