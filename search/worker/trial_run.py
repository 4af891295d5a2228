"""One claimed slot's trial: open its study and data, ask Optuna for the trial, train it with a
heartbeat, and tell how it ended (a stopped trial is failed as cancelled, or released for a
retry when its worker shuts down)."""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from search import store
from search.checkpoints import CheckpointHandle, checkpoint_number
from search.errors import DatasetError, TrialDiverged, TrialStopped
from search.outcome import FailureKind, TrialOutcome, failure_attrs, failure_reason
from search.spec import StudySpec, parse_spec
from search.store import optuna_private as private
from search.store.trial_writes import set_user_attrs
from search.study_policy import make_pruner, make_sampler
from search.worker import study_prep
from search.worker.config import STUDIES_KEPT
from search.worker.heartbeat import Heartbeat, StopCheck
from search.worker.memory_guard import MemoryGuard, TrialOutOfMemory, release_memory
from search.worker.resources import WorkerResources, quietly
from search.worker.retries import retry, retry_note, will_retry
from search.worker.workloads import InProcess, StudyUnusable, Workloads

log = logging.getLogger("lrsearch.worker.trial_run")
_FINISHED = optuna.exceptions.UpdateFinishedTrialError
_FAIL = optuna.trial.TrialState.FAIL


@dataclass
class Opened:
    """A claimed slot's study, ready for `ask`: what the trial needs, or why it cannot run."""

    study: optuna.Study
    spec: StudySpec  # what trials sample from (the range test's rate range in it)
    workload: Any  # a Dataset or a StreamedTask (search.worker.workloads); None: load_error
    load_error: BaseException | None  # raised as the trial's failure
    read: StudySpec  # the spec as stored (the sampler and the slot duties read it)
    study_id: str  # lrsearch's id of the study


@dataclass(frozen=True)
class Member:
    """An asked trial and where its checkpoint lives."""

    trial: optuna.Trial
    handle: CheckpointHandle


#: A trained trial: its value, or the exception that ended it (`Trainer.run_many`).
Result = float | BaseException


