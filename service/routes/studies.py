"""Studies: create (validated once, queued for workers), list, inspect, cancel, delete, best."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from fastapi import APIRouter, Body, Query, Request, Response
from sqlalchemy.orm import Session

from search import store
from search.errors import FieldError, SpecError
from search.spec import StudySpec, parse_spec
from search.strategies.base import RunShape
from service.deps import (
    Caller,
    SessionDep,
    SettingsDep,
    TenantDep,
    decode_cursor,
    encode_cursor,
    study_or_404,
)
from service.errors import Conflict, InvalidRequest, TooManyRequests
from service.routes.trials import finite, jsonable, trial_json

router = APIRouter(tags=["studies"])

StudyStatus = Literal["queued", "running", "completed", "cancelled", "failed"]
SpecBody = Annotated[
    dict[str, Any],
    Body(description="A StudySpec; every invalid field is reported in `errors`."),
]


@router.post("/studies", status_code=201)
def create_study(
    payload: SpecBody,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
) -> dict[str, Any]:
    """Validate the spec against its dataset, create the Optuna study and queue the study."""
    limiter = request.app.state.rate_limiter
    wait = limiter.retry_after(caller.rate_key)
    if wait is not None:
        raise TooManyRequests(
            f"at most {settings.rate_limit_per_minute} studies per minute",
            slug="rate-limited", retry_after_s=wait,
        )
    spec = parse_spec(payload)
    _check_dataset_and_run(session, caller, spec, settings.data_dir)
    if store.count_active_studies(session, caller.tenant_id) >= settings.max_running_studies:
        raise TooManyRequests(
            f"at most {settings.max_running_studies} queued or running studies per tenant",
            slug="quota-exceeded",
        )
    study = _insert_study(session, request.app.state.optuna_storage, caller.tenant_id, spec)
    limiter.record(caller.rate_key)
    response.headers["Location"] = f"/v1/studies/{study.id}"
    return {"id": study.id, "status": study.status, "links": _links(study.id)}


@router.get("/studies")
def list_studies(
    session: SessionDep,
    caller: TenantDep,
    status: StudyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The caller's studies, newest first, one keyset page at a time."""
    after = _study_cursor(cursor) if cursor else None
    rows = store.list_studies(
        session, caller.tenant_id, status=status, limit=limit + 1, after=after
    )
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor([page[-1].created_at.isoformat(), page[-1].id])
    return {"items": [_summary(s) for s in page], "next_cursor": next_cursor}


