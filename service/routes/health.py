"""Liveness, readiness and Prometheus metrics (aggregate only; unauthenticated, except
/metrics when LRSEARCH_METRICS_TOKEN_REQUIRED is on)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from search import store
from service.deps import BearerDep, SessionDep, SettingsDep, _token_caller
from service.errors import Unauthorized, Unavailable, problem_responses
from service.settings import Settings

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class WorkerReadiness(BaseModel):
    """Whether queued work can progress: not part of the status code, so that the API stays
    in a load balancer's rotation while its workers are scaled to zero."""

    live: int
    queued_studies: int
    runnable_trial_slots: int
    ready_for_work: bool


class Ready(BaseModel):
    """The database answers; `workers` says whether there is anyone to run the work."""

    status: Literal["ready"]
    workers: WorkerReadiness


PROMETHEUS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is up (says nothing about the database); async: no thread hop."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses=problem_responses(503))
def readyz(request: Request) -> dict[str, Any]:
    """200 when the database answers (503 otherwise), with the live workers in the body:
    `ready_for_work` is false when no worker is live and trial slots wait for one."""
    settings: Settings = request.app.state.settings
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(select(1))
        with request.app.state.sessions() as session:
            workers = worker_readiness(session, settings.grace_period_s)
    except SQLAlchemyError as exc:
        raise Unavailable("the database is unreachable") from exc
    return {"status": "ready", "workers": workers}


def worker_readiness(session: Session, grace_period_s: float) -> dict[str, Any]:
    """Live workers, queued studies and runnable slots; ready for work unless slots wait and
    no worker is live."""
    live = store.count_live_workers(session, grace_period_s)
    slots = store.runnable_trial_slots(session)
    return {
        "live": live,
        "queued_studies": store.study_status_counts(session).get("queued", 0),
        "runnable_trial_slots": slots,
        "ready_for_work": ready_for_work(live, slots),
    }


def ready_for_work(live_workers: int, runnable_slots: int) -> bool:
    """Queued work can progress: some worker is live, or no trial slot waits for one."""
    return live_workers > 0 or runnable_slots == 0


@router.get("/metrics", response_class=PlainTextResponse, responses=problem_responses(401, 503))
def metrics(
    request: Request, session: SessionDep, settings: SettingsDep, credentials: BearerDep
) -> PlainTextResponse:
    """Trial and study counts, queue depth, runnable slots, live workers and readiness for
    work; five queries."""
    if settings.metrics_token_required:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("/metrics requires a Bearer token (LRSEARCH_METRICS_TOKEN_REQUIRED)")
        _token_caller(request, credentials.credentials)
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
    slots = store.runnable_trial_slots(session)
    _scalar(
        lines,
        "lrsearch_runnable_trial_slots",
        "Unclaimed slots plus running trials of queued and running studies "
        "(what the workers' autoscaler targets).",
        slots,
    )
    live = store.count_live_workers(session, settings.grace_period_s)
    _scalar(
        lines,
        "lrsearch_live_workers",
        "Workers seen within the grace period (their liveness rows).",
        live,
    )
    _scalar(
        lines,
        "lrsearch_ready_for_work",
        "1 unless trial slots wait and no worker is live (then queued work cannot progress).",
        int(ready_for_work(live, slots)),
    )
    return PlainTextResponse("\n".join(lines) + "\n", media_type=PROMETHEUS_MEDIA_TYPE)


def _gauge(lines: list[str], name: str, help_text: str, label: str, counts: dict[str, int]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f'{name}{{{label}="{key}"}} {value}' for key, value in sorted(counts.items())]


def _scalar(lines: list[str], name: str, help_text: str, value: int) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
