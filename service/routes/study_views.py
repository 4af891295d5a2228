"""How a study looks over HTTP: the response models (OpenAPI) and the JSON that fills them."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from search import store
from service.routes.trials import finite, jsonable, trial_json


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
    best_seeds: int | None = Field(
        None, description="runs behind best_value (more than 1: the mean over fresh seeds)"
    )
    lr_range: dict[str, Any] | None = Field(
        None, description="the learning-rate range test: edge of stability, searched range"
    )
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    links: Links


class BestExport(BaseModel):
    """The trial's export, exactly what `search.training.keras_export.apply` takes."""

    schedule: dict[str, Any] | None
    callbacks: list[Any]
    initial_lr: float | None
    optimizer: dict[str, Any] | None
    python: str | None
    preprocess: dict[str, Any] | None = Field(
        None,
        description="task.preprocess: the training split's mean/std of the features and of"
        " the target, to standardise a user's data the same way (null: none)",
    )


class Selection(BaseModel):
    """What the best's value means: one run, or the mean of a candidate re-run on seeds."""

    rule: str
    seeds: int
    sd: float | None
    values: list[float | None]
    trials: list[int]


class Best(BaseModel):
    """The best trial, with its export to reuse the schedule in Keras. `value` is the mean over
    `selection.seeds` runs from different initialisations when the candidate was re-run."""

    trial_number: int
    value: float | None
    strategy: str | None
    params: dict[str, Any]
    export: BestExport
    selection: Selection


# --- JSON ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrialSummary:
    """What the status shows from the trials: counts and the best (number, value)."""

    progress: store.Progress
    best: store.Best | None
    lr_range: dict[str, Any] | None


def trial_summary(session: Session, study: store.Study) -> TrialSummary:
    return TrialSummary(
        store.study_progress(session, study),
        store.best_value(session, study),
        lr_range_json(store.study_system_attr(session, study, store.LR_RANGE)),
    )


def lr_range_json(stored: Any) -> dict[str, Any] | None:
    """The range test's reading (not its curve: the plot shows that)."""
    if not isinstance(stored, dict):
        return None
    return {k: finite(stored.get(k)) for k in ("edge", "low", "high")}


def created_json(study: store.Study) -> dict[str, Any]:
    return {"id": study.id, "status": study.status, "links": links(study.id)}


def links(study_id: str) -> dict[str, str]:
    base = f"/v1/studies/{study_id}"
    return {
        "self": base,
        "trials": f"{base}/trials",
        "best": f"{base}/best",
        "cancel": f"{base}/cancel",
    }


def summary_json(study: store.Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "n_trials": study.n_trials,
        "created_at": _iso(study.created_at),
        "finished_at": _iso(study.finished_at),
        "links": links(study.id),
    }


def detail_json(study: store.Study, summary: TrialSummary) -> dict[str, Any]:
    best = summary.best
    return {
        "id": study.id,
        "name": study.name,
        "status": study.status,
        "spec": study.spec,
        "error": study.error,
        "n_trials": study.n_trials,
        "progress": dataclasses.asdict(summary.progress),
        "best_value": finite(best.value) if best else None,
        "best_trial": best.number if best else None,
        "best_seeds": best.seeds if best else None,
        "lr_range": summary.lr_range,
        "created_at": _iso(study.created_at),
        "started_at": _iso(study.started_at),
        "finished_at": _iso(study.finished_at),
        "updated_at": _iso(study.updated_at),
        "links": links(study.id),
    }


def best_json(record: store.StoredTrial, best: store.Best) -> dict[str, Any]:
    trial = trial_json(record)
    return {
        "trial_number": record.number,
        "value": finite(best.value),
        "strategy": trial["strategy"],
        "params": trial["params"],
        "export": export_json(record.outcome.export),
        "selection": jsonable(best.describe()),
    }


def export_json(export: dict[str, Any]) -> dict[str, Any]:
    """The stored export with non-finite numbers made null (a trial predating it: nulls)."""
    return {
        "schedule": jsonable(export.get("schedule")),
        "callbacks": jsonable(export.get("callbacks", [])),
        "initial_lr": finite(export.get("initial_lr")),
        "optimizer": jsonable(export.get("optimizer")),
        "python": export.get("python"),
        "preprocess": jsonable(export.get("preprocess")),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
