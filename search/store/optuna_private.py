"""Every private Optuna name lrsearch relies on, each behind one accessor.

Why: Optuna's public API has no way to name a trial's storage id, read a trial's own copy
without a database round trip, find the stale trials of a study, or write a batch of
attributes in one transaction; lrsearch needs all of these on its hot paths. Kept in this one
module (the only one that touches Optuna's privates), an Optuna upgrade that renames one
breaks here, and `tests/unit/test_optuna_private.py` names what changed (`PRIVATE_NAMES`).
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.samplers._tpe import sampler as _tpe
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb import models as _models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

#: (where, name) of each private name used below; the contract test checks every one.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("optuna.samplers._tpe.sampler", "_RELATIVE_PARAMS_KEY"),
    ("optuna.samplers._tpe.sampler", "_SYSTEM_ATTR_MAX_LENGTH"),
    ("optuna.samplers.TPESampler", "_sample"),
    ("optuna.samplers.TPESampler", "_sample_relative"),
    ("TPESampler()", "_group"),
    ("TPESampler()", "_search_space_group"),
    ("TPESampler()", "_constant_liar"),
    ("optuna.storages._rdb", "models"),
    ("optuna.storages._rdb.storage", "_create_scoped_session"),
    ("optuna.storages.RDBStorage", "_get_stale_trial_ids"),
    ("optuna.study.Study", "_get_trials"),
    ("Study", "_storage"),
    ("Study", "_study_id"),
    ("Study._storage (cached)", "_backend"),
    ("Study._storage (cached)", "_studies"),
    ("Study._storage (cached)", "_trial_id_to_study_id_and_number"),
    ("Trial", "_trial_id"),
    ("Trial", "_cached_frozen_trial"),
    ("FrozenTrial", "_trial_id"),
)

#: TPE's system attribute for the constant liar (a trial's relative params), and its chunks.
RELATIVE_PARAMS_KEY: str = _tpe._RELATIVE_PARAMS_KEY
SYSTEM_ATTR_MAX_LENGTH: int = _tpe._SYSTEM_ATTR_MAX_LENGTH

# Optuna's ORM models of its own tables (written in batches by `search.store.trial_writes`).
TrialModel = _models.TrialModel
TrialUserAttributeModel = _models.TrialUserAttributeModel
TrialIntermediateValueModel = _models.TrialIntermediateValueModel
TrialParamModel = _models.TrialParamModel


# --- trials and studies ----------------------------------------------------------------------


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in the storage (what every storage call takes)."""
    return int(trial._trial_id)


def frozen_view(trial: optuna.Trial) -> FrozenTrial:
    """The trial object's own copy of itself, read without a database round trip; changing
    it changes what the trial (and its pruner) sees."""
    return trial._cached_frozen_trial


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage the study reads through (Optuna's cache over the RDB storage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in the storage."""
    return int(study._study_id)


def cached_trials(
    study: optuna.Study, deepcopy: bool, states: Container[TrialState] | None
) -> list[FrozenTrial]:
    """The study's trials from its per-trial cache (filled by the first read after `ask`)."""
    return study._get_trials(deepcopy=deepcopy, states=states, use_cache=True)


# --- storages --------------------------------------------------------------------------------


def rdb_backend(storage: BaseStorage) -> RDBStorage | None:
    """The RDB storage under Optuna's cache (or the storage itself); None for other kinds."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


@contextmanager
def rdb_session(backend: RDBStorage) -> Iterator[Session]:
    """One transaction on Optuna's own sessions, committed at the end as Optuna does."""
    with _create_scoped_session(backend.scoped_session) as session:
        yield session


def stale_trial_ids(storage: RDBStorage, optuna_study_id: int) -> list[int]:
    """RUNNING trials of the study whose last heartbeat is older than the grace period."""
    return list(storage._get_stale_trial_ids(optuna_study_id))


def has_study_cache(storage: BaseStorage) -> bool:
    """Whether the storage keeps Optuna's per-study cache (the one `load_study` gives)."""
    return getattr(storage, "_studies", None) is not None


def cached_distributions(storage: BaseStorage, trial: int) -> tuple[int, dict[str, Any]]:
    """(study id, the study's known distributions) from Optuna's cache, for one of its
    trials; updating the dict updates the cache as Optuna's own `set_trial_param` does."""
    cache: Any = storage
    owner, _ = cache._trial_id_to_study_id_and_number[trial]
    known: dict[str, BaseDistribution] = cache._studies[owner].param_distribution
    return owner, known


# --- the TPE sampler (overridden by search.study_policy.SnapshotTPESampler) ------------------


def tpe_group_spaces(sampler: TPESampler) -> list[dict[str, BaseDistribution]] | None:
    """The parameter groups of a grouped TPE at this trial; None when it does not group."""
    group = sampler._search_space_group
    if not sampler._group or group is None:
        return None
    return list(group.search_spaces)


def tpe_constant_liar(sampler: TPESampler) -> bool:
    return bool(sampler._constant_liar)


def tpe_sample_relative(
    sampler: TPESampler, study: optuna.Study, trial: FrozenTrial, space: dict[str, Any]
) -> dict[str, Any]:
    """TPE's joint sample of one group of parameters."""
    return sampler._sample_relative(study, trial, space)


def tpe_sample(
    sampler: TPESampler, study: Any, trial: FrozenTrial, space: dict[str, Any]
) -> dict[str, Any]:
    """TPE's own `_sample` (what a subclass's override calls; `study` may be a view)."""
    return TPESampler._sample(sampler, study, trial, space)


__all__ = [
    "PRIVATE_NAMES",
    "RELATIVE_PARAMS_KEY",
    "SYSTEM_ATTR_MAX_LENGTH",
    "TrialIntermediateValueModel",
    "TrialModel",
    "TrialParamModel",
    "TrialUserAttributeModel",
    "cached_distributions",
    "cached_trials",
    "frozen_view",
    "has_study_cache",
    "rdb_backend",
    "rdb_session",
    "stale_trial_ids",
    "study_id",
    "study_storage",
    "tpe_constant_liar",
    "tpe_group_spaces",
    "tpe_sample",
    "tpe_sample_relative",
    "trial_id",
]
