"""`inverse_time`: InverseTimeDecay, lr / (1 + decay_rate * step / decay_steps)."""

from __future__ import annotations

import math
from typing import Any

from search.strategies.base import Params, RunShape, Strategy
from search.strategies.export import keras_schedule_config


class InverseTime(Strategy):
    id = "inverse_time"
    param_names = ("initial_lr", "decay_steps", "decay_rate", "staircase")
    description = "keras.optimizers.schedules.InverseTimeDecay"

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        return keras_schedule_config(
            "InverseTimeDecay",
            {
                "initial_learning_rate": float(params["initial_lr"]),
                "decay_steps": int(params["decay_steps"]),
                "decay_rate": float(params["decay_rate"]),
                "staircase": bool(params["staircase"]),
                "name": "InverseTimeDecay",
            },
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        p = step / params["decay_steps"]
        if params["staircase"]:
            p = math.floor(p)
        return float(params["initial_lr"] / (1 + params["decay_rate"] * p))
