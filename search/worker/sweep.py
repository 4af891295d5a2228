"""Looking after the studies every worker shares: fail and retry the trials of dead workers,
give back slots claimed by a worker that died before its trial began, drop the queued trials
of a study past its timeout, and finish studies: completed, or failed (the rules of
search.worker.study_end: the same error, lost workers, or no trial completed).

Any worker may sweep any study at any time: each change is conditional in the database
(a state change, a marked release, an unchanged row), so of several sweepers one wins.
"""

from __future__ import annotations

import functools
import logging
import time

import optuna
from sqlalchemy.orm import Session

from search import store
from search.checkpoints import checkpoint_number
from search.outcome import FailureKind, failure_attrs
from search.store import optuna_private as private
from search.store.trial_writes import set_trial_user_attrs
from search.worker.config import LOSSES_TO_GIVE_UP, SAME_FAILURES_TO_GIVE_UP
from search.worker.resources import WorkerResources, quietly
from search.worker.retries import retry, retry_note, will_retry
from search.worker.study_end import no_success_reason, repeated_failure, repeated_losses

log = logging.getLogger("lrsearch.worker.sweep")
_FINISHED = optuna.exceptions.UpdateFinishedTrialError
_FAIL = optuna.trial.TrialState.FAIL
TIMED_OUT_REASON = "not run: the study's timeout passed"
NOT_RUN_REASON = "not run: the study failed"


class Sweeper:
    """The sweep and the end of studies, for one worker (due every third of a grace period)."""

    def __init__(self, resources: WorkerResources) -> None:
        self.resources = resources
        self._last_sweep = 0.0

    def sweep_if_due(self) -> None:
        """Sweep every active study when it is time (a database error is raised: the loop
        backs off; any other error of one study is logged and the next one is swept)."""
        if time.monotonic() - self._last_sweep < self.resources.config.sweep_every_s:
            return
        self._last_sweep = time.monotonic()
        with self.resources.sessions() as session:
            active = store.active_studies(session)
        for study_id, name in active:
            try:
                self._sweep(study_id, name)
                self.maybe_finish(study_id)
            except Exception as exc:
                if store.is_transient(exc):
                    raise  # the database is away: the loop backs off
                log.exception("sweep of study %s failed", study_id)

    def expire(self, studies: list[tuple[str, str]]) -> None:
        """Past its timeout a study claims no more trials; queued retries are dropped."""
        with self.resources.sessions() as session:
            for study_id, _ in studies:
                store.close_budget(session, study_id)
        for study_id, name in studies:
            self._drop_waiting(name, FailureKind.TIMED_OUT, TIMED_OUT_REASON)
            self.maybe_finish(study_id)

    def maybe_finish(self, study_id: str) -> None:
        """Mark the study completed (budget spent, nothing running, a trial completed) or
        failed (search.worker.study_end); first give back slots that were claimed but never
        became a trial."""
        with self.resources.sessions() as session:
            row = store.get_study(session, study_id)
            if row is None or row.status not in store.RUNNABLE:
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
                if finished and progress.waiting:  # a queued retry would wait for ever
                    self._drop_waiting(row.optuna_study_name, FailureKind.NOT_RUN, NOT_RUN_REASON)
            elif row.trials_claimed >= row.n_trials and progress.running + progress.waiting == 0:
                # no complete trial: no best either, so the study did not succeed
                failure = None if progress.complete else self._no_success(row.optuna_study_name)
                status: store.StudyStatus = "failed" if failure else "completed"
                finished = store.finish_study(session, study_id, status, failure)
            session.commit()
        if finished:
            checkpoints = self.resources.checkpoints
            quietly(functools.partial(checkpoints.remove_study, study_id))

    # -- dead workers -----------------------------------------------------------------------

    def _sweep(self, study_id: str, name: str) -> None:
        """Fail trials whose worker died (no heartbeat within the grace period, or none ever
        within `leak_after_s`) and retry each once."""
        study = self.resources.load_study(name)
        with self.resources.sessions() as session:
            orphans = store.orphan_running_trials(session, name, self.resources.config.leak_after_s)
        stale = private.stale_trial_ids(self.resources.storage, private.study_id(study))
        for trial_id in [*stale, *orphans]:
            self._fail_dead(study, study_id, trial_id)

    def _fail_dead(self, study: optuna.Study, study_id: str, trial_id: int) -> None:
        """Fail one dead trial (with its reason) and retry it once."""
        storage, persist = self.resources.storage, self.resources.persist
        dead = persist(lambda: storage.get_trial(trial_id), "read trial")
        if dead.state != optuna.trial.TrialState.RUNNING:
            return
        retried = will_retry(dead)
        reason = f"worker lost: no heartbeat within the grace period; {retry_note(retried)}"
        attrs = failure_attrs(FailureKind.WORKER_LOST, reason)
        # Optuna refuses attrs on finished trials, so the reason goes first; then the state
        # change is the lock: of several sweepers only one gets True.
        try:
            persist(functools.partial(set_trial_user_attrs, storage, trial_id, attrs))
            if not storage.set_trial_state_values(trial_id, _FAIL):
                return
        except _FINISHED:
            return  # another sweeper, or the worker itself (it was only slow), finished it
        log.warning("study %s: trial %s %s", study_id, dead.number, reason)
        if retried:
            retry(self.resources, study, dead, study_id)
        else:
            number = checkpoint_number(dead.number, dead.system_attrs)
            checkpoints = self.resources.checkpoints
            quietly(functools.partial(checkpoints.remove, study_id, number))

    def _drop_waiting(self, name: str, kind: FailureKind, reason: str) -> None:
        """Fail queued trials that will never run (so the study can finish, or, once it
        failed, none stays queued)."""
        storage = self.resources.storage
        attrs = failure_attrs(kind, reason)
        waiting = (optuna.trial.TrialState.WAITING,)
        for trial in self.resources.load_study(name).get_trials(deepcopy=False, states=waiting):
            trial_id = private.trial_id(trial)
            try:  # reason first: Optuna refuses attrs once a trial is finished
                set_trial_user_attrs(storage, trial_id, attrs)
                storage.set_trial_state_values(trial_id, _FAIL)
            except _FINISHED:  # another worker popped or dropped it first
                continue

    # -- finishing studies ------------------------------------------------------------------

    def _heal_leak(self, session: Session, row: store.Study, used: int) -> None:
        idle = (store.utcnow() - store.as_utc(row.updated_at)).total_seconds()
        if idle < self.resources.config.leak_after_s:
            return  # a claimer may still be on its way to `ask`
        if store.reclaim_slots(
            session, row.id, claimed=row.trials_claimed, used=used, idle_since=row.updated_at
        ):
            log.warning(
                "study %s: gave back %d slot(s) claimed by a lost worker",
                row.id,
                row.trials_claimed - used,
            )

    def _repeated_failure(self, name: str, progress: store.Progress) -> str | None:
        """Why the study should fail before its budget is spent (search.worker.study_end):
        only while none of its trials completed or was pruned."""
        if progress.complete or progress.pruned:
            return None
        if progress.failed + progress.retried < min(SAME_FAILURES_TO_GIVE_UP, LOSSES_TO_GIVE_UP):
            return None
        failed = self.resources.load_study(name).get_trials(deepcopy=False, states=(_FAIL,))
        return repeated_failure(failed) or repeated_losses(failed)

    def _no_success(self, name: str) -> str | None:
        """Why a study whose budget is spent failed (None: a trial completed)."""
        trials = self.resources.load_study(name).get_trials(deepcopy=False)
        return no_success_reason(trials)
