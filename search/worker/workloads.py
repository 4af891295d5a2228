"""What a study's trials train on, as one worker resolves it: arrays (the built-in dataset or
an upload, kept in memory) or a streamed task (a task plugin, or a dataset registered by
path on shared storage), and, for a plugin, its preflight, run once per study and stored
with the study.

A study whose plugin cannot run (missing, broken, bad arguments, a model that does not take
its data) raises `StudyUnusable`: the worker fails the study with the message and goes on.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from search import store
from search.data import BUILTIN, Dataset, load_dataset
from search.data.preprocess import standardized
from search.errors import LRSearchError, PluginError, SpecError
from search.plugins import IN_PROCESS
from search.spec import PreprocessSpec, StudySpec
from search.store import optuna_private as private
from search.strategies import RunShape
from search.worker.config import DATASETS_KEPT, STUDIES_KEPT
from search.worker.resources import WorkerResources

if TYPE_CHECKING:
    from search.training.streamed import StreamedTask

log = logging.getLogger("lrsearch.worker.workloads")

#: The Optuna study system attribute that holds a plugin study's preflight.
PREFLIGHT_KEY = "lrsearch:preflight"
Workload = Any  # a search.data.Dataset or a search.training.streamed.StreamedTask
#: Gives `tune()`'s in-process task for a study name (the code lives in that process only).
InProcess = Callable[[StudySpec], "StreamedTask"]


class StudyUnusable(LRSearchError):
    """The study cannot run on any worker as specified: it fails with this message."""


class Workloads:
    """Resolves and keeps the workloads of one worker's recent studies."""

    def __init__(self, resources: WorkerResources, in_process: InProcess | None = None) -> None:
        self._resources = resources
        self._persist = resources.persist
        self._data_dir = Path(resources.config.data_dir)
        self._in_process = in_process
        self._datasets: OrderedDict[str, Dataset] = OrderedDict()
        self._tasks: OrderedDict[str, Any] = OrderedDict()
        self._uploads: set[str] = set()  # dataset ids known to be uploads, not data by path

    def load(self, study: optuna.Study, spec: StudySpec, tenant_id: str) -> Workload:
        """The study's workload; StudyUnusable when its plugin cannot run, a DatasetError
        (or OSError) when its data cannot be read (the trial fails with it)."""
        if spec.task.plugin == IN_PROCESS and self._in_process is not None:
            return self._in_process(spec)
        if study.study_name in self._tasks:  # a plugin or data by path, resolved before
            self._tasks.move_to_end(study.study_name)
            return self._tasks[study.study_name]
        if spec.task.plugin is not None:
            return self._kept(study.study_name, lambda: self._plugin_task(study, spec))
        ref = spec.task.dataset
        if ref != BUILTIN and ref not in self._uploads:
            row = self._persist(lambda: self._dataset_row(ref, tenant_id), "read dataset")
            if row is not None and row.source is not None:
                return self._kept(study.study_name, lambda: self._by_path(spec, row))
            if row is not None:
                self._uploads.add(ref)  # an upload: read from the data directory from now on
        return self._dataset(spec)

    def _dataset(self, spec: StudySpec) -> Dataset:
        """The study's dataset as its trials train on it: loaded, then preprocessed
        (`task.preprocess`); kept per dataset and preprocessing."""
        ref, prep = spec.task.dataset, spec.task.preprocess or PreprocessSpec()
        key = f"{ref}|standardize={prep.standardize}|target={prep.standardize_target}"
        if key not in self._datasets:
            raw = load_dataset(ref, self._data_dir)
            self._datasets[key] = standardized(
                raw, features=prep.standardize, target=prep.standardize_target
            )
            while len(self._datasets) > DATASETS_KEPT:
                self._datasets.popitem(last=False)
        self._datasets.move_to_end(key)
        return self._datasets[key]

    def _dataset_row(self, ref: str, tenant_id: str) -> store.StoredDataset | None:
        with self._resources.sessions() as session:
            row = store.get_dataset(session, ref, tenant_id)
            if row is not None:
                session.expunge(row)
            return row

    def _kept(self, key: str, make: Callable[[], Any]) -> Any:
        """A study's streamed task, made once per worker (a plugin's preflight included)."""
        if key not in self._tasks:
            self._tasks[key] = make()
            while len(self._tasks) > STUDIES_KEPT:
                self._tasks.popitem(last=False)
        self._tasks.move_to_end(key)
        return self._tasks[key]

    def _by_path(self, spec: StudySpec, row: store.StoredDataset) -> Any:
        """Pipelines over a dataset registered by path (files under this worker's roots)."""
        from search.training.stream_data import RefShape, reference_task

        source = dict(row.source or {})
        shape = RefShape(
            name=row.name,
            task="classification" if row.task == "classification" else "regression",
            n_classes=row.n_classes,
            input_shape=tuple(int(d) for d in row.input_shape),
            n_outputs=int(source.get("n_outputs") or row.n_classes or 1),
        )
        roots = list(self._resources.config.data_roots)
        models_dir = self._data_dir / "models"
        return reference_task(spec, shape, source, row.n_train, roots, models_dir)

    def _plugin_task(self, study: optuna.Study, spec: StudySpec) -> Any:
        """The plugin's task for this study, after its preflight (stored with the study, so
        other workers skip it; run here when none is stored yet)."""
        from search.training.plugin_task import Preflight, as_plugin_error, plugin_task, preflight

        name = str(spec.task.plugin)
        try:
            found = Preflight.from_json(self._stored(study))
            if found is None:
                found = preflight(spec)
                self._store(study, found.as_json())
                log.info(
                    "study %s: plugin %r preflight ok (%d steps per epoch)",
                    study.study_name,
                    name,
                    found.steps_per_epoch,
                )
            task = plugin_task(spec, found)
        except (PluginError, SpecError) as exc:
            raise StudyUnusable(str(exc)) from None
        except Exception as exc:  # a plugin's code may raise anything
            raise StudyUnusable(str(as_plugin_error(exc, name))) from None
        return task

    def _stored(self, study: optuna.Study) -> Any:
        storage, study_id = private.study_storage(study), private.study_id(study)
        attrs = self._persist(lambda: storage.get_study_system_attrs(study_id), "read preflight")
        return attrs.get(PREFLIGHT_KEY)

    def _store(self, study: optuna.Study, value: dict[str, Any]) -> None:
        storage, study_id = private.study_storage(study), private.study_id(study)
        self._persist(
            lambda: storage.set_study_system_attr(study_id, PREFLIGHT_KEY, value),
            "store preflight",
        )


def workload_run(spec: StudySpec, workload: Workload) -> RunShape:
    """The run every trial of the study makes on this workload (epochs x batches)."""
    from search.space import run_shape

    if isinstance(workload, Dataset):
        return run_shape(spec, len(workload.x_train))
    return RunShape(spec.task.epochs, int(workload.steps_per_epoch))


__all__ = ["PREFLIGHT_KEY", "StudyUnusable", "Workload", "Workloads", "workload_run"]
