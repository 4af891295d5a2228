"""The worker loop: claim a trial slot, train it, report it, and look for the next.

Stateless: everything it knows comes from the database, so any number of workers on any number
of machines share the work. A slot is claimed with one atomic UPDATE on the study row, so a
study ends with exactly `n_trials` finished trials however many workers race. Dead workers are
found by Optuna's heartbeat; their trial is failed and retried once, and the retry reuses the
dead trial's slot so it counts once against the budget. The retry resumes from the dead
attempt's last epoch checkpoint (`search.checkpoints`).

Faults it survives: a database that goes away (each loop iteration is retried after a backoff;
storage calls inside a trial are retried while it trains on), a trial that raises (it fails
alone), SIGTERM (the epoch finishes, the trial is released for a retry), and a worker that died
between claiming a slot and starting its trial (the sweep gives the slot back).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from search import store
from search.checkpoints import CheckpointStore, TrialSlot, checkpoint_number
from search.data import Dataset, load_dataset
from search.errors import DatasetError, TrialDiverged, TrialStopped
from search.space import default_trials, run_shape
from search.spec import StudySpec, parse_spec
from search.store.notify import Wakeup
from search.study_policy import make_pruner, make_sampler

log = logging.getLogger("lrsearch.worker.loop")
SAME_FAILURES_TO_GIVE_UP = 3
MAX_RETRIES = 1
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STARTUP_DB_WAIT_S = 300.0
STUDIES_KEPT = 8
T = TypeVar("T")
_FINISHED = optuna.exceptions.UpdateFinishedTrialError


@dataclass
class WorkerConfig:
    """Everything a worker needs: where the database and uploaded data live, and its timings.

    `db_retry_s` bounds how long one storage call is retried while the database is away;
    a slot claimed but never turned into a trial is given back after `slot_leak_s`
    (default: db_retry_s + 2 grace periods, so a live claimer is never overtaken); a running
    trial is checkpointed at most every `checkpoint_every_s` (0: every epoch).
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

    @property
    def leak_after_s(self) -> float:
        """How long a claimed slot may stay without its trial before the sweep frees it."""
        if self.slot_leak_s is not None:
            return self.slot_leak_s
        return self.db_retry_s + 2 * self.grace_period + 30


