"""The one entry point for a study's life in the domain: validate a requested spec against its
dataset and the catalog, create the study (its Optuna study, then its row) and delete it.

Why one place: the API only maps HTTP onto these functions, so every rule a new study must
meet (storable values, strict numbers, a safe Keras model, a known dataset, ranges that fit
the run, the tenant's quota) is checked here once, before anything is written.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.orm import Session

from search import store
from search.checkpoints import CheckpointStore
from search.errors import FieldError, QuotaExceeded, SpecError
from search.keras_json import model_json_problems
from search.model_fit import dataset_outputs, file_output_problems, fit_problems, takes
from search.model_size import DataShape, ModelBudget, check_model_size
from search.space import check_spec_against_run, run_shape
from search.spec import KerasFileModel, KerasJsonModel, StudySpec
from search.spec_payload import MAX_REPORTED, parse_payload
from search.store.notify import announce
from search.task_metrics import objective_problem

MODEL_CONFIG_FIELD = "task.model.config"
MODEL_FIELD = "task.model"
PREPROCESS_FIELD = "task.preprocess"
PLUGIN_FIELD = "task.plugin"
DIGITS = "digits"


def create_study(
    session: Session,
    storage: optuna.storages.BaseStorage,
    tenant_id: str,
    payload: dict[str, Any],
    *,
    data_dir: Path,
    max_active: int,
    live_within_s: float | None = None,
    budget: ModelBudget | None = None,
) -> store.Study:
    """Validate the requested spec (its model within `budget`, the defaults when None), hold
    the tenant to `max_active` queued or running studies, then create the study queued for
    workers. Raises SpecError or QuotaExceeded.

    With `live_within_s`, a `task.plugin` must be offered by a worker seen within that many
    seconds (None: not checked, as in `tune()`, which runs its plugin itself).
    """
    spec = validate_spec(session, tenant_id, payload, data_dir, budget or ModelBudget())
    if live_within_s is not None:
        check_plugin_offered(session, spec, live_within_s)
    _check_quota(session, tenant_id, max_active)  # refuses early, before Optuna's study
    return _insert_study(session, storage, tenant_id, spec, max_active)


def validate_spec(
    session: Session,
    tenant_id: str,
    payload: dict[str, Any],
    data_dir: Path,
    budget: ModelBudget | None = None,
) -> StudySpec:
    """The spec, checked on its own, then against its dataset (its model within `budget`);
    one SpecError per failed step, listing every bad field."""
    spec = parse_payload(payload)
    _check_model_json(spec)
    model_file = _check_model_file(session, tenant_id, spec)
    if spec.task.plugin is None:  # a plugin's data, model and run length are known on a worker
        _check_dataset_and_run(
            session, tenant_id, spec, data_dir, model_file, budget or ModelBudget()
        )
    return spec


def check_plugin_offered(session: Session, spec: StudySpec, live_within_s: float) -> None:
    """A study naming a task plugin that no live worker offers would wait forever: a
    SpecError on `task.plugin` listing the plugins on offer."""
    name = spec.task.plugin
    if name is None:
        return
    offered = store.offered_plugins(session, live_within_s)
    if name in offered:
        return
    live = store.count_live_workers(session, live_within_s)
    workers = "1 live worker offers" if live == 1 else f"{live} live workers offer"
    why_none = f"none ({workers} no plugin)" if live else "none (no worker is running yet)"
    on_offer = ", ".join(sorted(offered)) or why_none
    message = f"no live worker offers task plugin {name!r}; plugins on offer: {on_offer}"
    raise SpecError([FieldError(PLUGIN_FIELD, message)])


def delete_study(
    session: Session,
    storage: optuna.storages.BaseStorage,
    study: store.Study,
    checkpoints: CheckpointStore,
) -> None:
    """Delete the row first (workers then stop), then its Optuna study, trials and
    checkpoints."""
    study_id, optuna_name = study.id, study.optuna_study_name
    session.delete(study)
    session.commit()
    with contextlib.suppress(KeyError):  # never created, or deleted by a concurrent call
        optuna.delete_study(study_name=optuna_name, storage=storage)
    checkpoints.remove_study(study_id)


# --- the spec against its model, dataset and catalog ------------------------------------------


def _check_model_json(spec: StudySpec) -> None:
    """Refuse a keras_json model carrying code or non-Keras classes, without importing Keras.

    The worker loads it again in Keras safe mode; checking here turns a study that would
    fail at its first trial into a SpecError on `task.model.config`.
    """
    model = spec.task.model
    if not isinstance(model, KerasJsonModel):
        return
    problems = model_json_problems(model.config)
    if problems:
        raise SpecError([FieldError(MODEL_CONFIG_FIELD, m) for m in problems[:MAX_REPORTED]])


# --- the spec against the catalog ----------------------------------------------------------


def _check_model_file(
    session: Session, tenant_id: str, spec: StudySpec
) -> store.StoredModel | None:
    """A keras_file model must be one of the tenant's model files; its row is returned for
    the dataset and budget checks."""
    model = spec.task.model
    if not isinstance(model, KerasFileModel):
        return None
    row = store.get_model(session, model.id, tenant_id)
    if row is None:
        message = f"unknown model file {model.id!r}: upload one with POST /v1/models"
        raise SpecError([FieldError("task.model.id", message)])
    return row


def _check_dataset_and_run(
    session: Session,
    tenant_id: str,
    spec: StudySpec,
    data_dir: Path,
    model_file: store.StoredModel | None,
    budget: ModelBudget,
) -> None:
    """The dataset must be "digits" or the tenant's, the ranges must fit the run, the
    objective a metric its task reports, the preprocessing the data, a user model must fit
    the examples and the outputs (search.model_fit), and the budget."""
    ref = spec.task.dataset
    n_outputs: int | None
    if ref == DIGITS:
        n_train, input_shape, task, n_outputs = _digits_facts(str(data_dir))
    else:
        dataset = store.get_dataset(session, ref, tenant_id)
        if dataset is None:
            message = f'unknown dataset {ref!r}: use "digits" or the id of a dataset you uploaded'
            raise SpecError([FieldError("task.dataset", message)])
        n_train, input_shape, task = dataset.n_train, tuple(dataset.input_shape), dataset.task
        n_outputs = dataset_outputs(dataset, data_dir)
        if dataset.source is not None and spec.task.preprocess is not None:
            message = "not available for a dataset by path (its statistics need a full pass)"
            raise SpecError([FieldError(PREPROCESS_FIELD, message)])
    facts = (tuple(input_shape), n_outputs, task)
    errors = check_spec_against_run(spec, run_shape(spec, n_train)) if n_train else []
    unreported = objective_problem(spec.objective.metric, task)
    errors += [unreported] if unreported else []
    prep = spec.task.preprocess
    if prep is not None:
        from search.data.preprocess import problems as preprocess_problems  # numpy, sklearn

        refused = preprocess_problems(
            input_shape,
            task,
            standardize=prep.standardize,
            standardize_target=prep.standardize_target,
        )
        errors += [FieldError(PREPROCESS_FIELD, m) for m in refused]
    model_input = None if model_file is None else model_file.input_shape
    if model_input is not None and not takes(list(model_input), list(input_shape)):
        errors.append(
            FieldError(
                "task.model.id",
                f"the model takes inputs of shape {tuple(model_input)}; the dataset's examples "
                f"have shape {tuple(input_shape)}",
            )
        )
    elif model_file is not None:
        misfit = file_output_problems(data_dir / model_file.path, *facts)
        errors += [FieldError("task.model.id", m) for m in misfit]
    shape = DataShape(tuple(input_shape), n_outputs or 1)
    params = None if model_file is None else model_file.est_params
    problems = check_model_size(spec.task, shape, budget, params)
    if isinstance(spec.task.model, KerasJsonModel):  # valid JSON: _check_model_json passed
        problems += fit_problems(json.loads(spec.task.model.config), *facts)
    if problems:
        errors.append(FieldError(MODEL_FIELD, "; ".join(problems)))
    if errors:
        raise SpecError(errors)


def _check_inputs_remain(session: Session, tenant_id: str, spec: StudySpec) -> None:
    """The spec's uploaded dataset and model file still exist (asked under the tenant's lock,
    which deletions take too: a study is never queued on an upload deleted meanwhile)."""
    errors = []
    ref = spec.task.dataset
    if (
        spec.task.plugin is None
        and ref != DIGITS
        and not store.get_dataset(session, ref, tenant_id)
    ):
        errors.append(FieldError("task.dataset", f"dataset {ref!r} was deleted meanwhile"))
    model = spec.task.model
    if isinstance(model, KerasFileModel) and not store.get_model(session, model.id, tenant_id):
        errors.append(FieldError("task.model.id", f"model file {model.id!r} was deleted meanwhile"))
    if errors:
        raise SpecError(errors)


def train_rows(session: Session, tenant_id: str, ref: str, data_dir: Path) -> int | None:
    """Training rows of a study's dataset (None: the upload was deleted since)."""
    if ref == DIGITS:
        return _digits_facts(str(data_dir))[0]
    dataset = store.get_dataset(session, ref, tenant_id)
    return None if dataset is None else dataset.n_train


