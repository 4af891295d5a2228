"""Contract of every LR strategy against real Keras: formulas, export round trip, shared graph."""

from __future__ import annotations

import optuna
import pytest

from search.space import suggest
from search.spec import parse_spec
from search.strategies import STRATEGY_IDS, RunShape, get_strategy
from search.training.keras_export import build_schedule_and_callbacks

pytestmark = pytest.mark.slow
keras = pytest.importorskip("keras")

RUN = RunShape(epochs=8, steps_per_epoch=25)
STEPS = [0, 1, 7, 24, 25, 60, 99, 150, 199, 5000]


def sampled(strategy_id: str, seed: int) -> dict:
    spec = parse_spec({"strategies": [strategy_id], "task": {"epochs": RUN.epochs}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return suggest(study.ask(), spec, RUN)[1]


def keras_lr(learning_rate: object, step: int) -> float:
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(learning_rate(step)))
    return float(learning_rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keras_applies_the_documented_formula(strategy_id: str, seed: int) -> None:
    strategy = get_strategy(strategy_id)
    params = sampled(strategy_id, seed)
    learning_rate, _ = build_schedule_and_callbacks(strategy.export(params, RUN).as_dict())
    for step in STEPS:
        epoch = min(step // RUN.steps_per_epoch, RUN.epochs - 1)
        expected = strategy.lr_at(params, RUN, step, epoch)
        if isinstance(learning_rate, float):
            expected = params["initial_lr"]  # callbacks change it per epoch, not the optimizer
        assert keras_lr(learning_rate, step) == pytest.approx(expected, rel=2e-5, abs=1e-9), step


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
def test_export_round_trips_through_keras_deserialisation(strategy_id: str) -> None:
    strategy = get_strategy(strategy_id)
    params = sampled(strategy_id, 5)
    export = strategy.export(params, RUN).as_dict()
    if export["schedule"] is None:
        names = [cb["class_name"] for cb in export["callbacks"]]
        assert names in ([], ["LearningRateScheduler"], ["ReduceLROnPlateau"])
        for cb in export["callbacks"]:
            if cb["class_name"] == "ReduceLROnPlateau":
                rebuilt = keras.callbacks.ReduceLROnPlateau(**cb["config"])
                assert rebuilt.factor == pytest.approx(params["factor"])
                assert rebuilt.patience == params["patience"]
        return
    schedule = keras.optimizers.schedules.deserialize(export["schedule"])
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    for step in STEPS:
        assert keras_lr(schedule, step) == pytest.approx(
            strategy.lr_at(params, RUN, step, 0), rel=2e-5
        )
        assert keras_lr(again, step) == pytest.approx(keras_lr(schedule, step))


@pytest.mark.parametrize("strategy_id", STRATEGY_IDS)
def test_snippet_runs_and_builds_an_optimizer(strategy_id: str) -> None:
    export = get_strategy(strategy_id).export(sampled(strategy_id, 7), RUN).as_dict()
    scope: dict = {}
    exec(export["python"], scope)
    assert isinstance(scope["optimizer"], keras.optimizers.Optimizer)
    assert len(scope["callbacks"]) == len(export["callbacks"])


def test_shared_switch_schedule_matches_each_keras_schedule() -> None:
    from search.training.lr_graph import SwitchSchedule

    switch = SwitchSchedule()
    for strategy_id in STRATEGY_IDS:
        strategy = get_strategy(strategy_id)
        for seed in range(3):
            params = sampled(strategy_id, seed)
            export = strategy.export(params, RUN).as_dict()
            switch.load(export)
            reference, _ = build_schedule_and_callbacks(strategy.export(params, RUN).as_dict())
            for step in STEPS:
                assert keras_lr(switch, step) == pytest.approx(keras_lr(reference, step), rel=1e-5)
