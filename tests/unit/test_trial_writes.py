"""Our fewer-statement writes of user attributes and reports read back like Optuna's own."""

from __future__ import annotations

import math

import optuna
import pytest

from search.store.trial_writes import batched_params, set_intermediate_value, set_user_attrs

ATTRS = {"strategy": "cosine", "params": {"initial_lr": 0.03}, "lr": [0.01, 0.02], "seconds": 1.5}


def test_attrs_are_stored_and_overwritten_on_an_rdb_study(db_url: str) -> None:
    url = db_url
    study = optuna.create_study(storage=url)
    trial = study.ask()
    trial.set_user_attr("strategy", "old")
    set_user_attrs(trial, ATTRS)
    assert trial.user_attrs == ATTRS  # the trial's own view is updated too
    study.tell(trial, 0.5)
    reread = optuna.load_study(study_name=study.study_name, storage=url).trials[0]
    assert reread.user_attrs == ATTRS


def test_a_finished_trial_refuses_every_attr(db_url: str) -> None:
    url = db_url
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


def test_reports_are_stored_overwritten_and_refused_once_finished(db_url: str) -> None:
    study = optuna.create_study(storage=db_url)
    trial = study.ask()
    set_intermediate_value(trial, 0, 0.9)
    set_intermediate_value(trial, 0, 0.8)  # same step: overwritten, as Optuna's storage does
    set_intermediate_value(trial, 1, float("nan"))  # kept as Optuna's NaN marker
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_intermediate_value(trial, 2, 0.4)
    stored = optuna.load_study(study_name=study.study_name, storage=db_url).trials[0]
    assert stored.intermediate_values[0] == 0.8 and math.isnan(stored.intermediate_values[1])
    assert 2 not in stored.intermediate_values


def suggest_three(trial: optuna.Trial) -> dict[str, object]:
    return {
        "strategy": trial.suggest_categorical("strategy", ["cosine", "step"]),
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "every": trial.suggest_int("every", 1, 5),
    }


def test_batched_params_are_stored_together_like_optunas_own(db_url: str) -> None:
    study = optuna.create_study(storage=db_url, sampler=optuna.samplers.RandomSampler(seed=0))
    first = study.ask()
    with batched_params(first):
        values = suggest_three(first)
        assert first.params == values  # the trial sees each value at once
        stored = optuna.load_study(study_name=study.study_name, storage=db_url)
        assert stored.trials[0].params == {}  # written when the block ends
    study.tell(first, 0.5)
    study.enqueue_trial({"lr": 0.01})
    second = study.ask()
    with batched_params(second):
        fixed = suggest_three(second)
    study.tell(second, 0.4)
    reread = optuna.load_study(study_name=study.study_name, storage=db_url).trials
    assert [t.params for t in reread] == [values, fixed] and fixed["lr"] == 0.01
    assert reread[0].distributions == study.trials[0].distributions


def test_batched_params_refuse_an_incompatible_distribution_and_a_finished_trial(
    db_url: str,
) -> None:
    study = optuna.create_study(storage=db_url)
    trial = study.ask()
    with batched_params(trial):
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.tell(trial, 0.5)
    fresh = optuna.load_study(study_name=study.study_name, storage=db_url)  # a cold cache
    clash = fresh.ask()
    with pytest.raises(ValueError), batched_params(clash):
        clash.suggest_categorical("lr", ["a", "b"])
    finished = study.ask()
    study.tell(finished, 0.1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError), batched_params(finished):
        finished.suggest_float("other", 0.0, 1.0)
    assert [
        t.params
        for t in optuna.load_study(study_name=study.study_name, storage=db_url).trials
        if t.params
    ] == [study.trials[0].params]


@pytest.mark.postgres
def test_a_report_skips_the_disk_wait_only_in_its_own_transaction(pg_url: str) -> None:
    from sqlalchemy import text

    storage = optuna.storages.RDBStorage(pg_url, engine_kwargs={"pool_size": 1})
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    set_intermediate_value(trial, 0, 0.7)
    with storage.engine.connect() as conn:  # the pool's one connection, just used by it
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    study.tell(trial, 0.7)
    stored = optuna.load_study(study_name=study.study_name, storage=pg_url).trials[0]
    assert stored.intermediate_values == {0: 0.7}
