"""Liveness, readiness and Prometheus metrics (unauthenticated, aggregate only)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from search import store
from service.deps import SessionDep, SettingsDep
from service.errors import Unavailable, problem_responses

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class Ready(BaseModel):
    """The database answers."""

    status: Literal["ready"]


PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about the database); async: no thread hop."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses=problem_responses(503))
def readyz(request: Request) -> dict[str, str]:
    """Ready only when the database answers; 503 otherwise."""
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(select(1))
    except SQLAlchemyError as exc:
        raise Unavailable("the database is unreachable") from exc
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse, responses=problem_responses(503))
def metrics(session: SessionDep, settings: SettingsDep) -> PlainTextResponse:
    """Trial and study counts, queue depth, runnable slots and live workers, five queries."""
    lines: list[str] = []
    trials = {k.lower(): n for k, n in store.trial_state_counts(session).items()}
    _gauge(lines, "lrsearch_trials", "Optuna trials by state.", "state", trials)
    _gauge(
        lines,
        "lrsearch_studies",
        "Studies by status.",
        "status",
        store.study_status_counts(session),
    )
    _scalar(
        lines,
        "lrsearch_queue_depth",
        "Unclaimed trial slots of queued and running studies.",
        store.queue_depth(session),
    )
    _scalar(
        lines,
        "lrsearch_runnable_trial_slots",
        "Unclaimed slots plus running trials of queued and running studies "
        "(what the workers' autoscaler targets).",
        store.runnable_trial_slots(session),
    )
    _scalar(
        lines,
        "lrsearch_live_workers",
        "Workers seen within the grace period (their liveness rows).",
        store.count_live_workers(session, settings.grace_period_s),
    )
    return PlainTextResponse("\n".join(lines) + "\n", media_type=PROMETHEUS_MEDIA_TYPE)


def _gauge(lines: list[str], name: str, help_text: str, label: str, counts: dict[str, int]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f'{name}{{{label}="{key}"}} {value}' for key, value in sorted(counts.items())]


def _scalar(lines: list[str], name: str, help_text: str, value: int) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
