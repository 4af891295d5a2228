"""A worker's settings, and the named defaults of its loop, its retries and its failure rule."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The worker's own memory limit in MiB (its resident memory, as /proc/self/status counts it):
#: a trial that takes the worker past it fails as out of memory (search.worker.memory_guard).
MEMORY_ENV = "LRSEARCH_WORKER_MEMORY_MB"
#: How many trial slots of one study a worker claims and trains together (search.worker.population).
POPULATION_ENV = "LRSEARCH_WORKER_POPULATION"

#: A study fails when this many trials in a row failed the same way (none completed or
#: pruned; failures from outside the trial, such as a lost worker, do not count).
SAME_FAILURES_TO_GIVE_UP = 3
#: A study fails when this many trials in a row lost their worker, one of them a retry (a
#: trial that kills its worker would otherwise cost workers for ever; search.worker.study_end).
LOSSES_TO_GIVE_UP = 3
#: How many times a trial is retried over its whole history (after a lost worker or a
#: shutdown); the retry resumes from its dead attempt's checkpoint.
MAX_RETRIES = 1
#: The loop's backoff after a failed iteration (the database is away): first and longest.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
#: How long a worker started before its database waits for it to come up.
STARTUP_DB_WAIT_S = 300.0
#: Studies a worker keeps loaded (their Optuna caches of finished trials stay warm).
STUDIES_KEPT = 8
#: Datasets a worker keeps in memory.
DATASETS_KEPT = 4


@dataclass
class WorkerConfig:
    """Everything a worker needs: where the database and uploaded data live, and its timings.

    `db_retry_s` bounds how long one storage call is retried while the database is away;
    a slot claimed but never turned into a trial is given back after `slot_leak_s`
    (default: db_retry_s + 2 grace periods, so a live claimer is never overtaken); a running
    trial is checkpointed at most every `checkpoint_every_s` (0: every epoch); datasets
    registered by path are read only from under `data_roots` (as the API checked them);
    `population` slots of one study are claimed at once and their trials trained together.
    """

    database_url: str
    data_dir: str | Path = "./var"
    heartbeat_interval: int = 5
    grace_period: int = 30
    poll_s: float = 1.0
    max_trials: int | None = None
    idle_exit_s: float | None = None
    db_retry_s: float = 120.0
    slot_leak_s: float | None = None
    checkpoint_every_s: float = 30.0
    data_roots: list[Path] = field(default_factory=list)  # datasets by path (shared storage)
    memory_limit_mb: int | None = None  # MEMORY_ENV; None: no per-trial memory guard
    population: int = 1  # POPULATION_ENV; trials of one study claimed and trained together

    @property
    def leak_after_s(self) -> float:
        """How long a claimed slot may stay without its trial before the sweep frees it."""
        if self.slot_leak_s is not None:
            return self.slot_leak_s
        return self.db_retry_s + 2 * self.grace_period + 30

    @property
    def sweep_every_s(self) -> float:
        """How often the dead-worker sweep runs: three times per grace period."""
        return max(1.0, self.grace_period / 3)


def memory_limit_from_env(environ: Mapping[str, str] = os.environ) -> int | None:
    """LRSEARCH_WORKER_MEMORY_MB as a number of MiB (unset or empty: None); ValueError when
    it is not a whole number of at least 1."""
    text = environ.get(MEMORY_ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MEMORY_ENV}={text!r}: a whole number of MiB, such as 4096") from None
    if value < 1:
        raise ValueError(f"{MEMORY_ENV}={text!r}: at least 1 MiB")
    return value


def population_from_env(environ: Mapping[str, str] = os.environ) -> int:
    """LRSEARCH_WORKER_POPULATION as a number of trials (unset or empty: 1); ValueError when
    it is not a whole number of at least 1."""
    text = environ.get(POPULATION_ENV, "").strip()
    if not text:
        return 1
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{POPULATION_ENV}={text!r}: a whole number of trials, such as 4"
        ) from None
    if value < 1:
        raise ValueError(f"{POPULATION_ENV}={text!r}: at least 1 trial")
    return value
