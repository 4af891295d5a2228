"""Write several user attributes of a running trial in one transaction.

Optuna's `Trial.set_user_attr` commits once per key; a finished trial leaves seven attributes
(strategy, params, LR and metric curves, export...), which cost seven round trips on the hot
path of every trial. This writes them with Optuna's own upsert, in one session.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """All of `attrs` or none of them; falls back to one call per key on other storages."""
    backend = getattr(trial.storage, "_backend", trial.storage)
    if not isinstance(backend, RDBStorage) or not hasattr(
        backend, "_set_trial_attr_without_commit"
    ):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    with _create_scoped_session(backend.scoped_session) as session:
        for key, value in attrs.items():
            backend._set_trial_attr_without_commit(
                session, models.TrialUserAttributeModel, trial._trial_id, key, value
            )
    trial._cached_frozen_trial.user_attrs.update(attrs)
