"""Trials of a study: keyset pages (by number or by value) and one trial by number."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from starlette.datastructures import State

from search import store
from service.deps import (
    MAX_INT32,
    Caller,
    Cursor,
    SessionDep,
    StudyId,
    TenantDep,
    TrialNumber,
    decode_cursor,
    encode_cursor,
    shared_read,
    study_or_404,
    versioned_study_or_404,
)
from service.errors import InvalidRequest, NotFound

router = APIRouter(tags=["trials"])

TrialState = Literal["complete", "pruned", "fail", "running", "waiting"]
FINISHED = frozenset({"complete", "pruned", "fail"})


class IntermediateValue(BaseModel):
    """The objective after one epoch (null when it was not finite)."""

    step: int
    value: float | None


class TrialOut(BaseModel):
    """One trial: its strategy and parameters, per-epoch rates and metrics, and outcome."""

    number: int
    state: str
    value: float | None
    strategy: str | None
    params: dict[str, Any]
    lr: list[float | None]
    history: dict[str, list[float | None]]
    epochs_run: int | None
    seconds: float | None
    fail_reason: str | None
    resumed_from_epoch: int | None
    datetime_start: str | None
    datetime_complete: str | None
    intermediate_values: list[IntermediateValue]


class TrialPage(BaseModel):
    """A keyset page of trials; pass `next_cursor` back for the next one."""

    items: list[TrialOut]
    next_cursor: str | None


@router.get("/studies/{study_id}/trials", response_model=TrialPage)
async def list_trials(
    study_id: StudyId,
    request: Request,
    caller: TenantDep,
    state: TrialState | None = None,
    order: Literal["number", "value"] = "number",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> Response:
    """A page of trials; order=value lists the best first (trials without value last)."""
    query = _PageQuery(state, order, limit, cursor)
    app_state = request.app.state
    key = ("page", study_id, caller.tenant_id, query)
    body = await shared_read(app_state, key, _page_body, app_state, study_id, caller, query)
    return Response(body, media_type="application/json")


@dataclass(frozen=True)
class _PageQuery:
    """What selects a page (hashable: it is the answer cache's key)."""

    state: str | None
    order: Literal["number", "value"]
    limit: int
    cursor: str | None


def _page_body(app_state: State, study_id: str, caller: Caller, query: _PageQuery) -> bytes:
    """The page's JSON. Cached per trials' version only when every trial read is finished
    (a running trial's metrics change without changing the version)."""
    with app_state.read_sessions() as session:
        study, version = versioned_study_or_404(session, study_id, caller.tenant_id)
        body: bytes | None = app_state.answers.get(study.id, query, version)
        if body is not None:
            return body
        after = _cursor_position(query.cursor, query.order)
        records = store.trials_page(
            session,
            study,
            state=query.state,
            order=query.order,
            limit=query.limit + 1,
            after=after,
        )
    page, more = records[: query.limit], len(records) > query.limit
    next_cursor = None
    if more:
        last = page[-1]
        position = (
            last.number if query.order == "number" else store.value_cursor(last, study.direction)
        )
        next_cursor = encode_cursor({"order": query.order, "after": position})
    body = json_bytes({"items": [trial_json(r) for r in page], "next_cursor": next_cursor})
    if all(r.state in FINISHED for r in records):
        app_state.answers.put(study.id, query, version, body, size=len(body) + 128)
    return body


@router.get("/studies/{study_id}/trials/{number}", response_model=TrialOut)
def get_trial(
    study_id: StudyId, number: TrialNumber, session: SessionDep, caller: TenantDep
) -> dict[str, Any]:
    """One trial with its per-epoch learning rates and metrics."""
    study = study_or_404(session, study_id, caller.tenant_id)
    record = store.get_trial(session, study, number)
    if record is None:
        raise NotFound(f"study {study_id} has no trial {number}")
    return trial_json(record)


def _cursor_position(cursor: str | None, order: str) -> int | store.ValueCursor | None:
    """Validate a cursor against the requested order (a cursor only fits its own order)."""
    if cursor is None:
        return None
    data = decode_cursor(cursor)
    if not isinstance(data, dict) or data.get("order") != order:
        raise InvalidRequest("cursor", f"this cursor does not belong to order={order}")
    after = data.get("after")
    if order == "number" and isinstance(after, int) and _is_int32(after):
        return after
    if order == "value" and isinstance(after, list) and _is_value_position(after):
        return (int(after[0]), float(after[1]), int(after[2]))
    raise InvalidRequest("cursor", "not a cursor returned by this API")


def _is_int32(value: Any) -> bool:
    """Ints the 32-bit columns can compare with (a bigger one is a database error)."""
    return isinstance(value, int) and not isinstance(value, bool) and -1 <= value <= MAX_INT32


def _is_value_position(after: list[Any]) -> bool:
    if len(after) != 3 or not (after[0] in (0, 1) and _is_int32(after[2])):
        return False
    value = after[1]
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def trial_json(record: store.StoredTrial) -> dict[str, Any]:
    """A trial as the API shows it, from the outcome the worker stores on it."""
    outcome = record.outcome
    strategy = outcome.strategy or record.params.get("strategy")
    return {
        "number": record.number,
        "state": record.state,
        "value": finite(record.value),
        "strategy": strategy,
        "params": jsonable(outcome.params or _clean_params(record.params, strategy)),
        "lr": jsonable(outcome.lr),
        "history": jsonable(outcome.history),
        "epochs_run": outcome.epochs_run,
        "seconds": finite(outcome.seconds),
        "fail_reason": outcome.fail_reason,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "datetime_start": _iso(record.datetime_start),
        "datetime_complete": _iso(record.datetime_complete),
        "intermediate_values": [
            {"step": step, "value": finite(value)} for step, value in record.intermediate
        ],
    }


def _clean_params(params: dict[str, Any], strategy: Any) -> dict[str, Any]:
    """Fallback before the worker stored "params": Optuna names are `<strategy>.<param>`."""
    prefix = f"{strategy}."
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def finite(value: Any) -> Any:
    """JSON has no NaN/inf: a diverged metric is shown as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def jsonable(value: Any) -> Any:
    """Replace every non-finite float inside lists and dicts with null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return finite(value)


def json_bytes(content: Any) -> bytes:
    """Compact JSON, as FastAPI would send it; a non-finite float anywhere becomes null."""
    try:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        text = json.dumps(jsonable(content), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
