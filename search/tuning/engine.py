"""`tune()`: lrsearch's search in a notebook or a script, on your own model function and data.

It is the service's engine run in this process: the study is created through
`search.studies` (the spec checked as the API checks it), trial slots are claimed like a
worker claims them, and each trial runs through the worker's `TrialRunner` and `Trainer`
(strategies, Optuna's sampler, pruning, divergence, checkpoints, exports). The study's
`task.plugin` is `search.plugins.IN_PROCESS`, which no worker offers, so with `storage=`
the service's database the study shows in the API, the CLI and the dashboard while only
this process trains it.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna

from search import store, studies
from search.plugins import IN_PROCESS
from search.spec_payload import parse_payload
from search.store import optuna_private as private
from search.strategies import STRATEGY_IDS
from search.tuning.progress import TuneProgress
from search.tuning.results import TuneResult, TuningFailed, read_result
from search.worker.config import WorkerConfig
from search.worker.resources import WorkerResources
from search.worker.sweep import Sweeper
from search.worker.trial_run import TrialRunner

#: The tenant a tune() study belongs to in a shared database (the API's single-user one).
DEFAULT_TENANT = "default"
#: Studies a tenant may hold at once do not limit tune(): it runs only its own.
_NO_QUOTA = 1_000_000_000
#: How often tune() looks whether trials run by other workers have finished.
OTHERS_POLL_S = 0.5


def tune(
    build_model: Callable[[], Any] | None = None,
    train: Any = None,
    val: Any = None,
    *,
    epochs: int,
    loss: Any = None,
    metrics: Sequence[Any] = (),
    plugin: str | None = None,
    plugin_args: dict[str, Any] | None = None,
    n_trials: int = 20,
    strategies: Sequence[str] | None = None,
    objective: str = "val_loss",
    direction: str | None = None,
    optimizer: str = "adam",
    momentum: float = 0.9,
    batch_size: int = 64,  # the spec's default
    steps_per_epoch: int | None = None,
    ranges: dict[str, dict[str, Any]] | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = 0,
    range_test: bool = True,
    replicate_share: float = 0.25,
    timeout_s: float | None = None,
    name: str = "tune",
    storage: str | None = None,
    tenant: str = DEFAULT_TENANT,
    progress: bool = True,
) -> TuneResult:
    """Search the learning-rate strategy for `build_model()` (an uncompiled keras.Model,
    built once per trial setup) on `train` / `val` (tf.data.Datasets of batches, or (x, y)
    arrays batched by `batch_size`), compiled with `loss` and `metrics`; or for an installed
    task `plugin` with its `plugin_args` (then the other four do not apply).

    Runs in this process on a temporary SQLite study, or on `storage` (a database URL,
    e.g. the service's: the study then shows in its API and dashboard, and with a plugin the
    service's workers that offer it train trials too). Returns the study's trials and its
    best trial (`result.best.export`, `result.best.apply()`); raises TuningFailed when the
    study failed without a best trial, SpecError for bad arguments.
    """
    own_code = (build_model, train, val, loss)
    if plugin is None and any(part is None for part in own_code):
        raise TypeError("tune() needs build_model, train, val and loss (or a plugin)")
    if plugin is not None and any(part is not None for part in own_code):
        raise TypeError("with a plugin, the plugin gives the model, the data and the loss")
    payload: dict[str, Any] = {
        "name": name,
        "task": {
            "plugin": plugin or IN_PROCESS,
            "plugin_args": dict(plugin_args or {}),
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "momentum": momentum,
        },
        "objective": {"metric": objective, "direction": direction},
        "strategies": list(strategies or STRATEGY_IDS),
        "ranges": dict(ranges or {}),
        "n_trials": n_trials,
        "sampler": sampler,
        "pruner": pruner,
        "seed": seed,
        "range_test": range_test,
        "replicate_share": replicate_share,
        "timeout_s": timeout_s,
    }
    parse_payload(payload)  # bad arguments fail before any data is touched
    task = None
    if build_model is not None:
        from search.training.in_process import in_process_task

        task = in_process_task(
            build_model,
            train,
            val,
            loss=loss,
            metrics=metrics,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
        )
        from search.training.streamed import objective_reported

        objective_reported(task, objective, batch_size, seed)  # a typo fails here, not per trial
    with _place(storage) as (url, data_dir), _quiet_optuna():
        result = _run(url, data_dir, tenant, payload, task, progress, storage)
    if result.best is None and result.status != "cancelled":
        raise TuningFailed(
            f"the study {result.status} without a best trial: {result.error}", result
        )
    return result


@contextlib.contextmanager
def _place(storage: str | None) -> Iterator[tuple[str, Path]]:
    """(database URL, data directory for checkpoints), temporary where not given."""
    with tempfile.TemporaryDirectory(prefix="lrsearch-tune-") as tmp:
        folder = Path(tmp)
        yield storage or f"sqlite:///{folder / 'tune.db'}", folder


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No Optuna line per study or trial in a notebook (the progress bar says it all); its
    heartbeat warning is for Study.optimize, which lrsearch does not use on purpose."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run(
    url: str,
    data_dir: Path,
    tenant: str,
    payload: dict[str, Any],
    task: Any,
    show: bool,
    storage: str | None,
) -> TuneResult:
    store.upgrade(url)
    resources = WorkerResources(WorkerConfig(url, data_dir), threading.Event())
    try:
        with resources.sessions() as session:
            tenant_id = store.get_or_create_tenant(session, tenant).id
            study_id = studies.create_study(
                session,
                resources.storage,
                tenant_id,
                payload,
                data_dir=data_dir,
                max_active=_NO_QUOTA,
            ).id
        in_process = None if task is None else (lambda _spec: task)
        runner = TrialRunner(resources, in_process=in_process)
        _trials(resources, runner, study_id, payload, show)
        with resources.sessions() as session:
            return read_result(session, study_id, storage)
    finally:
        backend = private.rdb_backend(resources.storage)
        if backend is not None:
            backend.engine.dispose()
        resources.engine.dispose()


def _trials(
    resources: WorkerResources,
    runner: TrialRunner,
    study_id: str,
    payload: dict[str, Any],
    show: bool,
) -> None:
    """Claim and run trials until the budget is spent (or the timeout passed, or the study
    failed); Ctrl-C cancels the study."""
    sweeper = Sweeper(resources)
    bar = TuneProgress(int(payload["n_trials"]), enabled=show)
    started, timeout = time.monotonic(), payload.get("timeout_s")
    try:
        while True:
            with resources.sessions() as session:
                if timeout and time.monotonic() - started > timeout:
                    store.close_budget(session, study_id)
                slot = store.claim_slot(session, study_id)
            if slot is None:
                break
            runner.run(study_id, slot)
            sweeper.maybe_finish(study_id)
            bar.update(*_done_and_best(resources, study_id))
        _wait_for_others(resources, sweeper, study_id, bar)
    except KeyboardInterrupt:
        with resources.sessions() as session:
            store.finish_study(session, study_id, "cancelled", "interrupted (Ctrl-C)")
        raise
    finally:
        bar.close()


def _wait_for_others(
    resources: WorkerResources, sweeper: Sweeper, study_id: str, bar: TuneProgress
) -> None:
    """Until the study is final: trials other workers took (a plugin study on a shared
    database) finish there; the sweep looks after any whose worker died."""
    while True:
        sweeper.maybe_finish(study_id)
        with resources.sessions() as session:
            status = store.study_status(session, study_id)
        if status not in store.RUNNABLE:
            return
        bar.update(*_done_and_best(resources, study_id))
        time.sleep(OTHERS_POLL_S)


def _done_and_best(resources: WorkerResources, study_id: str) -> tuple[int, float | None]:
    with resources.sessions() as session:
        row = store.get_study(session, study_id)
        assert row is not None
        p = store.study_progress(session, row)
        best = store.best_value(session, row)
    return p.complete + p.pruned + p.failed, None if best is None else best.value


__all__ = ["DEFAULT_TENANT", "tune"]
