"""Studies: create (validated once, queued for workers), list, inspect, cancel, delete, best.

Thin handlers: the domain rules of a study (validation, quota, creation, deletion) live in
`search.studies`; the shapes of the answers in `service.routes.study_views`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from starlette.datastructures import State

from search import store, studies
from search.checkpoints import CheckpointStore
from search.spec_payload import unstorable_reason
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
from service.errors import Conflict, InvalidRequest, TooManyRequests, problem_responses
from service.routes.study_views import (
    Best,
    StudyCreated,
    StudyDetail,
    StudyPage,
    TrialSummary,
    best_json,
    created_json,
    detail_json,
    summary_json,
    trial_summary,
)
from service.routes.trials import json_bytes

router = APIRouter(tags=["studies"])

StudyStatus = Literal["queued", "running", "completed", "cancelled", "failed"]
SpecBody = Annotated[
    dict[str, Any],
    Body(description="A StudySpec; every invalid field is reported in `errors`."),
]


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
    """Validate the spec against its dataset, create the Optuna study and queue the study.

    Every request the rate limit lets through counts against it, refused ones included (a
    refused spec cost its validation too). The rate and the quota are checked in the
    database under the tenant's lock, so API replicas share them and races cannot pass."""
    wait = store.take_rate_slot(
        session, caller.tenant_id, caller.rate_key, settings.rate_limit_per_minute
    )
    if wait is not None:
        raise TooManyRequests(
            f"at most {settings.rate_limit_per_minute} studies per minute",
            slug="rate-limited",
            retry_after_s=wait,
        )
    study = studies.create_study(
        session,
        request.app.state.optuna_storage,
        caller.tenant_id,
        payload,
        data_dir=settings.data_dir,
        max_active=settings.max_running_studies,
        live_within_s=settings.grace_period_s if settings.require_live_plugin else None,
        budget=settings.model_budget,
    )
    response.headers["Location"] = f"/v1/studies/{study.id}"
    return created_json(study)


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
    return {"items": [summary_json(s) for s in page], "next_cursor": next_cursor}


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
        summary: TrialSummary | None = state.answers.get(study.id, key, version)
        if summary is None:
            summary = trial_summary(session, study)
            state.answers.put(study.id, key, version, summary)
    return json_bytes(detail_json(study, summary))


@router.post(
    "/studies/{study_id}/cancel",
    response_model=StudyDetail,
    responses=problem_responses(404, 409),
)
def cancel_study(study_id: StudyId, session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """Stop a queued or running study: its waiting trials fail now, running ones at their
    next epoch (their workers check)."""
    study = study_or_404(session, study_id, caller.tenant_id)
    if not store.finish_study(session, study.id, "cancelled"):
        session.refresh(study)
        raise Conflict(f"study {study_id} is already {study.status}")
    store.fail_waiting_trials(session, study.optuna_study_name)
    session.refresh(study)
    return detail_json(study, trial_summary(session, study))


@router.delete("/studies/{study_id}", status_code=204, responses=problem_responses(404))
def delete_study(
    study_id: StudyId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
) -> Response:
    """Delete the study with its Optuna study, trials and checkpoints."""
    study = study_or_404(session, study_id, caller.tenant_id)
    checkpoints = CheckpointStore(settings.data_dir / "checkpoints")
    studies.delete_study(session, request.app.state.optuna_storage, study, checkpoints)
    request.app.state.answers.forget(study_id)
    return Response(status_code=204)


@router.get("/studies/{study_id}/best", response_model=Best, responses=problem_responses(404, 409))
async def best(study_id: StudyId, request: Request, caller: TenantDep) -> Response:
    """The best complete trial with its export, to reuse its schedule in Keras."""
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
            found = store.best_trial(session, study)
            body = b"" if found is None else json_bytes(best_json(*found))
            state.answers.put(study.id, "best", version, body, size=len(body) + 64)
    return body


def _study_cursor(cursor: str) -> tuple[datetime, str]:
    data = decode_cursor(cursor)
    try:
        created, last_id = data
        position = datetime.fromisoformat(created), str(last_id)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("cursor", "not a cursor returned by this API") from exc
    if position[0].tzinfo is None or unstorable_reason(position[1]):
        raise InvalidRequest("cursor", "not a cursor returned by this API")
    return position