@router.get("/studies/{study_id}")
def get_study(study_id: str, session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """Status, spec, progress counts and the best value so far."""
    return _detail(session, study_or_404(session, study_id, caller.tenant_id))


@router.post("/studies/{study_id}/cancel")
def cancel_study(study_id: str, session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """Stop a queued or running study; workers stop its trials at the next epoch."""
    study = study_or_404(session, study_id, caller.tenant_id)
    if not store.finish_study(session, study.id, "cancelled"):
        session.refresh(study)
        raise Conflict(f"study {study_id} is already {study.status}")
    session.refresh(study)
    return _detail(session, study)


@router.delete("/studies/{study_id}", status_code=204)
def delete_study(
    study_id: str, request: Request, session: SessionDep, caller: TenantDep
) -> Response:
    """Delete the study row first (workers then stop), then its Optuna study and trials."""
    study = study_or_404(session, study_id, caller.tenant_id)
    optuna_name = study.optuna_study_name
    session.delete(study)
    session.commit()
    with contextlib.suppress(KeyError):  # never created, or deleted by a concurrent call
        optuna.delete_study(study_name=optuna_name, storage=request.app.state.optuna_storage)
    return Response(status_code=204)


@router.get("/studies/{study_id}/best")
def best(study_id: str, session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """The best complete trial with everything needed to reuse its schedule in Keras."""
    study = study_or_404(session, study_id, caller.tenant_id)
    record = store.best_trial(session, study)
    if record is None:
        raise Conflict("no trial has finished yet")
    trial = trial_json(record)
    export = record.user_attrs.get("export") or {}
    return {
        "trial_number": record.number,
        "value": trial["value"],
        "strategy": trial["strategy"],
        "params": trial["params"],
        "keras": jsonable(export.get("schedule")),
        "callbacks": jsonable(export.get("callbacks", [])),
        "optimizer": jsonable(export.get("optimizer")),
        "initial_lr": finite(export.get("initial_lr")),
        "python": export.get("python"),
    }


# --- helpers -------------------------------------------------------------------------------


def _check_dataset_and_run(
    session: Session, caller: Caller, spec: StudySpec, data_dir: Path
) -> None:
    """The dataset must be "digits" or the caller's upload, and the ranges must fit the run."""
    ref = spec.task.dataset
    if ref == "digits":
        n_train = _digits_n_train(str(data_dir))
    else:
        dataset = store.get_dataset(session, ref, caller.tenant_id)
        if dataset is None:
            message = f'unknown dataset {ref!r}: use "digits" or the id of a dataset you uploaded'
            raise SpecError([FieldError("task.dataset", message)])
        n_train = dataset.n_train
    errors = _run_errors(spec, n_train) if n_train else []
    if errors:
        raise SpecError(errors)


@functools.lru_cache(maxsize=1)
def _digits_n_train(data_dir: str) -> int | None:
    """Rows of the built-in dataset's training split (loaded once per process)."""
    try:
        from search.datasets import load_dataset
    except ImportError:
        return None
    return len(load_dataset("digits", Path(data_dir)).x_train)


def _run_errors(spec: StudySpec, n_train: int) -> list[FieldError]:
    """Range overrides that cannot fit the run; skipped only if search.space is absent."""
    try:
        from search.space import check_spec_against_run
    except ImportError:
        return []
    run = RunShape(spec.task.epochs, max(1, math.ceil(n_train / spec.task.batch_size)))
    return list(check_spec_against_run(spec, run))


def _insert_study(
    session: Session, storage: optuna.storages.RDBStorage, tenant_id: str, spec: StudySpec
) -> store.Study:
    """Create the Optuna study before the row, so a worker never sees a row without it."""
    study_id = store.new_id()
    optuna_name = f"lrsearch-{study_id}"
    optuna.create_study(
        storage=storage, study_name=optuna_name, direction=spec.objective.direction
    )
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
    session.add(study)
    try:
        session.commit()
    except Exception:
        session.rollback()
        optuna.delete_study(study_name=optuna_name, storage=storage)
        raise
    return study


def _study_cursor(cursor: str) -> tuple[datetime, str]:
    data = decode_cursor(cursor)
    try:
        created, last_id = data
        return datetime.fromisoformat(created), str(last_id)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("cursor", "not a cursor returned by this API") from exc


def _links(study_id: str) -> dict[str, str]:
    base = f"/v1/studies/{study_id}"
    return {
        "self": base,
        "trials": f"{base}/trials",
        "best": f"{base}/best",
        "cancel": f"{base}/cancel",
    }


def _summary(study: store.Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "n_trials": study.n_trials,
        "created_at": _iso(study.created_at),
        "finished_at": _iso(study.finished_at),
        "links": _links(study.id),
    }


def _detail(session: Session, study: store.Study) -> dict[str, Any]:
    progress = store.study_progress(session, study)
    best_record = store.best_trial(session, study)
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "spec": study.spec,
        "error": study.error,
        "n_trials": study.n_trials,
        "progress": dataclasses.asdict(progress),
        "best_value": finite(best_record.value) if best_record else None,
        "best_trial": best_record.number if best_record else None,
        "created_at": _iso(study.created_at),
        "started_at": _iso(study.started_at),
        "finished_at": _iso(study.finished_at),
        "updated_at": _iso(study.updated_at),
        "links": _links(study.id),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
