"""The epoch monitor's value: the last epoch's, or the best epoch's with aggregate = best, also
for a resumed trial whose earlier epochs are replayed; the pruner sees every epoch's own value."""

from __future__ import annotations

import optuna
import pytest

from search.outcome import TrialOutcome
from search.spec import parse_spec
from search.training.monitor import EpochMonitor

optuna.logging.set_verbosity(optuna.logging.WARNING)
CURVE = [0.9, 0.5, 0.7, 0.6]


def monitor(aggregate: str, metric: str = "val_loss") -> tuple[EpochMonitor, optuna.Trial]:
    spec = parse_spec({"objective": {"metric": metric, "aggregate": aggregate}})
    trial = optuna.create_study(pruner=optuna.pruners.NopPruner()).ask()
    return EpochMonitor(trial, spec, TrialOutcome("constant"), None), trial


@pytest.mark.parametrize(
    ("aggregate", "metric", "value"),
    [("last", "val_loss", 0.6), ("best", "val_loss", 0.5), ("best", "val_accuracy", 0.9)],
)
def test_the_value_follows_the_aggregate(aggregate: str, metric: str, value: float) -> None:
    watch, trial = monitor(aggregate, metric)
    for epoch, v in enumerate(CURVE):
        watch.outcome.lr.append(0.01)
        assert not watch.epoch_end(epoch, {"loss": 1.0, metric: v})
    assert watch.finish() == value
    frozen = trial.study.trials[0]  # the pruner sees every epoch as it was
    assert frozen.intermediate_values == dict(enumerate(CURVE))


def test_a_resumed_trial_keeps_its_best_replayed_epoch() -> None:
    watch, _ = monitor("best")
    watch.outcome.history["val_loss"] = CURVE[:2]
    watch.replay(2)
    assert watch.value == 0.5
    watch.outcome.lr.extend([0.01] * 3)
    watch.epoch_end(2, {"loss": 1.0, "val_loss": 0.7})
    assert watch.finish() == 0.5
