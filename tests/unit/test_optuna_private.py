"""The contract with Optuna's private names (`search.store.optuna_private`).

After an Optuna upgrade this is the one test that says which of them changed: every name in
`PRIVATE_NAMES` is looked up where it lives, and every accessor is called on real objects
(a study on SQLite, its trial, a grouped TPE sampler); the failure lists each one that broke.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
from optuna.samplers import TPESampler
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_every_private_optuna_name_lrsearch_uses_is_still_there(tmp_path: Path) -> None:
    try:
        private = importlib.import_module("search.store.optuna_private")
    except ImportError as exc:  # a private module or name moved: importing names it
        raise AssertionError(f"Optuna {optuna.__version__}: {exc}") from None
    world = _World(tmp_path)
    broken = [
        f"{where}.{name}"
        for where, name in private.PRIVATE_NAMES
        if not hasattr(world.owner(where), name)
    ]
    for name, probe in _probes(private, world).items():
        try:
            ok = probe()
        except Exception as exc:
            ok, name = False, f"{name} ({type(exc).__name__}: {exc})"
        if not ok:
            broken.append(name)
    assert not broken, f"Optuna {optuna.__version__} changed: " + "; ".join(broken)


class _World:
    """A real SQLite study with one running trial, and a grouped TPE sampler."""

    def __init__(self, tmp_path: Path) -> None:
        with warnings.catch_warnings():  # heartbeats and `group` are "experimental"
            warnings.simplefilter("ignore")
            self.storage = RDBStorage(
                f"sqlite:///{tmp_path}/contract.db", heartbeat_interval=60, grace_period=120
            )
            self.study = optuna.create_study(storage=self.storage)
            self.trial = self.study.ask()
            self.sampler = TPESampler(multivariate=True, group=True, constant_liar=True)
        self.trial.suggest_float("x", 0.0, 1.0)

    def owner(self, where: str) -> Any:
        """The object `where` names in PRIVATE_NAMES: a live one, a module or a class."""
        live: dict[str, Any] = {
            "TPESampler()": self.sampler,
            "Study": self.study,
            "Study._storage (cached)": getattr(self.study, "_storage", None),
            "Trial": self.trial,
            "FrozenTrial": self.study.get_trials(deepcopy=False)[0],
        }
        if where in live:
            return live[where]
        try:
            return importlib.import_module(where)
        except ImportError:
            module, _, name = where.rpartition(".")
            return getattr(importlib.import_module(module), name, None)


def _probes(private: ModuleType, world: _World) -> dict[str, Callable[[], bool]]:
    """Each accessor on real objects: it must return what Optuna's public API agrees with."""
    study, trial, storage = world.study, world.trial, world.storage
    cached = private.study_storage(study)
    tid = private.trial_id(trial)

    def rdb_session() -> bool:
        with private.rdb_session(storage) as session:
            row = private.TrialModel.find_or_raise_by_id(tid, session)
            return int(row.number) == trial.number

    def stale() -> bool:
        storage.record_heartbeat(tid)
        return private.stale_trial_ids(storage, private.study_id(study)) == []

    def grouped_tpe() -> bool:
        tpe = optuna.create_study(sampler=world.sampler)
        tpe.optimize(lambda t: t.suggest_float("a", 0, 1) + t.suggest_float("b", 0, 1), 12)
        spaces = private.tpe_group_spaces(world.sampler)
        return bool(spaces) and private.tpe_constant_liar(world.sampler)

    def signature(fn: Any, *names: str) -> bool:
        return list(inspect.signature(fn).parameters)[: len(names)] == list(names)

    return {
        "trial_id": lambda: storage.get_trial(tid).number == trial.number,
        "trial_id of a FrozenTrial": lambda: private.trial_id(study.trials[0]) == tid,
        "frozen_view": lambda: private.frozen_view(trial).params == {"x": trial.params["x"]},
        "study_storage, study_id": lambda: (
            [t.number for t in cached.get_all_trials(private.study_id(study))] == [trial.number]
        ),
        "cached_trials": lambda: (
            [t.number for t in private.cached_trials(study, False, (TrialState.RUNNING,))]
            == [trial.number]
        ),
        "rdb_backend": lambda: (
            private.rdb_backend(cached) is storage
            and private.rdb_backend(InMemoryStorage()) is None
        ),
        "rdb_session, TrialModel.find_or_raise_by_id": rdb_session,
        "stale_trial_ids": stale,
        "has_study_cache, cached_distributions": lambda: (
            private.has_study_cache(cached) and "x" in private.cached_distributions(cached, tid)[1]
        ),
        "TrialUserAttributeModel columns": lambda: (
            {"trial_id", "key", "value_json"}
            <= set(private.TrialUserAttributeModel.__table__.c.keys())
        ),
        "TrialParamModel columns": lambda: (
            {"trial_id", "param_name", "param_value", "distribution_json"}
            <= set(private.TrialParamModel.__table__.c.keys())
        ),
        "TrialIntermediateValueModel.intermediate_value_to_stored_repr": lambda: (
            private.TrialIntermediateValueModel.intermediate_value_to_stored_repr(0.5)[0] == 0.5
        ),
        "RELATIVE_PARAMS_KEY, SYSTEM_ATTR_MAX_LENGTH": lambda: (
            isinstance(private.RELATIVE_PARAMS_KEY, str) and private.SYSTEM_ATTR_MAX_LENGTH > 0
        ),
        "tpe_group_spaces, tpe_constant_liar": grouped_tpe,
        "TPESampler._sample(study, trial, search_space)": lambda: signature(
            TPESampler._sample, "self", "study", "trial", "search_space"
        ),
        "TPESampler._sample_relative(study, trial, search_space)": lambda: signature(
            TPESampler._sample_relative, "self", "study", "trial", "search_space"
        ),
        "Study._get_trials(deepcopy, states, use_cache)": lambda: signature(
            optuna.Study._get_trials, "self", "deepcopy", "states", "use_cache"
        ),
    }
