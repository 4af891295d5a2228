"""The worker loop: claim a trial slot, train it, report it, and look for the next.

Stateless: everything it knows comes from the database, so any number of workers on any number
of machines share the work. A slot is claimed with one atomic UPDATE on the study row, so a
study ends with exactly `n_trials` finished trials however many workers race. Dead workers are
found by Optuna's heartbeat; their trial is failed and retried once, and the retry reuses the
dead trial's slot so it counts once against the budget.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from search import store
from search.datasets import Dataset, load_dataset
from search.errors import TrialDiverged, TrialStopped
from search.space import default_trials, run_shape
from search.spec import StudySpec, parse_spec
from search.study_policy import make_pruner, make_sampler

log = logging.getLogger("lrsearch.worker")
SAME_FAILURES_TO_GIVE_UP = 3
MAX_RETRIES = 1


@dataclass
class WorkerConfig:
    """Everything a worker needs: where the database and uploaded data live, and its timings."""

    database_url: str
    data_dir: str | Path = "./var"
    heartbeat_interval: int = 5
    grace_period: int = 30
    poll_s: float = 1.0
    max_trials: int | None = None
    idle_exit_s: float | None = None


class Worker:
    """One worker process's loop; `stop` ends it after the current epoch."""

    def __init__(self, config: WorkerConfig, stop: threading.Event | None = None) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.engine = store.make_engine(config.database_url)
        self.sessions: sessionmaker[Session] = store.session_factory(self.engine)
        self.storage = store.optuna_storage(
            config.database_url,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
        )
        self._datasets: OrderedDict[str, Dataset] = OrderedDict()
        self._trainer: Any = None
        self._last_sweep = 0.0

    def run(self) -> int:
        """Loop until stopped (or max_trials / idle_exit_s); returns the trials this worker ran."""
        done, idle_since = 0, time.monotonic()
        while not self.stop.is_set():
            self._sweep_if_due()
            if self.run_one():
                done, idle_since = done + 1, time.monotonic()
                if self.config.max_trials is not None and done >= self.config.max_trials:
                    break
                continue
            if (
                self.config.idle_exit_s is not None
                and time.monotonic() - idle_since > self.config.idle_exit_s
            ):
                break
            self.stop.wait(self.config.poll_s)
        return done

    def run_one(self) -> bool:
        """Claim and run one trial of the most deserving study; False when there is no work."""
        for study_id in self._candidates():
            slot = self._claim(study_id)
            if slot is None:
                continue
            try:
                self._run_trial(study_id, slot)
            except Exception:  # a broken study must never kill the worker
                log.exception("study %s: trial could not run", study_id)
            self._maybe_finish(study_id)
            return True
        return False

    # -- choosing and claiming ----------------------------------------------------------------

    def _candidates(self) -> list[str]:
        """Runnable studies, those with the fewest running trials first, then the oldest."""
        with self.sessions() as session:
            rows = session.execute(
                select(store.Study.id, store.Study.optuna_study_name)
                .where(
                    store.Study.status.in_(("queued", "running")),
                    store.Study.trials_claimed < store.Study.n_trials,
                )
                .order_by(store.Study.created_at)
                .limit(50)
            ).all()
            running = store.running_trial_counts(session, [r[1] for r in rows])
        self._expire_timeouts([r[0] for r in rows])
        return [r[0] for r in sorted(rows, key=lambda r: running.get(r[1], 0))]

    def _expire_timeouts(self, study_ids: list[str]) -> None:
        with self.sessions() as session:
            for study_id in study_ids:
                study = session.get(store.Study, study_id)
                if study and study.started_at and study.spec.get("timeout_s"):
                    elapsed = (store.utcnow() - store.as_utc(study.started_at)).total_seconds()
                    if elapsed > study.spec["timeout_s"]:
                        store.close_budget(session, study_id)
            session.commit()

    def _claim(self, study_id: str) -> int | None:
        with self.sessions() as session:
            slot = store.claim_slot(session, study_id)
            session.commit()
        return slot

    # -- running one trial --------------------------------------------------------------------

    def _run_trial(self, study_id: str, slot: int) -> None:
        with self.sessions() as session:
            row = session.get(store.Study, study_id)
            if row is None:
                return
            spec, name = parse_spec(row.spec), row.optuna_study_name
        dataset = self._dataset(spec.task.dataset)
        run = run_shape(spec, len(dataset.x_train))
        seed = None if spec.seed is None else spec.seed * 100_003 + slot
        study = optuna.load_study(
            study_name=name,
            storage=self.storage,
            sampler=make_sampler(spec, seed),
            pruner=make_pruner(spec),
        )
        if slot == 1:
            for params in default_trials(spec, run):
                study.enqueue_trial(params, skip_if_exists=True)
        trial = study.ask()
        with _Heartbeat(self.storage, trial._trial_id, self.config.heartbeat_interval):
            self._train_and_tell(study, trial, spec, dataset, study_id)

    def _train_and_tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        spec: StudySpec,
        dataset: Dataset,
        study_id: str,
    ) -> None:
        stop_check = _StopCheck(self.stop, lambda: self._cancelled(study_id))
        try:
            value = self._get_trainer().run(trial, spec, dataset, stop_check)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except TrialStopped as exc:
            self._end_stopped(study, trial, study_id, str(exc))
        except TrialDiverged:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:2000])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %s failed: %s", trial.number, exc)
        else:
            study.tell(trial, value)

    def _end_stopped(
        self, study: optuna.Study, trial: optuna.Trial, study_id: str, why: str
    ) -> None:
        """Cancelled: the trial fails as cancelled. Shutdown: release it for another worker."""
        if self._cancelled(study_id):
            trial.set_user_attr("fail_reason", f"study cancelled ({why})")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        trial.set_user_attr("fail_reason", f"worker shut down ({why}); retried")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self._retry(study, study._storage.get_trial(trial._trial_id), study_id)

    def _retry(self, study: optuna.Study, failed: optuna.trial.FrozenTrial, study_id: str) -> None:
        """Queue the failed trial again (once) and give its slot back so it counts once."""
        history = [*failed.system_attrs.get("retry_history", []), failed.number]
        if len(history) > MAX_RETRIES:
            return
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.WAITING,
                params=failed.params,
                distributions=failed.distributions,
                system_attrs={
                    **failed.system_attrs,
                    "failed_trial": history[0],
                    "retry_history": history,
                },
            )
        )
        with self.sessions() as session:
            store.release_slot(session, study_id)
            session.commit()

    # -- sweeping dead workers and finishing studies ------------------------------------------

    def _sweep_if_due(self) -> None:
        if time.monotonic() - self._last_sweep < max(1.0, self.config.grace_period / 3):
            return
        self._last_sweep = time.monotonic()
        with self.sessions() as session:
            active = session.execute(
                select(store.Study.id, store.Study.optuna_study_name).where(
                    store.Study.status.in_(("queued", "running"))
                )
            ).all()
        for study_id, name in active:
            try:
                self._sweep(study_id, name)
                self._maybe_finish(study_id)
            except Exception:
                log.exception("sweep of study %s failed", study_id)

    def _sweep(self, study_id: str, name: str) -> None:
        study = optuna.load_study(study_name=name, storage=self.storage)
        for trial_id in self.storage._get_stale_trial_ids(study._study_id):
            if not self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                continue
            self.storage.set_trial_user_attr(
                trial_id,
                "fail_reason",
                "worker lost: no heartbeat within the grace period; retried",
            )
            self._retry(study, self.storage.get_trial(trial_id), study_id)

    def _maybe_finish(self, study_id: str) -> None:
        """Mark the study completed (budget spent, nothing running) or failed (same error)."""
        with self.sessions() as session:
            row = session.get(store.Study, study_id)
            if row is None or row.status not in ("queued", "running"):
                return
            counts = store.trial_state_counts(session, row.optuna_study_name)
            reason = self._repeated_failure(row.optuna_study_name, counts)
            if reason:
                store.finish_study(session, study_id, "failed", reason)
            elif (
                row.trials_claimed >= row.n_trials
                and counts.get("RUNNING", 0) + counts.get("WAITING", 0) == 0
            ):
                store.finish_study(session, study_id, "completed")
            session.commit()

    def _repeated_failure(self, name: str, counts: dict[str, int]) -> str | None:
        if counts.get("COMPLETE", 0) or counts.get("PRUNED", 0):
            return None
        if counts.get("FAIL", 0) < SAME_FAILURES_TO_GIVE_UP:
            return None
        study = optuna.load_study(study_name=name, storage=self.storage)
        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        reasons = {t.user_attrs.get("fail_reason", "") for t in failed[-SAME_FAILURES_TO_GIVE_UP:]}
        if len(reasons) == 1 and not any("retried" in r or "cancelled" in r for r in reasons):
            return f"{SAME_FAILURES_TO_GIVE_UP} trials failed in a row: {reasons.pop()}"
        return None

    # -- helpers ------------------------------------------------------------------------------

    def _cancelled(self, study_id: str) -> bool:
        with self.sessions() as session:
            status = session.scalar(select(store.Study.status).where(store.Study.id == study_id))
        return status is None or status == "cancelled"

    def _dataset(self, ref: str) -> Dataset:
        if ref not in self._datasets:
            self._datasets[ref] = load_dataset(ref, self.config.data_dir)
            while len(self._datasets) > 4:
                self._datasets.popitem(last=False)
        return self._datasets[ref]

    def _get_trainer(self) -> Any:
        if self._trainer is None:
            from search.gpu import configure_devices
            from search.training import Trainer

            configure_devices()
            self._trainer = Trainer()
        return self._trainer


