"""One unit of the comparison: every contender on one task with one search seed.

Records are appended to a JSON-lines file as each contender finishes, so an interrupted run
resumes where it stopped (`done` lists what is already recorded).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.data import Dataset
from search.space import run_shape
from search.spec import StudySpec, parse_spec

from . import lrsearch_runner, peers, retrain
from .tasks import Task

CONSTANT = "constant at the default rate"
LINEAR = "linear decay to 0 (default rate)"
COSINE = "warm-up + cosine (default rate)"
SCHEDULE_FREE = "ScheduleFreeAdamW (default)"
BASELINES = (CONSTANT, LINEAR, COSINE, SCHEDULE_FREE)
LRSEARCH = lrsearch_runner.LRSEARCH
CONTENDERS = (*BASELINES, *peers.SEARCHING_PEERS, LRSEARCH)
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}

Emit = Callable[[dict[str, Any]], None]


def spec_for(task: Task, data: Dataset, n_trials: int, seed: int) -> StudySpec:
    return parse_spec({"task": task.spec_task("suite", data), "n_trials": n_trials, "seed": seed})


def baseline_export(name: str, spec: StudySpec, data: Dataset) -> dict[str, Any]:
    """The fixed schedules at the optimizer's Keras default rate, as exports."""
    run = run_shape(spec, len(data.x_train))
    lr = DEFAULT_LR[spec.task.optimizer]
    total = run.total_steps
    if name == CONSTANT:
        return peers.export_of(spec, "constant", {"initial_lr": lr}, run)
    if name == LINEAR:
        params = {"initial_lr": lr, "decay_steps": total, "end_factor": 0.0, "power": 1.0}
        return peers.export_of(spec, "polynomial", params, run)
    warm = max(1, total // 10)
    params = {"initial_lr": lr, "decay_steps": total - warm, "alpha": 0.0, "warmup_steps": warm}
    return peers.export_of(spec, "cosine", params, run)


def record(
    task: Task,
    seed: int,
    contender: str,
    curves: list[list[float]],
    search: peers.SearchResult | None = None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task": task.name,
        "split": task.split,
        "seed": seed,
        "contender": contender,
        **retrain.summary(curves),
        "curves": curves,
    }
    if search is not None:
        out.update(
            epochs=search.epochs_spent,
            reported_best=search.reported_best,
            wall_s=round(search.wall_s, 1),
            choice=search.export,
            trials=search.trials,
            **search.detail,
        )
    else:
        out.update(epochs=task.epochs)
    out.update(extra)
    return out


@dataclass(frozen=True)
class Plan:
    """Which contenders run, and lrsearch's label and spec additions (for dev variants)."""

    contenders: frozenset[str] = frozenset(CONTENDERS)
    label: str = LRSEARCH
    extra: dict[str, Any] = field(default_factory=dict)
    epochs_to_beat: bool = True  # retrains earlier choices: off for quick dev variants

    def wanted(self, seed: int) -> set[str]:
        names = {self.label if c == LRSEARCH else c for c in self.contenders}
        return names if seed == 0 else names - set(BASELINES)


def run_unit(
    task: Task,
    seed: int,
    n_trials: int,
    base: str,
    uploads: dict[str, str],
    existing: list[dict[str, Any]],
    emit: Emit,
    log: Callable[[str], None],
    plan: Plan | None = None,
) -> None:
    """Every contender of `plan` not yet recorded on (task, seed); baselines only with seed 0
    (they do not search, so the seed of a search does not change them)."""
    plan = plan or Plan()
    done = {r["contender"] for r in existing} | (set(CONTENDERS) - set(plan.contenders))
    records = list(existing)

    def keep(rec: dict[str, Any]) -> None:
        records.append(rec)
        emit(rec)

    data = task.data()
    spec = spec_for(task, data, n_trials, seed)
    for name in BASELINES:
        if seed != 0 or name in done:
            continue
        started = time.perf_counter()
        curves = (
            retrain.schedule_free_curves(spec, data)
            if name == SCHEDULE_FREE
            else retrain.curves(spec, data, baseline_export(name, spec, data))
        )
        keep(record(task, seed, name, curves, wall_s=round(time.perf_counter() - started, 1)))
        log(f"{task.name} seed {seed}: {name} done")
    for name in peers.SEARCHING_PEERS:
        if name in done:
            continue
        result = peers.search(name, spec, data, n_trials, seed)
        assert result.export is not None
        keep(record(task, seed, name, retrain.curves(spec, data, result.export), result))
        log(f"{task.name} seed {seed}: {name} done in {result.wall_s:.0f}s")
    if LRSEARCH not in plan.contenders or plan.label in {r["contender"] for r in existing}:
        return
    result, trials = lrsearch_runner.search(
        base, task, data, n_trials, seed, uploads, extra=plan.extra
    )
    assert result.export is not None
    curves = retrain.curves(spec, data, result.export)
    mine = {**record(task, seed, LRSEARCH, curves, result), "choices": _choices(spec, data, trials)}
    if plan.epochs_to_beat:
        mine["epochs_to_beat"] = epochs_to_beat(task, [*records, mine], seed, {})
    keep({**mine, "contender": plan.label, "extra": plan.extra})
    log(f"{task.name} seed {seed}: {plan.label} done in {result.wall_s:.0f}s")


def _choices(spec: StudySpec, data: Dataset, trials: list[Any]) -> list[dict[str, Any]]:
    """lrsearch's choice after each trial where it changed (for the epochs-to-beat measure)."""
    run = run_shape(spec, len(data.x_train))
    return [
        {"spent": spent, "export": peers.export_of(spec, strategy, params, run)}
        for spent, strategy, params in lrsearch_runner.choices_in_order(trials)
    ]


def epochs_to_beat(
    task: Task,
    records: list[dict[str, Any]],
    seed: int,
    cache: dict[str, float],
    max_retrains: int = 6,
) -> int | None:
    """Epochs lrsearch had spent when its choice at that point, retrained, first beat the best
    searching peer's retrained final value on this (task, seed). None: never within the
    study (or not within `max_retrains` earlier choices)."""
    mine = next(r for r in records if r["contender"] == LRSEARCH and r["seed"] == seed)
    rivals = [
        r["final"] for r in records if r["seed"] == seed and r["contender"] in peers.SEARCHING_PEERS
    ]
    if not rivals:
        return None
    target = min(rivals)
    choices = mine.get("choices", [])
    data = None
    for choice in choices[-max_retrains:] if len(choices) > max_retrains else choices:
        key = json.dumps(choice["export"], sort_keys=True)
        if key not in cache:
            data = data or task.data()
            spec = spec_for(task, data, 1, seed)
            cache[key] = retrain.summary(retrain.curves(spec, data, choice["export"]))["final"]
        if cache[key] <= target:
            return int(choice["spent"])
    return None if mine["final"] > target else int(mine["epochs"])


def read_records(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        if path.is_file():
            out += [
                json.loads(line, parse_constant=float)
                for line in path.read_text().splitlines()
                if line.strip()
            ]
    return [_floats(r) for r in out]


def _floats(value: Any) -> Any:
    """Infinite values were written as "inf" / "-inf" (JSON has none); NaN as null."""
    if value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def finite_or(value: Any, default: float = math.inf) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else default
