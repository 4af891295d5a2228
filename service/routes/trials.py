"""Trials of a study: keyset pages (by number or by value) and one trial by number."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from search import store
from service.deps import (
    MAX_INT32,
    Cursor,
    SessionDep,
    StudyId,
    TenantDep,
    TrialNumber,
    decode_cursor,
    encode_cursor,
    study_or_404,
)
from service.errors import InvalidRequest, NotFound

router = APIRouter(tags=["trials"])

TrialState = Literal["complete", "pruned", "fail", "running", "waiting"]


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
def list_trials(
    study_id: StudyId,
    session: SessionDep,
    caller: TenantDep,
    state: TrialState | None = None,
    order: Literal["number", "value"] = "number",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """A page of trials; order=value lists the best first (trials without value last)."""
    study = study_or_404(session, study_id, caller.tenant_id)
    after = _cursor_position(cursor, order)
    records = store.trials_page(
        session, study, state=state, order=order, limit=limit + 1, after=after
    )
    page, more = records[:limit], len(records) > limit
    next_cursor = None
    if more:
        last = page[-1]
        position = last.number if order == "number" else store.value_cursor(last, study.direction)
        next_cursor = encode_cursor({"order": order, "after": position})
    return {"items": [trial_json(r) for r in page], "next_cursor": next_cursor}


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


def trial_json(record: store.TrialRecord) -> dict[str, Any]:
    """A trial as the API shows it, from the user attrs the worker stores on it."""
    attrs = record.user_attrs
    strategy = attrs.get("strategy") or record.params.get("strategy")
    return {
        "number": record.number,
        "state": record.state,
        "value": finite(record.value),
        "strategy": strategy,
        "params": jsonable(attrs.get("params") or _clean_params(record.params, strategy)),
        "lr": jsonable(attrs.get("lr", [])),
        "history": jsonable(attrs.get("history", {})),
        "epochs_run": attrs.get("epochs_run"),
        "seconds": finite(attrs.get("seconds")),
        "fail_reason": attrs.get("fail_reason"),
        "resumed_from_epoch": attrs.get("resumed_from_epoch"),
        "datetime_start": _iso(record.datetime_start),
        "datetime_complete": _iso(record.datetime_complete),
        "intermediate_values": [
            {"step": step, "value": finite(value)} for step, value in record.intermediate
        ],
    }


def _clean_params(params: dict[str, Any], strategy: Any) -> dict[str, Any]:
    """Fallback before the worker stored "params": Optuna names are `<strategy>.<param>`."""
    prefix = f"{strategy}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


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


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
