"""A trial's user attributes written in one transaction read back like Optuna's own."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.trial_attrs import set_user_attrs

ATTRS = {"strategy": "cosine", "params": {"initial_lr": 0.03}, "lr": [0.01, 0.02], "seconds": 1.5}


def test_attrs_are_stored_and_overwritten_on_an_rdb_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/attrs.db"
    study = optuna.create_study(storage=url)
    trial = study.ask()
    trial.set_user_attr("strategy", "old")
    set_user_attrs(trial, ATTRS)
    assert trial.user_attrs == ATTRS  # the trial's own view is updated too
    study.tell(trial, 0.5)
    reread = optuna.load_study(study_name=study.study_name, storage=url).trials[0]
    assert reread.user_attrs == ATTRS


def test_a_finished_trial_refuses_every_attr(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/attrs.db"
    study = optuna.create_study(storage=url)
    trial = study.ask()
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_user_attrs(trial, ATTRS)
    reread = optuna.load_study(study_name=study.study_name, storage=url).trials[0]
    assert reread.user_attrs == {}


def test_in_memory_studies_take_one_call_per_key() -> None:
    study = optuna.create_study()
    trial = study.ask()
    set_user_attrs(trial, ATTRS)
    study.tell(trial, 0.5)
    assert study.trials[0].user_attrs == ATTRS