class TrialRunner:
    """Runs trials for one worker; keeps its recent studies, datasets and compiled models."""

    def __init__(self, resources: WorkerResources, in_process: InProcess | None = None) -> None:
        self.resources = resources
        self._in_process = in_process
        self.workloads = Workloads(resources, in_process)
        self._studies: OrderedDict[str, optuna.Study] = OrderedDict()
        self._trainer: Any = None
        self.guard = MemoryGuard(resources.config.memory_limit_mb)
        #: Still over the memory limit after a trial's cleanup: the worker stops (and its
        #: supervisor starts a fresh one) rather than fail every trial that follows.
        self.memory_exhausted = False
        self._ran_out = False  # the current trial ran out of memory

    def run(self, study_id: str, slot: int) -> None:
        """Run the trial of a claimed slot to its end (a deleted study: nothing to run)."""
        self._ran_out = False
        opened = self._open(study_id, slot)
        if opened is None:
            return
        # `ask` is never retried: a retry after a lost answer could create a second trial.
        trial = opened.study.ask()
        interval = self.resources.config.heartbeat_interval
        self.resources.current_trial = f"{study_id}/{trial.number}"
        try:
            with Heartbeat(self.resources.storage, private.trial_id(trial), interval):
                self._train_and_tell(opened, trial, study_id)
        finally:
            self.resources.current_trial = None
        if self._ran_out:
            self._after_out_of_memory()

    # -- opening ----------------------------------------------------------------------------

    def _open(self, study_id: str, slot: int) -> Opened | None:
        """Read the study (safe to repeat), then its workload; None when the study was
        deleted, or failed here because it cannot run (its plugin is unusable)."""
        read = self.resources.persist(functools.partial(self._read, study_id), "open study")
        if read is None:
            return None
        spec, name, tenant_id = read
        study = self.resources.persist(
            functools.partial(self._loaded_study, name, spec), "open study"
        )
        load_error: BaseException | None = None
        try:
            workload = self._workload(study, spec, tenant_id)
        except StudyUnusable as exc:
            self._fail_study(study_id, str(exc))
            return None
        except (DatasetError, OSError, ValueError) as exc:  # a file deleted under a study
            workload, load_error = None, exc
        opened = self._for_slot(Opened(study, spec, workload, load_error, spec, study_id), slot)
        if self.resources.cancelled(study_id):  # during the range test: no trial starts
            log.info("study %s was cancelled while it was opened: no trial started", study_id)
            return None
        return opened

    def _for_slot(self, opened: Opened, slot: int) -> Opened:
        """Before the slot's `ask`: its seeded sampler and its duties (_prepared_spec), once
        per claimed slot."""
        spec = opened.read
        seed = None if spec.seed is None else spec.seed * 100_003 + slot
        # seeded per slot: reproducible in any order
        opened.study.sampler = make_sampler(spec, seed)
        if opened.workload is None or opened.load_error is not None:
            return opened
        prepare = functools.partial(
            self._prepared_spec, opened.study, spec, opened.workload, slot, opened.study_id
        )
        try:
            with self.guard.watching():  # the range test builds and trains the model
                searched = self.resources.persist(prepare, "open study")
        except TrialOutOfMemory:  # the trial fails with it
            error = TrialOutOfMemory(self.guard.tripped or "out of memory")
            return replace(opened, load_error=error)
        return replace(opened, spec=searched)

    def _prepared_spec(
        self, study: optuna.Study, spec: StudySpec, workload: Any, slot: int, study_id: str
    ) -> StudySpec:
        """The range test (once per study), the seeded first trials (slot 1) and the
        replicates (last slots): the spec trials sample from (safe to repeat)."""
        trainer = self._get_trainer()
        searched = study_prep.searched_spec(self.resources, study, spec, workload, trainer)
        if slot == 1:
            study_prep.enqueue_first_trials(study, spec, searched, workload)
        queued = study_prep.queue_replicate(self.resources, study, searched, slot) or slot == 1
        if queued and self.resources.cancelled(study_id):  # a cancel before it failed none
            with self.resources.sessions() as session:
                store.fail_waiting_trials(session, study.study_name)
        return searched

    def _read(self, study_id: str) -> tuple[StudySpec, str, str] | None:
        with self.resources.sessions() as session:
            row = store.get_study(session, study_id)
            if row is None:
                return None
            return parse_spec(row.spec), row.optuna_study_name, row.tenant_id

    def _workload(self, study: optuna.Study, spec: StudySpec, tenant_id: str) -> Any:
        """Arrays or a streamed task; TensorFlow is set up first (a plugin's preflight and
        data pipelines need it)."""
        self._get_trainer()
        return self.workloads.load(study, spec, tenant_id)

    def _fail_study(self, study_id: str, reason: str) -> None:
        """The study cannot run anywhere as specified: it fails with the reason."""
        log.warning("study %s cannot run: %s", study_id, reason)
        with self.resources.sessions() as session:
            store.finish_study(session, study_id, "failed", reason[:2000])

    def _loaded_study(self, name: str, spec: StudySpec) -> optuna.Study:
        """The study as this worker last loaded it: its Optuna cache of finished trials stays
        warm, so a trial reads only what changed since the last one, not the whole study."""
        study = self._studies.get(name)
        if study is None:
            study = optuna.load_study(
                study_name=name, storage=self.resources.storage, pruner=make_pruner(spec)
            )
            self._studies[name] = study
            while len(self._studies) > STUDIES_KEPT:
                self._studies.popitem(last=False)
        self._studies.move_to_end(name)
        return study

    # -- training and telling ---------------------------------------------------------------

    def _train_and_tell(self, opened: Opened, trial: optuna.Trial, study_id: str) -> None:
        member = Member(trial, self._checkpoint_handle(trial, study_id))
        (result,) = self._train(opened, [member], study_id)
        self._end(opened, member, result, study_id)

    def _train(self, opened: Opened, members: list[Member], study_id: str) -> list[Result]:
        """Train the members (one: `Trainer.run`, several: `Trainer.run_many`); per member
        its value or what ended it (an error of the whole population ends every member)."""
        stop_check = StopCheck(self.resources.stop, lambda: self.resources.cancelled(study_id))
        try:
            if opened.load_error is not None:
                raise opened.load_error
            assert opened.workload is not None
            trainer = self._get_trainer()
            with self.guard.watching():
                if len(members) == 1:
                    only = members[0]
                    return [
                        trainer.run(
                            only.trial, opened.spec, opened.workload, stop_check, only.handle
                        )
                    ]
                trials, handles = [m.trial for m in members], [m.handle for m in members]
                results = trainer.run_many(
                    trials, opened.spec, opened.workload, stop_check, handles
                )
                return list(results)
        except (Exception, TrialOutOfMemory) as exc:
            return [exc] * len(members)

    def _end(self, opened: Opened, member: Member, result: Result, study_id: str) -> None:
        """Tell how the member's trial ended: its value, pruned, failed with its kind,
        cancelled or released for a retry, or left to the sweep (the database is away)."""
        study, trial, handle = opened.study, member.trial, member.handle
        try:
            value = _value(result)
        except TrialOutOfMemory as exc:  # not retried: it would run out again
            self._ran_out = True
            reason = str(exc) or self.guard.tripped or "out of memory"
            self._fail(trial, FailureKind.OUT_OF_MEMORY, reason)
            self._tell(study, trial, handle, state=_FAIL)
            log.warning("trial %s failed: %s", trial.number, reason)
        except optuna.TrialPruned:
            self._tell(study, trial, handle, state=optuna.trial.TrialState.PRUNED)
        except TrialStopped as exc:
            self._end_stopped(study, trial, handle, study_id, str(exc))
        except TrialDiverged:  # the trainer stored why
            self._tell(study, trial, handle, state=_FAIL)
        except _FINISHED:
            log.warning(
                "trial %s was failed by a sweep while it ran; its retry goes on", trial.number
            )
        except Exception as exc:
            if store.is_transient(exc):
                log.error(
                    "trial %s: database away for too long (%s); left for the sweep",
                    trial.number,
                    exc,
                )
                return
            bad_input = exc is opened.load_error
            kind = FailureKind.BAD_INPUT if bad_input else FailureKind.of_exception(exc)
            self._ran_out = self._ran_out or kind is FailureKind.OUT_OF_MEMORY
            self._fail(trial, kind, failure_reason(exc))
            self._tell(study, trial, handle, state=_FAIL)
            log.warning("trial %s failed: %s", trial.number, exc)
        else:
            self._tell(study, trial, handle, value)

    def _after_out_of_memory(self) -> None:
        """Drop every compiled model and kept dataset, release the memory; still over the
        limit: stop this worker (its supervisor restarts it) instead of failing every trial."""
        self._trainer = None
        self.workloads = Workloads(self.resources, self._in_process)
        release_memory()
        reason = self.guard.over_limit()
        if reason is not None:
            log.error("%s after the cleanup: the worker stops (to be restarted fresh)", reason)
            self.memory_exhausted = True
            self.resources.stop.set()

    def _checkpoint_handle(self, trial: optuna.Trial, study_id: str) -> CheckpointHandle:
        """Where the trial's checkpoint lives: a retry's is its original trial's."""
        # A retry's `failed_trial` was set when it was queued, before `ask` read the trial:
        # the trial's own copy has it, no need to load the whole trial again.
        attrs = private.frozen_view(trial).system_attrs
        return CheckpointHandle(
            self.resources.checkpoints,
            study_id,
            checkpoint_number(trial.number, attrs),
            every_s=self.resources.config.checkpoint_every_s,
        )

    def _fail(self, trial: optuna.Trial, kind: FailureKind, reason: str) -> None:
        """Store why the trial fails (before it is told: a finished trial takes no attrs)."""
        attrs = failure_attrs(kind, reason)
        self.resources.persist(functools.partial(set_user_attrs, trial, attrs))

    def _tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        handle: CheckpointHandle,
        value: float | None = None,
        state: optuna.trial.TrialState | None = None,
    ) -> None:
        """Finish the trial (retried; a repeat after a lost answer is skipped) and drop its
        checkpoint, unless a sweep failed it first: then its retry resumes from the file."""
        frozen = self.resources.persist(
            lambda: study.tell(trial, value, state=state, skip_if_finished=True), "tell"
        )
        lost = TrialOutcome.from_attrs(frozen.user_attrs).fail_kind is FailureKind.WORKER_LOST
        if frozen.state == _FAIL and lost:
            return  # taken over by a sweep while it trained: its retry resumes from the file
        quietly(handle.remove)

    def _end_stopped(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        handle: CheckpointHandle,
        study_id: str,
        why: str,
    ) -> None:
        """Cancelled: the trial fails as cancelled. Shutdown: release it for another worker."""
        persist = self.resources.persist
        if persist(lambda: self.resources.cancelled(study_id), "read status"):
            self._fail(trial, FailureKind.CANCELLED, f"study cancelled ({why})")
            self._tell(study, trial, handle, state=_FAIL)
            return
        storage = self.resources.storage
        frozen = persist(lambda: storage.get_trial(private.trial_id(trial)), "read trial")
        retried = will_retry(frozen)
        self._fail(trial, FailureKind.SHUT_DOWN, f"worker shut down ({why}); {retry_note(retried)}")
        persist(lambda: study.tell(trial, state=_FAIL, skip_if_finished=True), "tell")
        if retried:
            retry(self.resources, study, frozen, study_id)
        else:
            quietly(handle.remove)

    def _get_trainer(self) -> Any:
        if self._trainer is None:
            from search.training.devices import configure_devices
            from search.training.trainer import Trainer

            configure_devices()
            models_dir = Path(self.resources.config.data_dir) / "models"
            self._trainer = Trainer(persist=self.resources.persist, models_dir=models_dir)
        return self._trainer


def _value(result: Result) -> float:
    """The trained value, or the exception that ended the trial raised again."""
    if isinstance(result, BaseException):
        raise result
    return result
