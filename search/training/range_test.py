"""Run the learning-rate range test on a study's compiled model (see `search.lr_range`).

It reuses the trial graph: the shared schedule plays an exponential increase of the rate
(Keras's ExponentialDecay with a rate above one), the epoch loop runs the batches `fit` would
see and reports each batch's loss, and the model is put back to its initial state afterwards,
so the trials that follow start exactly as they would have without the test.
"""

from __future__ import annotations

from typing import Any

from search.lr_range import RangePlan, RangeResult, read
from search.strategies.export import keras_schedule_config


def range_export(plan: RangePlan) -> dict[str, Any]:
    """The schedule the test plays: plan.rate(step) at every optimizer step."""
    config = {
        "initial_learning_rate": plan.start_lr,
        "decay_steps": 1,
        "decay_rate": plan.growth,
        "staircase": False,
        "name": "ExponentialDecay",
    }
    schedule = keras_schedule_config("ExponentialDecay", config)
    return {"initial_lr": plan.start_lr, "schedule": schedule}


def run_range_test(loop: Any, schedule: Any, plan: RangePlan, seed: int) -> RangeResult:
    """Train `plan.steps` batches from the initial weights with the rate rising per step."""
    loop.restart()
    schedule.load(range_export(plan))
    try:
        losses = loop.step_losses(seed, plan.steps)
    finally:
        loop.restart()
    return read([plan.rate(i) for i in range(len(losses))], losses)