@dataclass
class _Opened:
    """A claimed slot's study, ready for `ask`: what the trial needs, or why it cannot run."""

    study: optuna.Study
    spec: StudySpec
    dataset: Dataset | None
    load_error: Exception | None


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
        self.checkpoints = CheckpointStore(Path(config.data_dir) / "checkpoints")
        self._datasets: OrderedDict[str, Dataset] = OrderedDict()
        self._studies: OrderedDict[str, optuna.Study] = OrderedDict()
        self._trainer: Any = None
        self._last_sweep = 0.0
        self._wakeup = Wakeup(self.engine)

    def run(self) -> int:
        """Loop until stopped (or max_trials / idle_exit_s); returns the trials this worker ran.

        Any error of one iteration (the database is down, a study is broken) is logged and the
        iteration is tried again after a backoff: the worker never dies of it.
        """
        done, idle_since, backoff = 0, time.monotonic(), BACKOFF_FIRST_S
        while not self.stop.is_set():
            try:
                self._sweep_if_due()
                ran = self.run_one()
            except Exception as exc:
                _log_loop_error(exc, backoff)
                self.stop.wait(backoff)
                backoff, idle_since = min(backoff * 2, BACKOFF_MAX_S), time.monotonic()
                continue
            backoff = BACKOFF_FIRST_S
            if ran:
                done, idle_since = done + 1, time.monotonic()
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
        """Runnable studies, those with the fewest running trials first, then the oldest.

        The same read finds the studies past their timeout (closed here, not returned), so
        picking a study costs two statements whatever the number of studies.
        """
        with self.sessions() as session:
            rows = session.execute(
                select(
                    store.Study.id,
                    store.Study.optuna_study_name,
                    store.Study.started_at,
                    store.Study.spec["timeout_s"].as_float(),
                )
                .where(
                    store.Study.status.in_(("queued", "running")),
                    store.Study.trials_claimed < store.Study.n_trials,
                )
                .order_by(store.Study.created_at)
                .limit(50)
            ).all()
            running = store.running_trial_counts(session, [r[1] for r in rows])
        expired = [r for r in rows if _past_timeout(r[2], r[3])]
        if expired:
            self._expire([(r[0], r[1]) for r in expired])
        live = [r for r in rows if r not in expired]
        return [r[0] for r in sorted(live, key=lambda r: running.get(r[1], 0))]

    def _expire(self, studies: list[tuple[str, str]]) -> None:
        """Past its timeout a study claims no more trials; queued retries are dropped."""
        with self.sessions() as session:
            for study_id, _ in studies:
                store.close_budget(session, study_id)
        for study_id, name in studies:
            self._drop_waiting(name, "not run: the study's timeout passed")
            self._maybe_finish(study_id)

    def _drop_waiting(self, name: str, reason: str) -> None:
        """Fail queued trials that will never get a slot (so the study can finish)."""
        study = optuna.load_study(study_name=name, storage=self.storage)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            try:  # reason first: Optuna refuses attrs once a trial is finished
                self.storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
                self.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            except _FINISHED:  # another worker popped or dropped it first
                continue

    def _claim(self, study_id: str) -> int | None:
        """Not retried: a claim whose answer was lost may have counted; the sweep heals it."""
        with self.sessions() as session:
            slot = store.claim_slot(session, study_id)
            session.commit()
        return slot

    # -- running one trial --------------------------------------------------------------------

    def _run_trial(self, study_id: str, slot: int) -> None:
        opened = self._persist(functools.partial(self._open, study_id, slot), "open study")
        if opened is None:
            return
        # `ask` is never retried: a retry after a lost answer could create a second trial.
        trial = opened.study.ask()
        with _Heartbeat(self.storage, trial._trial_id, self.config.heartbeat_interval):
            self._train_and_tell(opened, trial, study_id)

    def _open(self, study_id: str, slot: int) -> _Opened | None:
        """Read the study and its data (safe to repeat); None when the study was deleted."""
        with self.sessions() as session:
            row = session.get(store.Study, study_id)
            if row is None:
                return None
            spec, name = parse_spec(row.spec), row.optuna_study_name
        dataset, load_error = self._try_dataset(spec.task.dataset)
        seed = None if spec.seed is None else spec.seed * 100_003 + slot
        study = self._loaded_study(name, spec)
        study.sampler = make_sampler(spec, seed)  # seeded per slot: reproducible in any order
        if slot == 1 and dataset is not None:
            run = run_shape(spec, len(dataset.x_train))
            for params in default_trials(spec, run)[: spec.n_trials]:
                study.enqueue_trial(params, skip_if_exists=True)
        return _Opened(study, spec, dataset, load_error)

    def _loaded_study(self, name: str, spec: StudySpec) -> optuna.Study:
        """The study as this worker last loaded it: its Optuna cache of finished trials stays
        warm, so a trial reads only what changed since the last one, not the whole study."""
        study = self._studies.get(name)
        if study is None:
            study = optuna.load_study(
                study_name=name, storage=self.storage, pruner=make_pruner(spec)
            )
            self._studies[name] = study
            while len(self._studies) > STUDIES_KEPT:
                self._studies.popitem(last=False)
        self._studies.move_to_end(name)
        return study

    def _try_dataset(self, ref: str) -> tuple[Dataset | None, Exception | None]:
        """The dataset, or the error that fails this trial (a file deleted under a study)."""
        try:
            return self._dataset(ref), None
        except (DatasetError, OSError, ValueError) as exc:
            return None, exc

    def _train_and_tell(self, opened: _Opened, trial: optuna.Trial, study_id: str) -> None:
        study = opened.study
        stop_check = _StopCheck(self.stop, lambda: self._cancelled(study_id))
        # A retry's `failed_trial` was set when it was queued, before `ask` read the trial:
        # the trial's own copy has it, no need to load the whole trial again.
        attrs = trial._cached_frozen_trial.system_attrs
        slot = TrialSlot(
            self.checkpoints,
            study_id,
            checkpoint_number(trial.number, attrs),
            every_s=self.config.checkpoint_every_s,
        )
        try:
            if opened.load_error is not None:
                raise opened.load_error
            assert opened.dataset is not None
            value = self._get_trainer().run(trial, opened.spec, opened.dataset, stop_check, slot)
        except optuna.TrialPruned:
            self._tell(study, trial, slot, state=optuna.trial.TrialState.PRUNED)
        except TrialStopped as exc:
            self._end_stopped(study, trial, slot, study_id, str(exc))
        except TrialDiverged:
            self._tell(study, trial, slot, state=optuna.trial.TrialState.FAIL)
        except _FINISHED:
            log.warning("trial %s was failed by a sweep while it ran; its retry goes on",
                        trial.number)
        except Exception as exc:
            if store.is_transient(exc):
                log.error("trial %s: database away for too long (%s); left for the sweep",
                          trial.number, exc)
                return
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            self._persist(functools.partial(trial.set_user_attr, "fail_reason", reason))
            self._tell(study, trial, slot, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %s failed: %s", trial.number, exc)
        else:
            self._tell(study, trial, slot, value)

    def _tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        slot: TrialSlot,
        value: float | None = None,
        state: optuna.trial.TrialState | None = None,
    ) -> None:
        """Finish the trial (retried; a repeat after a lost answer is skipped) and drop its
        checkpoint, unless a sweep failed it first: then its retry resumes from the file."""
        frozen = self._persist(
            lambda: study.tell(trial, value, state=state, skip_if_finished=True), "tell"
        )
        if frozen.state == optuna.trial.TrialState.FAIL and str(
            frozen.user_attrs.get("fail_reason", "")
        ).startswith("worker lost"):
            return  # taken over by a sweep while it trained: its retry resumes from the file
        _quietly(slot.remove)

    def _end_stopped(
        self, study: optuna.Study, trial: optuna.Trial, slot: TrialSlot, study_id: str, why: str
    ) -> None:
        """Cancelled: the trial fails as cancelled. Shutdown: release it for another worker."""
        if self._persist(lambda: self._cancelled(study_id), "read status"):
            self._persist(
                functools.partial(trial.set_user_attr, "fail_reason", f"study cancelled ({why})")
            )
            self._tell(study, trial, slot, state=optuna.trial.TrialState.FAIL)
            return
        frozen = self._persist(lambda: self.storage.get_trial(trial._trial_id), "read trial")
        retried = _will_retry(frozen)
        reason = f"worker shut down ({why}); " + (
            "retried" if retried else "not retried again (it was a retry)"
        )
        self._persist(functools.partial(trial.set_user_attr, "fail_reason", reason))
        self._persist(
            lambda: study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True),
            "tell",
        )
        if retried:
            self._retry(study, frozen, study_id)
        else:
            _quietly(slot.remove)

    def _retry(self, study: optuna.Study, failed: optuna.trial.FrozenTrial, study_id: str) -> None:
        """Queue the failed trial again (once, idempotently) and give its slot back, so it
        counts once against the budget."""
        self._persist(functools.partial(self._queue_retry, study, failed), "queue retry")

        def release() -> None:
            with self.sessions() as session:
                store.release_slot(session, study_id, failed._trial_id)

        self._persist(release, "release slot")

    def _queue_retry(self, study: optuna.Study, failed: optuna.trial.FrozenTrial) -> None:
        with self.sessions() as session:
            if store.has_retry(session, study.study_name, failed.number):
                return
        history = [*failed.system_attrs.get("retry_history", []), failed.number]
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
            except Exception as exc:
                if store.is_transient(exc):
                    raise  # the database is away: the loop backs off
                log.exception("sweep of study %s failed", study_id)

    def _sweep(self, study_id: str, name: str) -> None:
        """Fail trials whose worker died (no heartbeat within the grace period, or none ever
        within `leak_after_s`) and retry each once; give back slots that never got a trial."""
        study = optuna.load_study(study_name=name, storage=self.storage)
        with self.sessions() as session:
            orphans = store.orphan_running_trials(session, name, self.config.leak_after_s)
        for trial_id in [*self.storage._get_stale_trial_ids(study._study_id), *orphans]:
            self._fail_dead(study, study_id, trial_id)

    def _fail_dead(self, study: optuna.Study, study_id: str, trial_id: int) -> None:
        """Fail one dead trial (with its reason) and retry it once."""
        dead = self._persist(lambda: self.storage.get_trial(trial_id), "read trial")
        if dead.state != optuna.trial.TrialState.RUNNING:
            return
        retried = _will_retry(dead)
        reason = "worker lost: no heartbeat within the grace period; " + (
            "retried" if retried else "not retried again (it was a retry)"
        )
        # Optuna refuses attrs on finished trials, so the reason goes first; then the state
        # change is the lock: of several sweepers only one gets True.
        try:
            self._persist(
                functools.partial(self.storage.set_trial_user_attr, trial_id, "fail_reason",
                                  reason)
            )
            if not self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                return
        except _FINISHED:
            return  # another sweeper, or the worker itself (it was only slow), finished it
        log.warning("study %s: trial %s %s", study_id, dead.number, reason)
        if retried:
            self._retry(study, dead, study_id)
        else:
            number = checkpoint_number(dead.number, dead.system_attrs)
            _quietly(functools.partial(self.checkpoints.remove, study_id, number))

    def _maybe_finish(self, study_id: str) -> None:
        """Mark the study completed (budget spent, nothing running) or failed (same error);
        first give back slots that were claimed but never became a trial."""
        with self.sessions() as session:
            row = session.get(store.Study, study_id)
            if row is None or row.status not in ("queued", "running"):
                return
            progress = store.study_progress(session, row)  # one grouped query per trial
            used = progress.complete + progress.pruned + progress.failed + progress.running
            if used < row.trials_claimed:
                self._heal_leak(session, row, used)
                return
            reason = self._repeated_failure(row.optuna_study_name, progress)
            finished = False
            if reason:
                finished = store.finish_study(session, study_id, "failed", reason)
            elif row.trials_claimed >= row.n_trials and progress.running + progress.waiting == 0:
                finished = store.finish_study(session, study_id, "completed")
            session.commit()
        if finished:
            _quietly(functools.partial(self.checkpoints.remove_study, study_id))

    def _heal_leak(self, session: Session, row: store.Study, used: int) -> None:
        idle = (store.utcnow() - store.as_utc(row.updated_at)).total_seconds()
        if idle < self.config.leak_after_s:
            return  # a claimer may still be on its way to `ask`
        if store.reclaim_slots(
            session, row.id, claimed=row.trials_claimed, used=used, idle_since=row.updated_at
        ):
            log.warning("study %s: gave back %d slot(s) claimed by a lost worker",
                        row.id, row.trials_claimed - used)

    def _repeated_failure(self, name: str, progress: store.Progress) -> str | None:
        if progress.complete or progress.pruned:
            return None
        if progress.failed + progress.retried < SAME_FAILURES_TO_GIVE_UP:
            return None
        study = optuna.load_study(study_name=name, storage=self.storage)
        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        reasons = {t.user_attrs.get("fail_reason", "") for t in failed[-SAME_FAILURES_TO_GIVE_UP:]}
        if len(reasons) == 1 and not any(
            "retried" in r or "cancelled" in r or "worker lost" in r for r in reasons
        ):
            return f"{SAME_FAILURES_TO_GIVE_UP} trials failed in a row: {reasons.pop()}"
        return None

    # -- helpers ------------------------------------------------------------------------------

    def _persist(self, fn: Callable[[], T], what: str = "storage call") -> T:
        """Retry a repeatable storage call while the database is briefly away (not once the
        worker is told to stop: then the trial is left to the sweep of another worker)."""
        return store.retry_transient(
            fn, deadline_s=self.config.db_retry_s, what=what, stop=self.stop
        )

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
            from search.training.devices import configure_devices
            from search.training.trainer import Trainer

            configure_devices()
            self._trainer = Trainer(persist=self._persist)
        return self._trainer


