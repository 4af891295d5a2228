"""Reads of a study's trials from Optuna's tables: progress, pages, one trial, the best."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import optuna
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from search.outcome import TrialOutcome
from search.store.optuna_tables import (
    optuna_intermediate,
    optuna_params,
    optuna_studies,
    optuna_study_system_attrs,
    optuna_system_attrs,
    optuna_trials,
    optuna_user_attrs,
    optuna_values,
)
from search.store.schema import Study

_SPECIAL = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}


@dataclass(frozen=True)
class Progress:
    """Trial counts of one study; `retried` failures are not counted as `failed`."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0
    running: int = 0
    waiting: int = 0
    remaining: int = 0


@dataclass(frozen=True)
class StoredTrial:
    """One Optuna trial as stored: state, objective value, attrs and intermediate values."""

    trial_id: int
    number: int
    state: str
    value: float | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    intermediate: list[tuple[int, float]] = field(default_factory=list)

    @property
    def outcome(self) -> TrialOutcome:
        """The user attrs the worker stored, typed."""
        return TrialOutcome.from_attrs(self.user_attrs)


def study_system_attr(session: Session, study: Study, key: str) -> Any:
    """One of the Optuna study's system attributes (None when absent)."""
    attrs = optuna_study_system_attrs.c
    text = session.execute(
        select(attrs.value_json).where(
            attrs.study_id == optuna_study_id(study.optuna_study_name), attrs.key == key
        )
    ).scalar_one_or_none()
    return None if text is None else json.loads(text)


def optuna_study_id(name: str) -> sa.ScalarSelect[int]:
    """Optuna's study id for a study name, as a subquery."""
    studies = optuna_studies.c
    return select(studies.study_id).where(studies.study_name == name).scalar_subquery()


def study_progress(session: Session, study: Study) -> Progress:
    """Trial counts by state from ONE grouped query (cost independent of trial count)."""
    successor = optuna_system_attrs.alias("successor")
    stmt = (
        select(optuna_trials.c.state, func.count(), func.count(successor.c.trial_id))
        .select_from(optuna_trials)
        .outerjoin(
            successor,
            sa.and_(
                successor.c.trial_id == optuna_trials.c.trial_id,
                successor.c.key == "failed_trial",
            ),
        )
        .where(optuna_trials.c.study_id == optuna_study_id(study.optuna_study_name))
        .group_by(optuna_trials.c.state)
    )
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    retries = 0
    for state, n, n_successors in session.execute(stmt):
        counts[str(state)] = int(n)
        retries += int(n_successors)
    return _progress(counts, retries, study.n_trials)


def _progress(counts: dict[str, int], retries: int, n_trials: int) -> Progress:
    """Each retry successor stands for one failed trial that should not count as failed."""
    retried = min(retries, counts["FAIL"])
    failed = counts["FAIL"] - retried
    used = counts["COMPLETE"] + counts["PRUNED"] + failed + counts["RUNNING"] + counts["WAITING"]
    return Progress(
        complete=counts["COMPLETE"],
        pruned=counts["PRUNED"],
        failed=failed,
        retried=retried,
        running=counts["RUNNING"],
        waiting=counts["WAITING"],
        remaining=max(0, n_trials - used),
    )


def _trial_select() -> sa.Select[Any]:
    return select(
        optuna_trials.c.trial_id,
        optuna_trials.c.number,
        optuna_trials.c.state,
        optuna_values.c.value,
        optuna_values.c.value_type,
        optuna_trials.c.datetime_start,
        optuna_trials.c.datetime_complete,
    ).select_from(
        optuna_trials.outerjoin(
            optuna_values,
            sa.and_(
                optuna_values.c.trial_id == optuna_trials.c.trial_id,
                optuna_values.c.objective == 0,
            ),
        )
    )


def _value_sort_key(direction: str) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    """(has-no-value flag, signed value): ascending order puts the best trials first."""
    missing = sa.case((optuna_values.c.value.is_(None), 1), else_=0)
    sign = -1.0 if direction == "maximize" else 1.0
    return missing, func.coalesce(optuna_values.c.value, 0.0) * sign


ValueCursor = tuple[int, float, int]