class _StopCheck:
    """Stop when the worker is told to, or the study was cancelled (asked at most once a second)."""

    def __init__(self, stop: threading.Event, cancelled: Callable[[], bool]) -> None:
        self._stop, self._cancelled = stop, cancelled
        self._last, self._answer = 0.0, False

    def __call__(self) -> bool:
        if self._stop.is_set():
            return True
        if time.monotonic() - self._last >= 1.0:
            self._last, self._answer = time.monotonic(), self._cancelled()
        return self._answer


class _Heartbeat:
    """Records the trial's heartbeat every interval while it trains."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # the database may be away for a moment; try again next beat
                log.warning("heartbeat for trial %s failed", self._trial_id)


def run_worker(
    database_url: str,
    data_dir: str | Path = "./var",
    *,
    heartbeat_interval: int = 5,
    grace_period: int = 30,
    max_trials: int | None = None,
    idle_exit_s: float | None = None,
    poll_s: float = 1.0,
) -> int:
    """`lrsearch worker`: loop until SIGTERM/SIGINT, finishing the current epoch first."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    config = WorkerConfig(
        database_url, data_dir, heartbeat_interval, grace_period, poll_s, max_trials, idle_exit_s
    )
    return Worker(config, stop).run()


__all__ = ["Worker", "WorkerConfig", "run_worker"]
