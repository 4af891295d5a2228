"""The worker loop: claim a trial slot, train it, report it, and look for the next (with a
population of K, up to K slots of one study, trained together: search.worker.population).

Stateless: everything it knows comes from the database, so any number of workers on any number
of machines share the work. A slot is claimed with one atomic UPDATE on the study row, so a
study ends with exactly `n_trials` finished trials however many workers race. Dead workers are
found by Optuna's heartbeat (`heartbeat`); their trial is failed and retried once (`sweep`,
`retries`), and the retry reuses the dead trial's slot so it counts once against the budget.
The retry resumes from the dead attempt's last epoch checkpoint (`search.checkpoints`).

Faults it survives: a database that goes away (each loop iteration is retried after a backoff;
storage calls inside a trial are retried while it trains on), a trial that raises (it fails
alone; one past the worker's memory limit fails as out of memory, search.worker.memory_guard),
SIGTERM (the epoch finishes, the trial is released for a retry), and a worker that died
between claiming a slot and starting its trial (the sweep gives the slot back).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path

from search import store
from search.plugins import installed_plugins
from search.store.notify import Wakeup
from search.worker.config import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    STARTUP_DB_WAIT_S,
    WorkerConfig,
)
from search.worker.liveness import Liveness
from search.worker.population import PopulationRunner
from search.worker.resources import WorkerResources
from search.worker.sweep import Sweeper

log = logging.getLogger("lrsearch.worker.loop")


class Worker:
    """One worker process's loop; `stop` ends it after the current epoch."""

    def __init__(
        self, config: WorkerConfig, stop: threading.Event | None = None, device: str = "unknown"
    ) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.resources = WorkerResources(config, self.stop)
        self.trials = PopulationRunner(self.resources)
        #: Task plugins installed here: a study needing another one is left to other workers.
        self.installed = {name: p.version for name, p in installed_plugins().items()}
        self.plugins = frozenset(self.installed)
        self.device = device  # what it trains on, as its liveness row advertises
        self.sweeper = Sweeper(self.resources)
        self._wakeup = Wakeup(self.resources.engine)

    def run(self) -> int:
        """Loop until stopped (or max_trials / idle_exit_s); returns the trials this worker ran.

        Any error of one iteration (the database is down, a study is broken) is logged and the
        iteration is tried again after a backoff: the worker never dies of it. Its liveness
        row advertises what it can run meanwhile.
        """
        with Liveness(self.resources, self.installed, self.device):
            return self._loop()

    def _loop(self) -> int:
        done, idle_since, backoff = 0, time.monotonic(), BACKOFF_FIRST_S
        while not self.stop.is_set():
            try:
                self.sweeper.sweep_if_due()
                left = None if self.config.max_trials is None else self.config.max_trials - done
                ran = self.run_one(left)
            except Exception as exc:
                _log_loop_error(exc, backoff)
                self.stop.wait(backoff)
                backoff, idle_since = min(backoff * 2, BACKOFF_MAX_S), time.monotonic()
                continue
            backoff = BACKOFF_FIRST_S
            if ran:
                done, idle_since = done + ran, time.monotonic()
                if self.config.max_trials is not None and done >= self.config.max_trials:
                    break
                continue
            if (
                self.config.idle_exit_s is not None
                and time.monotonic() - idle_since > self.config.idle_exit_s
            ):
                break
            self._wakeup.wait(self.stop, self.config.poll_s)  # a new study ends it at once
        self._wakeup.close()
        return done

    def run_one(self, most: int | None = None) -> int:
        """Claim and run the trials of the most deserving study (up to `population` of them,
        and at most `most`); how many it ran, 0 when there is no work."""
        wanted = self.config.population if most is None else min(self.config.population, most)
        for study_id in self._candidates():
            slots = self._claim(study_id, max(1, wanted))
            if not slots:
                continue
            try:
                self.trials.run_slots(study_id, slots)
            except Exception:  # a broken study must never kill the worker
                if self._deleted(study_id):  # its Optuna study went with it: nothing lost
                    log.info("study %s was deleted while its trial ran", study_id)
                else:
                    log.exception("study %s: trial could not run", study_id)
            self.sweeper.maybe_finish(study_id)
            return len(slots)
        return 0

    def _deleted(self, study_id: str) -> bool:
        """Whether the study's row is gone (False when that cannot be read either)."""
        try:
            return self.resources.study_status(study_id) is None
        except Exception:
            return False

    def _candidates(self) -> list[str]:
        """Runnable studies, fairest first: those of the tenants running the fewest trials,
        then, within a tenant, those running the fewest, then the oldest.

        The same read finds the studies past their timeout (closed here, not returned), so
        picking a study costs two statements whatever the number of studies.
        """
        with self.resources.sessions() as session:
            rows = store.claimable_studies(session, plugins=self.plugins)
            names = [r.optuna_study_name for r in rows]
            running = store.running_trial_counts(session, names)
        expired = [r for r in rows if _past_timeout(r.started_at, r.timeout_s)]
        if expired:
            self.sweeper.expire([(r.id, r.optuna_study_name) for r in expired])
        live = [r for r in rows if r not in expired]
        live.sort(key=lambda r: (r.tenant_running, running.get(r.optuna_study_name, 0)))
        return [r.id for r in live]  # a stable sort: the oldest first among equals

    def _claim(self, study_id: str, most: int) -> list[int]:
        """Not retried: a claim whose answer was lost may have counted; the sweep heals it."""
        with self.resources.sessions() as session:
            slots = store.claim_slots(session, study_id, most)
            session.commit()
        return slots


def _past_timeout(started_at: datetime | None, timeout_s: float | None) -> bool:
    """A started study with a timeout that has passed (the timeout counts from its start)."""
    if started_at is None or not timeout_s:
        return False
    return (store.utcnow() - store.as_utc(started_at)).total_seconds() > timeout_s


def _log_loop_error(exc: Exception, backoff: float) -> None:
    if store.is_transient(exc):
        log.warning("database unavailable (%s); retrying in %.1fs", exc.__class__.__name__, backoff)
    else:
        log.exception("worker iteration failed; retrying in %.1fs", backoff)


def run_worker(
    database_url: str,
    data_dir: str | Path = "./var",
    *,
    heartbeat_interval: int = 5,
    grace_period: int = 30,
    max_trials: int | None = None,
    idle_exit_s: float | None = None,
    poll_s: float = 1.0,
    checkpoint_every_s: float = 30.0,
    data_roots: list[Path] | None = None,
    memory_limit_mb: int | None = None,
    population: int = 1,
) -> int:
    """`lrsearch worker`: loop until SIGTERM/SIGINT, finishing the current epoch first."""
    # Optuna warns at every ask that heartbeats are "supposed to be used with Study.optimize";
    # the worker drives its own heartbeats on purpose (two log lines a trial, nothing to do)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config = WorkerConfig(
        database_url,
        data_dir,
        heartbeat_interval,
        grace_period,
        poll_s,
        max_trials,
        idle_exit_s,
        checkpoint_every_s=checkpoint_every_s,
        data_roots=list(data_roots or []),
        memory_limit_mb=memory_limit_mb,
        population=population,
    )
    from search.training.devices import describe_devices  # TensorFlow: a worker process only

    device = describe_devices()
    # Started before the database is up (a compose stack, a DB restart): wait for it.
    worker = store.retry_transient(
        lambda: Worker(config, stop, device),
        deadline_s=STARTUP_DB_WAIT_S,
        what="connect",
        stop=stop,
    )
    return worker.run()


__all__ = ["Worker", "run_worker"]
