"""Studies: create (validated once, queued for workers), list, inspect, cancel, delete, best."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import State

from search import store
from search.checkpoints import CheckpointStore
from search.errors import FieldError, SpecError
from search.spec import KerasJsonModel, StudySpec, parse_spec
from search.store.notify import announce
from search.strategies.base import RunShape
from service.deps import (
    Caller,
    Cursor,
    SessionDep,
    SettingsDep,
    StudyId,
    TenantDep,
    decode_cursor,
    encode_cursor,
    shared_read,
    study_or_404,
    versioned_study_or_404,
)
from service.errors import (
    Conflict,
    InvalidRequest,
    TooManyRequests,
    problem_responses,
)
from service.routes.trials import finite, json_bytes, jsonable, trial_json

router = APIRouter(tags=["studies"])

StudyStatus = Literal["queued", "running", "completed", "cancelled", "failed"]
SpecBody = Annotated[
    dict[str, Any],
    Body(description="A StudySpec; every invalid field is reported in `errors`."),
]
MODEL_CONFIG_FIELD = "task.model.config"
_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
_CODE_CLASSES = frozenset({"Lambda", "__lambda__"})
_KERAS_INTERNAL = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__tuple__", "__slice__", "__ellipsis__",
     "__bytes__", "__typespec__"}
)
_UNION_TAGS = frozenset({"mlp", "cnn", "keras_json"})
_MAX_REPORTED = 20


class Links(BaseModel):
    """Where to read a study's parts."""

    self: str
    trials: str
    best: str
    cancel: str


class Progress(BaseModel):
    """Trial counts; a retried failure is counted under `retried`, not `failed`."""

    complete: int
    pruned: int
    failed: int
    retried: int
    running: int
    waiting: int
    remaining: int


class StudyCreated(BaseModel):
    """A queued study."""

    id: str
    status: str
    links: Links


class StudySummary(BaseModel):
    """A study in a list."""

    id: str
    name: str
    status: str
    n_trials: int
    created_at: str | None
    finished_at: str | None
    links: Links


class StudyPage(BaseModel):
    """A keyset page of studies, newest first."""

    items: list[StudySummary]
    next_cursor: str | None


class StudyDetail(BaseModel):
    """A study's status, spec, progress and best value so far."""

    id: str
    name: str
    status: str
    spec: dict[str, Any]
    error: str | None
    n_trials: int
    progress: Progress
    best_value: float | None
    best_trial: int | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    links: Links


class Best(BaseModel):
    """The best trial, with what is needed to reuse its schedule in Keras."""

    trial_number: int
    value: float | None
    strategy: str | None
    params: dict[str, Any]
    keras: dict[str, Any] | None
    callbacks: list[Any]
    optimizer: dict[str, Any] | None
    initial_lr: float | None
    python: str | None


@router.post(
    "/studies",
    status_code=201,
    response_model=StudyCreated,
    responses=problem_responses(413, 429),
)
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
    spec = _parse(payload)
    _check_strict_types(payload)
    _check_model_json(spec)
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


