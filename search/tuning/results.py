"""What `tune()` returns: typed views of the study with the same fields as the API's (and so
the client's) documents: `BestTrial` is `GET /v1/studies/{id}/best` (its value the mean
over seeds once candidates were re-run), `TrialResult` one trial of its trials."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from search import store
from search.errors import LRSearchError


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def export_of(stored: dict[str, Any]) -> dict[str, Any]:
    """The export as the API returns it: exactly what `apply()` takes."""
    return {
        "schedule": stored.get("schedule"),
        "callbacks": list(stored.get("callbacks") or []),
        "initial_lr": _finite(stored.get("initial_lr")),
        "optimizer": stored.get("optimizer"),
        "python": stored.get("python"),
        "preprocess": stored.get("preprocess"),
    }


@dataclass(frozen=True)
class BestTrial:
    """The best finished trial: its strategy, parameters and the export to train with."""

    trial_number: int
    value: float
    strategy: str
    params: dict[str, Any]
    export: dict[str, Any]
    selection: dict[str, Any] = field(default_factory=dict)  # how it was chosen (seeds...)

    def apply(self) -> tuple[Any, list[Any]]:
        """(optimizer, callbacks) rebuilt from the export, for your compile() and fit()."""
        from search.training.keras_export import apply

        return apply(self.export)

    def as_dict(self) -> dict[str, Any]:
        """The document `GET /v1/studies/{id}/best` returns."""
        return {
            "trial_number": self.trial_number,
            "value": self.value,
            "strategy": self.strategy,
            "params": dict(self.params),
            "export": dict(self.export),
            "selection": dict(self.selection),
        }


@dataclass(frozen=True)
class TrialResult:
    """One trial: how it ended, its value, and its per-epoch rates and metrics."""

    number: int
    state: str
    value: float | None
    strategy: str | None
    params: dict[str, Any]
    lr: list[float]
    history: dict[str, list[float]]
    fail_reason: str | None


@dataclass(frozen=True)
class TuneResult:
    """A finished `tune()`: the study's status and progress, every trial, the best one."""

    study_id: str
    name: str
    status: str
    error: str | None
    progress: dict[str, int]
    trials: list[TrialResult] = field(default_factory=list)
    best: BestTrial | None = None
    storage: str | None = None  # the database it lives in (None: a temporary one, gone)


class TuningFailed(LRSearchError):
    """tune() ended without a best trial (the study failed); `result` says what happened."""

    def __init__(self, message: str, result: TuneResult) -> None:
        super().__init__(message)
        self.result = result


def read_result(session: Any, study_id: str, storage: str | None) -> TuneResult:
    """The study as it stands, read through the same store functions as the API."""
    row = store.get_study(session, study_id)
    assert row is not None
    progress = store.study_progress(session, row)
    records = store.trials_page(session, row, limit=10 * row.n_trials + 100)
    best = store.best_trial(session, row)
    return TuneResult(
        study_id=row.id,
        name=row.name,
        status=row.status,
        error=row.error,
        progress={k: int(v) for k, v in vars(progress).items()},
        trials=[_trial(r) for r in records],
        best=None if best is None else _best(*best),
        storage=storage,
    )


def _trial(record: store.StoredTrial) -> TrialResult:
    outcome = record.outcome
    return TrialResult(
        number=record.number,
        state=record.state,
        value=_finite(record.value),
        strategy=outcome.strategy,
        params=dict(outcome.params),
        lr=list(outcome.lr),
        history={k: list(v) for k, v in outcome.history.items()},
        fail_reason=outcome.fail_reason,
    )


def _best(record: store.StoredTrial, best: store.Best) -> BestTrial:
    outcome = record.outcome
    return BestTrial(
        trial_number=record.number,
        value=float(best.value if best.value is not None else math.nan),
        strategy=str(outcome.strategy),
        params=dict(outcome.params),
        export=export_of(outcome.export),
        selection=best.describe(),
    )


__all__ = ["BestTrial", "TrialResult", "TuneResult", "TuningFailed", "export_of", "read_result"]
