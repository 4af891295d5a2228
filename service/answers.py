"""Answers computed from a study's trials, reused while the study's trials are unchanged.

Why: the best trial, progress counts and a page ordered by value cost a scan of the study's
trials (tens of milliseconds at 10,000 trials), yet they only change when a trial is added or
changes state. Every request still reads the study row with its `TrialsVersion` in one
index-only statement (so a cancel or delete made anywhere is seen at once), and reuses an
answer only when it was computed at the same version: no TTL, no staleness. Answers are
per process; a bounded LRU keeps memory flat.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from search.store import TrialsVersion

T = TypeVar("T")
MAX_BYTES = 32 * 1024 * 1024
MAX_AGE_S = 300.0  # a safety net only: answers are exact while the version is unchanged


@dataclass(frozen=True)
class _Entry:
    version: TrialsVersion
    value: Any
    size: int
    stored_at: float


class AnswerCache:
    """Thread-safe LRU of (study id, key) -> answer, valid for one TrialsVersion."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_age_s: float = MAX_AGE_S) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._entries: OrderedDict[tuple[str, Hashable], _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, study_id: str, key: Hashable, version: TrialsVersion) -> Any | None:
        """The answer stored at exactly this version, or None."""
        with self._lock:
            entry = self._entries.get((study_id, key))
            if entry is None:
                return None
            if entry.version != version or time.monotonic() - entry.stored_at > self.max_age_s:
                self._drop((study_id, key))
                return None
            self._entries.move_to_end((study_id, key))
            return entry.value

    def put(
        self, study_id: str, key: Hashable, version: TrialsVersion, value: Any, size: int = 256
    ) -> None:
        """Remember an answer computed at `version` (read BEFORE computing it: an answer newer
        than its version is only recomputed once, an older one would be served stale)."""
        if size > self.max_bytes // 8:
            return
        with self._lock:
            self._drop((study_id, key))
            self._entries[(study_id, key)] = _Entry(version, value, size, time.monotonic())
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def forget(self, study_id: str) -> None:
        """Drop every answer of a study (it was deleted)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == study_id]:
                self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: tuple[str, Hashable]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size


class ReadCoalescer:
    """Identical reads in flight together share one database read, never an older one.

    Why: 32 clients polling the same study would each pay a thread hop and database round
    trips for the same answer. A request joins a read only if that read has not started yet,
    so what it gets was read after it arrived (as fresh as reading alone); while one read of a
    key runs, the next waits for it, so a key has at most one read running and one queued.
    The read runs as its own task: a client that disconnects does not cancel it for others.
    """

    def __init__(self) -> None:
        self._queued: dict[Hashable, asyncio.Future[Any]] = {}
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def read(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """fn()'s result, from a read of `key` that starts after this call."""
        future = self._queued.get(key)
        if future is None:
            future = asyncio.ensure_future(self._run(key, fn))
            self._queued[key] = future
        result: T = await asyncio.shield(future)
        return result

    async def _run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        me = self._queued[key]
        previous = self._running.get(key)
        if previous is not None:
            await asyncio.wait([previous])
        del self._queued[key]  # from now on, newcomers queue a read of their own
        self._running[key] = me
        try:
            return await fn()
        finally:
            if self._running.get(key) is me:
                del self._running[key]
