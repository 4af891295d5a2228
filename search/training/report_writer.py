"""Write a trial's per-epoch reports to storage in the background, in order.

Why: a report is one database transaction (~4 ms on PostgreSQL), paid at every epoch of every
trial; for small models that is a fifth of the epoch. The pruner only needs the trial's own
values, which Optuna keeps on the trial object, so the value is recorded there at once and the
storage write overlaps the next epoch. `flush` waits for every write before the trial is told,
because Optuna refuses intermediate values on a finished trial.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import optuna

from search.store.optuna_private import frozen_view
from search.store.trial_writes import set_intermediate_value

T = TypeVar("T")
Persist = Callable[[Callable[[], T]], T]
"""Runs one storage call; the worker's retries it while the database is briefly away."""


class ReportWriter:
    """`trial.report` whose storage write runs on a background thread; `close` joins it."""

    def __init__(self, trial: optuna.Trial, persist: Persist[Any]) -> None:
        self._trial = trial
        self._persist = persist
        self._queue: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_all, daemon=True, name="reports")
        self._thread.start()

    def report(self, value: float, step: int) -> None:
        """Like `Trial.report` (a repeated step is ignored); the pruner sees it at once."""
        cached = frozen_view(self._trial).intermediate_values
        if step in cached:
            return
        cached[step] = float(value)
        self._queue.put((int(step), float(value)))

    def flush(self) -> None:
        """Wait until every report is stored; raise the first write error, if any."""
        self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread after the queued writes (no raise: `flush` reports errors)."""
        self._queue.put(None)
        self._thread.join()

    def _write_all(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    step, value = item
                    self._persist(
                        functools.partial(set_intermediate_value, self._trial, step, value)
                    )
            except BaseException as exc:  # kept for flush: the trial fails with it
                self._error = exc
            finally:
                self._queue.task_done()