def _past_timeout(started_at: datetime | None, timeout_s: float | None) -> bool:
    """A started study with a timeout that has passed (the timeout counts from its start)."""
    if started_at is None or not timeout_s:
        return False
    return (store.utcnow() - store.as_utc(started_at)).total_seconds() > timeout_s


def _will_retry(failed: optuna.trial.FrozenTrial) -> bool:
    """A trial is retried at most MAX_RETRIES times over its whole history."""
    return len(failed.system_attrs.get("retry_history", [])) < MAX_RETRIES


def _quietly(fn: Callable[[], None]) -> None:
    """Checkpoint housekeeping must never fail a trial."""
    try:
        fn()
    except Exception as exc:
        log.warning("checkpoint cleanup failed: %s", exc)


def _log_loop_error(exc: Exception, backoff: float) -> None:
    if store.is_transient(exc):
        log.warning("database unavailable (%s); retrying in %.1fs", exc.__class__.__name__, backoff)
    else:
        log.exception("worker iteration failed; retrying in %.1fs", backoff)


class _StopCheck:
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


class _Heartbeat:
    """Records the trial's heartbeat every interval while it trains."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._record()  # a trial without any heartbeat is only swept after leak_after_s
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self._interval):
            self._record()

    def _record(self) -> None:
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
    checkpoint_every_s: float = 30.0,
) -> int:
    """`lrsearch worker`: loop until SIGTERM/SIGINT, finishing the current epoch first."""
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
    )
    # Started before the database is up (a compose stack, a DB restart): wait for it.
    worker = store.retry_transient(
        lambda: Worker(config, stop), deadline_s=STARTUP_DB_WAIT_S, what="connect", stop=stop
    )
    return worker.run()


__all__ = ["Worker", "WorkerConfig", "run_worker"]
