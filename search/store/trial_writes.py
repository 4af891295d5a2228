"""Fewer statements for the writes every trial makes: its parameters, attributes and reports.

Optuna's `Trial.set_user_attr` commits once per key, and each call first loads the trial; a
finished trial leaves seven attributes (strategy, params, LR and metric curves, export...),
which cost fourteen statements and seven commits on the hot path of every trial. This checks
the trial once (Optuna's own rule: only a running trial may change) and upserts every key in
one multi-row statement on PostgreSQL and SQLite, into Optuna's own table. A per-epoch
report likewise is one check and one upsert instead of Optuna's three statements, and the
parameters a trial suggests (three to six) are one check and one insert instead of a
transaction each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy import text

from search.store import DIALECT_INSERTS


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
    insert = DIALECT_INSERTS.get(backend.engine.name)
    return None if insert is None else (backend, insert)


def _write_if_running(
    backend: RDBStorage, trial_id: int, stmt: Any, *, wait_for_disk: bool = True
) -> None:
    """Run `stmt` in one transaction, refused (as Optuna does) once the trial is finished.

    `wait_for_disk=False` lets a PostgreSQL commit return before its WAL is flushed
    (`synchronous_commit` off for this transaction only): for a per-epoch report, whose
    worst case is that a database *server* crash forgets the last reports of a running
    trial (never reorders them: later durable commits flush it).
    """
    with _create_scoped_session(backend.scoped_session) as session:
        if not wait_for_disk and backend.engine.name == "postgresql":
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
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
    _write_if_running(backend, trial._trial_id, stmt, wait_for_disk=False)


@contextmanager
def batched_params(trial: optuna.Trial) -> Iterator[None]:
    """Parameters suggested inside the block are stored together when it ends normally.

    `Trial.suggest_*` samples as usual (the trial object sees each value at once); only the
    storage write is deferred, then checked as Optuna would (the trial is running, each
    distribution fits the study's earlier one) and inserted in one statement. Other storages
    write each one as it is suggested.
    """
    upsert = _upsert_for(trial)
    storage = trial.storage
    cached = getattr(storage, "_studies", None)
    if upsert is None or cached is None:
        yield
        return
    buffer = _ParamBuffer(storage)
    trial.storage = cast(Any, buffer)  # a stand-in with set_trial_param deferred
    try:
        yield
    finally:
        trial.storage = storage
    if buffer.params:
        _insert_params(upsert[0], storage, trial, buffer.params)


class _ParamBuffer:
    """The trial's storage, except that `set_trial_param` is kept for `batched_params`."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.params: list[tuple[str, float, BaseDistribution]] = []

    def set_trial_param(
        self, trial_id: int, name: str, value: float, distribution: BaseDistribution
    ) -> None:
        self.params.append((name, value, distribution))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def _insert_params(
    backend: RDBStorage,
    cache: Any,
    trial: optuna.Trial,
    params: list[tuple[str, float, BaseDistribution]],
) -> None:
    """One transaction for `params`, with the checks of Optuna's `set_trial_param`; the
    cache of the study's distributions is updated like Optuna's own cache does."""
    study_id, _ = cache._trial_id_to_study_id_and_number[trial._trial_id]
    known = cache._studies[study_id].param_distribution
    for name, _, distribution in params:
        earlier = known.get(name) or _stored_distribution(backend, study_id, name)
        if earlier is not None:
            check_distribution_compatibility(earlier, distribution)
    table = models.TrialParamModel.__table__
    rows = [
        {
            "trial_id": trial._trial_id,
            "param_name": name,
            "param_value": value,
            "distribution_json": distribution_to_json(distribution),
        }
        for name, value, distribution in params
    ]
    _write_if_running(backend, trial._trial_id, table.insert().values(rows))
    for name, _, distribution in params:
        known.setdefault(name, distribution)


def _stored_distribution(backend: RDBStorage, study_id: int, name: str) -> BaseDistribution | None:
    """The distribution an earlier trial of the study stored for `name` (a cold cache)."""
    with _create_scoped_session(backend.scoped_session) as session:
        record = (
            session.query(models.TrialParamModel)
            .join(models.TrialModel)
            .filter(models.TrialModel.study_id == study_id)
            .filter(models.TrialParamModel.param_name == name)
            .first()
        )
        return None if record is None else json_to_distribution(str(record.distribution_json))
