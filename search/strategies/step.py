"""`step`: LearningRateScheduler with a rule per epoch: lr * drop ** (epoch // every)."""

from __future__ import annotations

from typing import Any

from search.strategies.base import Params, RunShape, Strategy


def step_rule(initial_lr: float, drop: float, every: int, epoch: int) -> float:
    """The per-epoch rule the exported LearningRateScheduler runs."""
    return float(initial_lr * drop ** (epoch // every))


class StepDecay(Strategy):
    id = "step"
    param_names = ("initial_lr", "drop", "every")
    description = "keras.callbacks.LearningRateScheduler (step decay per epoch)"

    def run_problems(self, params: Params, run: RunShape) -> list[str]:
        if params["every"] > run.epochs:
            return [f"every: {params['every']} epochs is longer than the run ({run.epochs} epochs)"]
        return []

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any] | None:
        return None

    def keras_callbacks(self, params: Params, run: RunShape, monitor: str) -> list[dict[str, Any]]:
        rule = {
            "rule": "step",
            "initial_lr": float(params["initial_lr"]),
            "drop": float(params["drop"]),
            "every": int(params["every"]),
        }
        return [{"class_name": "LearningRateScheduler", "config": {"verbose": 0}, "rule": rule}]

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        return step_rule(params["initial_lr"], params["drop"], int(params["every"]), epoch)
