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
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState
from sqlalchemy import text

from search.store import DIALECT_INSERTS
from search.store import optuna_private as private


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """All of `attrs` or none of them; the trial's own copy sees them too."""
    set_trial_user_attrs(trial.storage, private.trial_id(trial), attrs)
    private.frozen_view(trial).user_attrs.update(attrs)


def set_trial_user_attrs(storage: BaseStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    """All of `attrs` on an unfinished trial, or none; other storages get one Optuna call
    per key. Refused (UpdateFinishedTrialError) once the trial is finished, as Optuna does."""
    upsert = _upsert_for(storage)
    if upsert is None or not attrs:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return
    table = private.TrialUserAttributeModel.__table__
    rows = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
        for key, value in attrs.items()
    ]
    backend, insert = upsert
    stmt = insert(table).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.trial_id, table.c.key],
        set_={"value_json": stmt.excluded.value_json},
    )
    _write_if_running(backend, trial_id, stmt)


def _upsert_for(storage: BaseStorage) -> tuple[RDBStorage, Any] | None:
    """The RDB storage under `storage` and its dialect's INSERT (with ON CONFLICT), or None
    where Optuna's own calls must be used (other storages, other dialects)."""
    backend = private.rdb_backend(storage)
    if backend is None:
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
    with private.rdb_session(backend) as session:
        if not wait_for_disk and backend.engine.name == "postgresql":
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        found = private.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, cast(TrialState, found.state))
        session.execute(stmt)


def set_intermediate_value(trial: optuna.Trial, step: int, value: float) -> None:
    """Store one report of a running trial (the storage write of `Trial.report`)."""
    upsert = _upsert_for(trial.storage)
    trial_id = private.trial_id(trial)
    if upsert is None:
        trial.storage.set_trial_intermediate_value(trial_id, step, value)
        return
    model = private.TrialIntermediateValueModel
    stored, kind = model.intermediate_value_to_stored_repr(value)
    table = model.__table__
    backend, insert = upsert
    stmt = insert(table).values(
        trial_id=trial_id,
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
    _write_if_running(backend, trial_id, stmt, wait_for_disk=False)


@contextmanager
def batched_params(trial: optuna.Trial) -> Iterator[None]:
    """Parameters suggested inside the block are stored together when it ends normally.

    `Trial.suggest_*` samples as usual (the trial object sees each value at once); only the
    storage write is deferred, then checked as Optuna would (the trial is running, each
    distribution fits the study's earlier one) and inserted in one statement. Other storages
    write each one as it is suggested.
    """
    storage = trial.storage
    upsert = _upsert_for(storage)
    if upsert is None or not private.has_study_cache(storage):
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
    trial_id = private.trial_id(trial)
    study_id, known = private.cached_distributions(cache, trial_id)
    for name, _, distribution in params:
        earlier = known.get(name) or _stored_distribution(backend, study_id, name)
        if earlier is not None:
            check_distribution_compatibility(earlier, distribution)
    table = private.TrialParamModel.__table__
    rows = [
        {
            "trial_id": trial_id,
            "param_name": name,
            "param_value": value,
            "distribution_json": distribution_to_json(distribution),
        }
        for name, value, distribution in params
    ]
    _write_if_running(backend, trial_id, table.insert().values(rows))
    for name, _, distribution in params:
        known.setdefault(name, distribution)


def _stored_distribution(backend: RDBStorage, study_id: int, name: str) -> BaseDistribution | None:
    """The distribution an earlier trial of the study stored for `name` (a cold cache)."""
    with private.rdb_session(backend) as session:
        record = (
            session.query(private.TrialParamModel)
            .join(private.TrialModel)
            .filter(private.TrialModel.study_id == study_id)
            .filter(private.TrialParamModel.param_name == name)
            .first()
        )
        return None if record is None else json_to_distribution(str(record.distribution_json))