@router.get("/studies", response_model=StudyPage)
def list_studies(
    session: SessionDep,
    caller: TenantDep,
    status: StudyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
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


@router.get("/studies/{study_id}", response_model=StudyDetail, responses=problem_responses(404))
async def get_study(study_id: StudyId, request: Request, caller: TenantDep) -> Response:
    """Status, spec, progress counts and the best value so far."""
    state = request.app.state
    key = ("status", study_id, caller.tenant_id)
    body = await shared_read(state, key, _status_body, state, study_id, caller)
    return Response(body, media_type="application/json")


def _status_body(state: State, study_id: str, caller: Caller) -> bytes:
    """One thread hop: the study row with its trials' version, then the trial-derived part
    from the answer cache or the database."""
    with state.read_sessions() as session:
        study, version = versioned_study_or_404(session, study_id, caller.tenant_id)
        key = ("status", study.n_trials)
        summary: _TrialSummary | None = state.answers.get(study.id, key, version)
        if summary is None:
            summary = _trial_summary(session, study)
            state.answers.put(study.id, key, version, summary)
    return json_bytes(_detail_from(study, summary))


@router.post(
    "/studies/{study_id}/cancel",
    response_model=StudyDetail,
    responses=problem_responses(404, 409),
)
def cancel_study(study_id: StudyId, session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """Stop a queued or running study; workers stop its trials at the next epoch."""
    study = study_or_404(session, study_id, caller.tenant_id)
    if not store.finish_study(session, study.id, "cancelled"):
        session.refresh(study)
        raise Conflict(f"study {study_id} is already {study.status}")
    session.refresh(study)
    return _detail(session, study)


@router.delete("/studies/{study_id}", status_code=204, responses=problem_responses(404))
def delete_study(
    study_id: StudyId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
) -> Response:
    """Delete the study row first (workers then stop), then its Optuna study, trials and
    checkpoints."""
    study = study_or_404(session, study_id, caller.tenant_id)
    optuna_name = study.optuna_study_name
    session.delete(study)
    session.commit()
    with contextlib.suppress(KeyError):  # never created, or deleted by a concurrent call
        optuna.delete_study(study_name=optuna_name, storage=request.app.state.optuna_storage)
    CheckpointStore(settings.data_dir / "checkpoints").remove_study(study.id)
    request.app.state.answers.forget(study.id)
    return Response(status_code=204)


@router.get(
    "/studies/{study_id}/best", response_model=Best, responses=problem_responses(404, 409)
)
async def best(study_id: StudyId, request: Request, caller: TenantDep) -> Response:
    """The best complete trial with everything needed to reuse its schedule in Keras."""
    state = request.app.state
    key = ("best", study_id, caller.tenant_id)
    body = await shared_read(state, key, _best_body, state, study_id, caller)
    if not body:
        raise Conflict("no trial has finished yet")
    return Response(body, media_type="application/json")


def _best_body(state: State, study_id: str, caller: Caller) -> bytes:
    """The /best JSON (empty while no trial is complete), cached per trials' version: the
    best trial is a finished one, so its attributes cannot change under the same version."""
    with state.read_sessions() as session:
        study, version = versioned_study_or_404(session, study_id, caller.tenant_id)
        body: bytes | None = state.answers.get(study.id, "best", version)
        if body is None:
            record = store.best_trial(session, study)
            body = b"" if record is None else json_bytes(_best_json(record))
            state.answers.put(study.id, "best", version, body, size=len(body) + 64)
    return body


def _best_json(record: store.StoredTrial) -> dict[str, Any]:
    trial = trial_json(record)
    export = record.outcome.export
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


def _parse(payload: dict[str, Any]) -> StudySpec:
    """The spec, or one SpecError listing every bad field, unstorable values included."""
    unstorable = _unstorable_fields(payload)
    try:
        spec = parse_spec(payload)
    except SpecError as exc:
        seen = {(e.field, e.message) for e in unstorable}
        raise SpecError(
            unstorable + [e for e in exc.errors if (e.field, e.message) not in seen]
        ) from None
    if unstorable:
        raise SpecError(unstorable)
    return spec


def _unstorable_fields(payload: Any) -> list[FieldError]:
    """Every string must be storable text and every number finite, in both databases.

    Why: PostgreSQL refuses NUL in text and JSONB, and JSON has no NaN; such a spec would
    otherwise fail at INSERT as a 500. Each bad value is named by its dotted path.
    """
    errors: list[FieldError] = []
    for path, value in _walk(payload):
        message = _unstorable(value)
        if message:
            errors.append(FieldError(path or "body", message))
            if len(errors) >= _MAX_REPORTED:
                break
    return errors


def _walk(payload: Any) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every key and leaf, iteratively (depth cannot blow the stack)."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else str(key)
                yield child, key
                stack.append((child, value))
        elif isinstance(node, list):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(node))
        else:
            yield path, node


def _unstorable(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text"
    return None


def _check_strict_types(payload: dict[str, Any]) -> None:
    """A boolean where a number belongs is refused (lax parsing would read `true` as 1)."""
    try:
        StudySpec.model_validate(payload, strict=True)
    except ValidationError as exc:
        errors = [
            FieldError(_loc(err["loc"]), "must be a number, not a boolean")
            for err in exc.errors()
            if isinstance(err.get("input"), bool) and err["type"] in ("int_type", "float_type")
        ]
        if errors:
            raise SpecError(errors) from None
    except Exception:  # lax parsing already accepted the spec; strictness is best effort
        return


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in _UNION_TAGS) or "body"


def _check_model_json(spec: StudySpec) -> None:
    """Refuse a keras_json model carrying code or non-Keras classes, without importing Keras.

    The worker loads it again in Keras safe mode; checking here turns a study that would
    fail at its first trial into a 422 on `task.model.config`.
    """
    model = spec.task.model
    if not isinstance(model, KerasJsonModel):
        return
    problems = model_json_problems(model.config)
    if problems:
        raise SpecError([FieldError(MODEL_CONFIG_FIELD, m) for m in problems[:_MAX_REPORTED]])


def model_json_problems(config: str) -> list[str]:
    """Why this `model.to_json()` text cannot be accepted (empty when it can)."""
    try:
        tree = json.loads(config)
    except (ValueError, RecursionError) as exc:
        return [f"not valid JSON: {str(exc)[:200]}"]
    if not isinstance(tree, dict) or tree.get("class_name") not in _MODEL_CLASSES:
        return ["must be a Keras model's to_json() (class_name Functional, Sequential or Model)"]
    problems: list[str] = []
    for node in _serialized_objects(tree):
        problem = _object_problem(node)
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def _serialized_objects(tree: Any) -> Iterator[dict[str, Any]]:
    """Every dict with a `class_name`, iteratively."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _object_problem(node: dict[str, Any]) -> str | None:
    name, module = node.get("class_name"), node.get("module")
    registered = node.get("registered_name")
    if not isinstance(name, str):
        return "class_name must be a string"
    if name in _CODE_CLASSES:
        return "Lambda layers are not allowed: they carry Python code; use built-in Keras layers"
    if module is not None and not (
        isinstance(module, str) and (module == "keras" or module.startswith("keras."))
    ):
        return (
            f"class {name[:80]!r} comes from module {str(module)[:80]!r}:"
            " only Keras's own classes are allowed"
        )
    if isinstance(registered, str) and ">" in registered:
        return f"custom registered class {registered[:80]!r} is not allowed"
    if name.startswith("__") and name not in _KERAS_INTERNAL:
        return f"unknown special class {name[:80]!r}"
    if not name.isidentifier():
        return f"unknown class {name[:80]!r}"
    return None


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
        from search.data.datasets import load_dataset
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
    announce(session)  # idle workers start on it now, not at their next poll
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
        position = datetime.fromisoformat(created), str(last_id)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("cursor", "not a cursor returned by this API") from exc
    if position[0].tzinfo is None or _unstorable(position[1]):
        raise InvalidRequest("cursor", "not a cursor returned by this API")
    return position


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


@dataclasses.dataclass(frozen=True)
class _TrialSummary:
    """What the status shows from the trials: counts and the best (number, value)."""

    progress: store.Progress
    best: tuple[int, float | None] | None


def _trial_summary(session: Session, study: store.Study) -> _TrialSummary:
    return _TrialSummary(store.study_progress(session, study), store.best_value(session, study))


def _detail(session: Session, study: store.Study) -> dict[str, Any]:
    return _detail_from(study, _trial_summary(session, study))


def _detail_from(study: store.Study, summary: _TrialSummary) -> dict[str, Any]:
    best = summary.best
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "spec": study.spec,
        "error": study.error,
        "n_trials": study.n_trials,
        "progress": dataclasses.asdict(summary.progress),
        "best_value": finite(best[1]) if best else None,
        "best_trial": best[0] if best else None,
        "created_at": _iso(study.created_at),
        "started_at": _iso(study.started_at),
        "finished_at": _iso(study.finished_at),
        "updated_at": _iso(study.updated_at),
        "links": _links(study.id),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