@functools.lru_cache(maxsize=1)
def _digits_facts(data_dir: str) -> tuple[int, tuple[int, ...], str, int]:
    """Training rows, example shape, task and outputs of the built-in dataset (loaded once
    per process)."""
    from search.data import load_dataset  # scikit-learn: only once digits is asked for

    digits = load_dataset(DIGITS, Path(data_dir))
    return len(digits.x_train), digits.input_shape, digits.task, digits.n_outputs


# --- writes --------------------------------------------------------------------------------


def _check_quota(session: Session, tenant_id: str, max_active: int) -> None:
    if store.count_active_studies(session, tenant_id) >= max_active:
        raise QuotaExceeded(f"at most {max_active} queued or running studies per tenant")


def _insert_study(
    session: Session,
    storage: optuna.storages.BaseStorage,
    tenant_id: str,
    spec: StudySpec,
    max_active: int,
) -> store.Study:
    """Create the Optuna study before the row, so a worker never sees a row without it.

    The quota is counted again with the row's insert, in one transaction under the tenant's
    lock: concurrent creations (in any API process) cannot all pass it; and the uploaded
    dataset and model file the spec was validated against are looked up again there, since
    a deletion (under the same lock) may have come between. Optuna's study is
    created before the lock is taken (on SQLite its own connection needs the write lock),
    and deleted again if the quota refuses the row.
    """
    study_id = store.new_id()
    optuna_name = f"lrsearch-{study_id}"
    optuna.create_study(storage=storage, study_name=optuna_name, direction=spec.objective.direction)
    study = store.Study(
        id=study_id,
        tenant_id=tenant_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        status="queued",
        n_trials=spec.n_trials,
        trials_claimed=0,
        optuna_study_name=optuna_name,
    )
    try:
        store.lock_tenant(session, tenant_id)
        _check_quota(session, tenant_id, max_active)
        _check_inputs_remain(session, tenant_id, spec)
        session.add(study)
        announce(session)  # idle workers start on it now, not at their next poll
        session.commit()
    except BaseException:
        session.rollback()
        optuna.delete_study(study_name=optuna_name, storage=storage)
        raise
    return study
