"""Fewer statements for the writes every trial makes: its user attributes and its reports.

Optuna's `Trial.set_user_attr` commits once per key, and each call first loads the trial; a
finished trial leaves seven attributes (strategy, params, LR and metric curves, export...),
which cost fourteen statements and seven commits on the hot path of every trial. This checks
the trial once (Optuna's own rule: only a running trial may change) and upserts every key in
one multi-row statement on PostgreSQL and SQLite, into Optuna's own table. A per-epoch
report likewise is one check and one upsert instead of Optuna's three statements.
"""

from __future__ import annotations

import json
from typing import Any, cast

import optuna
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy.dialects import postgresql, sqlite

_UPSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """All of `attrs` or none of them; other storages get one Optuna call per key."""
    upsert = _upsert_for(trial)
    if upsert is None or not attrs:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    table = models.TrialUserAttributeModel.__table__
    rows = [
        {"trial_id": trial._trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()
    ]
    backend, insert = upsert
    stmt = insert(table).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.trial_id, table.c.key],
        set_={"value_json": stmt.excluded.value_json},
    )
    _write_if_running(backend, trial._trial_id, stmt)
    trial._cached_frozen_trial.user_attrs.update(attrs)


def _upsert_for(trial: optuna.Trial) -> tuple[RDBStorage, Any] | None:
    """The trial's RDB storage and its dialect's INSERT (with ON CONFLICT), or None where
    Optuna's own calls must be used (other storages, other dialects)."""
    backend = getattr(trial.storage, "_backend", trial.storage)
    if not isinstance(backend, RDBStorage):
        return None
    insert = _UPSERTS.get(backend.engine.name)
    return None if insert is None else (backend, insert)


def _write_if_running(backend: RDBStorage, trial_id: int, stmt: Any) -> None:
    """Run `stmt` in one transaction, refused (as Optuna does) once the trial is finished."""
    with _create_scoped_session(backend.scoped_session) as session:
        found = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, cast(TrialState, found.state))
        session.execute(stmt)


def set_intermediate_value(trial: optuna.Trial, step: int, value: float) -> None:
    """Store one report of a running trial (the storage write of `Trial.report`)."""
    upsert = _upsert_for(trial)
    if upsert is None:
        trial.storage.set_trial_intermediate_value(trial._trial_id, step, value)
        return
    model = models.TrialIntermediateValueModel
    stored, kind = model.intermediate_value_to_stored_repr(value)
    table = model.__table__
    backend, insert = upsert
    stmt = insert(table).values(
        trial_id=trial._trial_id,
        step=step,
        intermediate_value=stored,
        intermediate_value_type=kind,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.trial_id, table.c.step],
        set_={
            "intermediate_value": stmt.excluded.intermediate_value,
            "intermediate_value_type": stmt.excluded.intermediate_value_type,
        },
    )
    _write_if_running(backend, trial._trial_id, stmt)
