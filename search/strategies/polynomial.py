"""`polynomial`: PolynomialDecay from the initial rate to initial * end_factor over decay_steps."""

from __future__ import annotations

from typing import Any

from search.strategies.base import Params, RunShape, Strategy
from search.strategies.export import keras_schedule_config


class Polynomial(Strategy):
    id = "polynomial"
    param_names = ("initial_lr", "decay_steps", "end_factor", "power")
    description = "keras.optimizers.schedules.PolynomialDecay"

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        return keras_schedule_config(
            "PolynomialDecay",
            {
                "initial_learning_rate": float(params["initial_lr"]),
                "decay_steps": int(params["decay_steps"]),
                "end_learning_rate": float(params["initial_lr"] * params["end_factor"]),
                "power": float(params["power"]),
                "cycle": False,
                "name": "PolynomialDecay",
            },
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        lr, end = params["initial_lr"], params["initial_lr"] * params["end_factor"]
        p = min(step, params["decay_steps"]) / params["decay_steps"]
        return float((lr - end) * (1 - p) ** params["power"] + end)
