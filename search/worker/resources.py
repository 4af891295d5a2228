"""What every part of one worker shares: its settings and stop event, the database (our
tables and Optuna's storage), the checkpoint files, and the retry of storage calls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
from sqlalchemy.orm import Session, sessionmaker

from search import store
from search.checkpoints import CheckpointStore
from search.worker.config import WorkerConfig

log = logging.getLogger("lrsearch.worker")
T = TypeVar("T")


class WorkerResources:
    """Connections opened once per worker process (the constructor reaches the database)."""

    def __init__(self, config: WorkerConfig, stop: threading.Event) -> None:
        self.config = config
        self.stop = stop
        self.engine = store.make_engine(config.database_url)
        self.sessions: sessionmaker[Session] = store.session_factory(self.engine)
        self.storage = store.optuna_storage(
            config.database_url,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
        )
        self.checkpoints = CheckpointStore(Path(config.data_dir) / "checkpoints")
        #: "<study id>/<trial number>" while a trial trains (its liveness row shows it).
        self.current_trial: str | None = None

    def persist(self, fn: Callable[[], T], what: str = "storage call") -> T:
        """Retry a repeatable storage call while the database is briefly away (not once the
        worker is told to stop: then the trial is left to the sweep of another worker)."""
        return store.retry_transient(
            fn, deadline_s=self.config.db_retry_s, what=what, stop=self.stop
        )

    def load_study(self, name: str) -> optuna.Study:
        """A fresh load of the Optuna study (its trials are read when asked for)."""
        return optuna.load_study(study_name=name, storage=self.storage)

    def study_status(self, study_id: str) -> str | None:
        """The study's status now; None once it is deleted."""
        with self.sessions() as session:
            return store.study_status(session, study_id)

    def cancelled(self, study_id: str) -> bool:
        """Whether the study was cancelled or deleted."""
        return self.study_status(study_id) in (None, "cancelled")


def quietly(fn: Callable[[], None]) -> None:
    """Checkpoint housekeeping must never fail a trial."""
    try:
        fn()
    except Exception as exc:
        log.warning("checkpoint cleanup failed: %s", exc)