def trials_page(
    session: Session,
    study: Study,
    *,
    state: str | None = None,
    order: Literal["number", "value"] = "number",
    limit: int = 50,
    after: int | ValueCursor | None = None,
) -> list[StoredTrial]:
    """A keyset page of trials with attrs of just those trials.

    order="number": `after` is the last trial number. order="value": best first by the
    study direction; trials without a value come last; `after` is `value_cursor(last)`.
    """
    stmt = _trial_select().where(
        optuna_trials.c.study_id == optuna_study_id(study.optuna_study_name)
    )
    if state is not None:
        stmt = stmt.where(optuna_trials.c.state == state.upper())
    if order == "value":
        missing, signed = _value_sort_key(study.direction)
        if isinstance(after, tuple):
            key = sa.tuple_(missing, signed, optuna_trials.c.number)
            stmt = stmt.where(key > sa.tuple_(*after))
        stmt = stmt.order_by(missing, signed, optuna_trials.c.number)
    else:
        if isinstance(after, int):
            stmt = stmt.where(optuna_trials.c.number > after)
        stmt = stmt.order_by(optuna_trials.c.number)
    return _records(session, session.execute(stmt.limit(limit)).all())


def value_cursor(record: StoredTrial, direction: str) -> ValueCursor:
    """The keyset position of a trial in order=value (matches `_value_sort_key`)."""
    if record.value is None or not math.isfinite(record.value):
        return (1, 0.0, record.number)
    sign = -1.0 if direction == "maximize" else 1.0
    return (0, record.value * sign, record.number)


def get_trial(session: Session, study: Study, number: int) -> StoredTrial | None:
    """One trial of the study by number, or None."""
    stmt = _trial_select().where(
        optuna_trials.c.study_id == optuna_study_id(study.optuna_study_name),
        optuna_trials.c.number == number,
    )
    records = _records(session, session.execute(stmt).all())
    return records[0] if records else None


def best_single(session: Session, study: Study) -> tuple[int, float | None] | None:
    """(number, value) of the best COMPLETE trial by the study direction (ties: lowest
    number), without loading its attributes (the study's best: search.store.best)."""
    row = session.execute(_best_select(study)).first()
    return None if row is None else (int(row.number), stored_value(row.value, row.value_type))


def _best_select(study: Study) -> sa.Select[Any]:
    value = optuna_values.c.value
    ordered = value.desc() if study.direction == "maximize" else value.asc()
    return (
        _trial_select()
        .where(
            optuna_trials.c.study_id == optuna_study_id(study.optuna_study_name),
            optuna_trials.c.state == "COMPLETE",
            value.is_not(None),
        )
        .order_by(ordered, optuna_trials.c.number)
        .limit(1)
    )


def _records(session: Session, rows: Sequence[sa.Row[Any]]) -> list[StoredTrial]:
    """Attach user attrs, params and intermediate values, querying only these trials."""
    ids = [row.trial_id for row in rows]
    attrs = _user_attrs(session, ids)
    params = _params(session, ids)
    steps = _intermediate(session, ids)
    return [
        StoredTrial(
            trial_id=row.trial_id,
            number=row.number,
            state=str(row.state).lower(),
            value=stored_value(row.value, row.value_type),
            datetime_start=_as_utc(row.datetime_start),
            datetime_complete=_as_utc(row.datetime_complete),
            user_attrs=attrs.get(row.trial_id, {}),
            params=params.get(row.trial_id, {}),
            intermediate=steps.get(row.trial_id, []),
        )
        for row in rows
    ]


def _user_attrs(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    if not ids:
        return out
    stmt = select(optuna_user_attrs).where(optuna_user_attrs.c.trial_id.in_(ids))
    for row in session.execute(stmt):
        out.setdefault(row.trial_id, {})[row.key] = _json(row.value_json)
    return out


def _params(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Optuna's own params in external form (categorical indices decoded)."""
    out: dict[int, dict[str, Any]] = {}
    if not ids:
        return out
    stmt = select(optuna_params).where(optuna_params.c.trial_id.in_(ids))
    for row in session.execute(stmt):
        dist = optuna.distributions.json_to_distribution(row.distribution_json)
        out.setdefault(row.trial_id, {})[row.param_name] = dist.to_external_repr(row.param_value)
    return out


def _intermediate(session: Session, ids: list[int]) -> dict[int, list[tuple[int, float]]]:
    out: dict[int, list[tuple[int, float]]] = {}
    if not ids:
        return out
    stmt = (
        select(optuna_intermediate)
        .where(optuna_intermediate.c.trial_id.in_(ids))
        .order_by(optuna_intermediate.c.trial_id, optuna_intermediate.c.step)
    )
    for row in session.execute(stmt):
        value = stored_value(row.intermediate_value, row.intermediate_value_type)
        out.setdefault(row.trial_id, []).append((row.step, math.nan if value is None else value))
    return out


def stored_value(value: float | None, value_type: Any) -> float | None:
    if value_type is None:
        return None
    special = _SPECIAL.get(str(value_type))
    return special if special is not None else value


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _as_utc(value: datetime | None) -> datetime | None:
    """Optuna stores naive UTC datetimes."""
    return None if value is None else value.replace(tzinfo=UTC)
