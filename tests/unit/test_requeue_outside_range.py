"""A queued point outside its narrowed range can be queued again (retry, replicate).

The user's reference rate (1e-3) is enqueued even when the range test narrowed the search
above it; Optuna records it with the narrowed distribution, and re-creating that trial with
those distributions raised ValueError, so a lost worker's trial was never retried (CI caught
it in the kill -9 test)."""

from __future__ import annotations

import optuna
import pytest

from search.space import distributions_holding

NARROW = optuna.distributions.FloatDistribution(0.0013, 0.39, log=True)


def _reference_trial() -> optuna.trial.FrozenTrial:
    study = optuna.create_study()
    study.enqueue_trial({"constant.initial_lr": 0.001})
    trial = study.ask()
    with pytest.warns(UserWarning, match="out of range"):
        trial.suggest_float("constant.initial_lr", 0.0013, 0.39, log=True)
    study.tell(trial, 1.0)
    return study.trials[0]


def test_optuna_refuses_the_recorded_distributions() -> None:
    frozen = _reference_trial()
    with pytest.raises(ValueError, match="isn't contained"):
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
        )


def test_the_widened_distributions_hold_the_value_and_keep_the_rest() -> None:
    frozen = _reference_trial()
    held = distributions_holding(frozen.params, frozen.distributions)
    dist = held["constant.initial_lr"]
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    assert (dist.low, dist.high, dist.log) == (0.001, 0.39, True)
    optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=frozen.params, distributions=held
    )
    inside = {"x": 0.5}
    unit = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    assert distributions_holding(inside, unit) == unit
    ints = {"n": optuna.distributions.IntDistribution(2, 8)}
    widened = distributions_holding({"n": 12}, ints)["n"]
    assert isinstance(widened, optuna.distributions.IntDistribution)
    assert (widened.low, widened.high) == (2, 12)
