"""Plots of a study as PNG: learning-rate and validation curves of the best trials, the
optimization history, the value by strategy family and the learning-rate range test.

The `lr` plot draws schedules per step, so it needs the trials' run shape: the spec's epochs and
batch size and the dataset's training rows (its record, or the built-in's); without them (an
upload deleted since) it draws the recorded per-epoch rates.

Reads stay bounded however large the study: the best `k` (at most 20) trials for the curve
plots; for `history` and `strategies` every finished trial up to FULL_CAP, beyond that the best
BEST_CAP plus evenly spaced windows of trial numbers (the picture says it is sampled).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from search import store
from search.errors import SpecError
from search.lr_range import RangeResult
from search.plots import PLOT_NAMES, NothingToPlot, PlotOptions, PlotTrial, render
from search.space import run_shape
from search.spec import parse_spec
from search.strategies import RunShape
from search.studies import train_rows
from service.deps import SessionDep, SettingsDep, StudyId, TenantDep, study_or_404
from service.errors import Conflict, NotFound, problem_responses

router = APIRouter(tags=["plots"])

FULL_CAP = 1000
BEST_CAP = 200
SAMPLE_WINDOWS = 10
PAGE = 500


@dataclass(frozen=True)
class Loaded:
    """Trials to plot: `sample` is unbiased (all, or evenly spaced windows); `best` is the
    best finished trials (empty when `sample` already holds every finished trial)."""

    sample: list[store.StoredTrial]
    best: list[store.StoredTrial]
    total: int

    @property
    def sampled(self) -> bool:
        return bool(self.best)

    def union(self) -> list[store.StoredTrial]:
        """Sample and best without duplicates."""
        seen = {r.number: r for r in self.sample}
        seen.update({r.number: r for r in self.best})
        return list(seen.values())


@router.get(
    "/studies/{study_id}/plots/{name}.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "A PNG image."},
        **problem_responses(409),
    },
)
def get_plot(
    study_id: StudyId,
    name: str,
    session: SessionDep,
    caller: TenantDep,
    settings: SettingsDep,
    k: Annotated[int, Query(ge=1, le=20, description="trials drawn by lr/validation")] = 5,
) -> Response:
    """One plot of the study as PNG; 409 until a trial has finished (`range`: until the
    range test ran)."""
    study = study_or_404(session, study_id, caller.tenant_id)
    if name not in PLOT_NAMES:
        raise NotFound(f"no plot {name[:80]!r}; known plots: {', '.join(PLOT_NAMES)}")
    metric = str(study.spec.get("objective", {}).get("metric") or "val_loss")
    options = PlotOptions(metric=metric, direction=study.direction, k=k, title=study.name)
    if name == "range":
        return _png(name, [], replace(options, lr_range=_range_test(session, study)))
    trials, note = _trials_for(session, study, name, k)
    if not trials:
        raise Conflict("no trial has finished yet")
    run = _run_shape(session, study, caller.tenant_id, settings.data_dir) if name == "lr" else None
    drawn = [_plot_trial(r, metric) for r in trials]
    return _png(name, drawn, replace(options, note=note, run=run))


def _png(name: str, trials: list[PlotTrial], options: PlotOptions) -> Response:
    try:
        png = render(name, trials, options)
    except NothingToPlot as exc:
        raise Conflict(str(exc)) from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def _range_test(session: Session, study: store.Study) -> RangeResult:
    """The study's stored range test; 409 when it has none (yet)."""
    stored = store.study_system_attr(session, study, store.LR_RANGE)
    if not isinstance(stored, dict):
        raise Conflict(
            "this study has no learning-rate range test: it runs before the first trial unless"
            " range_test is false, ranges.initial_lr is given or the run is too short"
        )
    return RangeResult.from_attrs(stored)


def _run_shape(
    session: Session, study: store.Study, tenant_id: str, data_dir: Path
) -> RunShape | None:
    """Every trial's epochs and steps per epoch (None: the dataset is gone or the spec unread)."""
    try:
        spec = parse_spec(study.spec)
    except SpecError:
        return None
    n_train = train_rows(session, tenant_id, spec.task.dataset, data_dir)
    return None if not n_train else run_shape(spec, n_train)


def _trials_for(
    session: Session, study: store.Study, name: str, k: int
) -> tuple[list[store.StoredTrial], str]:
    """The records plot `name` needs, and a note when they are a sample."""
    if name in ("lr", "validation"):
        return store.trials_page(session, study, state="complete", order="value", limit=k), ""
    loaded = load_finished(session, study)
    records = loaded.sample if name == "strategies" else loaded.union()
    note = f"sampled {len(records)} of {loaded.total} trials" if loaded.sampled else ""
    return records, note


def load_finished(
    session: Session,
    study: store.Study,
    *,
    full_cap: int = FULL_CAP,
    best_cap: int = BEST_CAP,
    windows: int = SAMPLE_WINDOWS,
) -> Loaded:
    """Every complete trial up to `full_cap`; beyond, the best `best_cap` plus `windows`
    evenly spaced runs of trial numbers (about `full_cap - best_cap` trials)."""
    total = store.study_progress(session, study).complete
    if total <= full_cap:
        return Loaded(_all_complete(session, study), [], total)
    n_numbers = sum(store.trial_state_counts(session, study.optuna_study_name).values())
    per_window = max(1, (full_cap - best_cap) // windows)
    sample: dict[int, store.StoredTrial] = {}
    for i in range(windows):
        start = i * n_numbers // windows
        page = store.trials_page(
            session, study, state="complete", order="number", limit=per_window, after=start - 1
        )
        sample.update({r.number: r for r in page})
    best = store.trials_page(session, study, state="complete", order="value", limit=best_cap)
    return Loaded(sorted(sample.values(), key=lambda r: r.number), best, total)


def _all_complete(session: Session, study: store.Study) -> list[store.StoredTrial]:
    out: list[store.StoredTrial] = []
    after: int | None = None
    while True:
        page = store.trials_page(
            session, study, state="complete", order="number", limit=PAGE, after=after
        )
        out.extend(page)
        if len(page) < PAGE:
            return out
        after = page[-1].number


def _plot_trial(record: store.StoredTrial, metric: str) -> PlotTrial:
    return PlotTrial.from_outcome(
        record.number, record.value, record.outcome, metric, record.intermediate, record.params
    )
