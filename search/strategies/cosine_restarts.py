"""`cosine_restarts`: CosineDecayRestarts (SGDR): cycles grow by t_mul, peaks shrink by m_mul."""

from __future__ import annotations

import math
from typing import Any

from search.strategies.base import Params, RunShape, Strategy
from search.strategies.export import keras_schedule_config


class CosineRestarts(Strategy):
    id = "cosine_restarts"
    param_names = ("initial_lr", "decay_steps", "t_mul", "m_mul", "alpha")
    description = "keras.optimizers.schedules.CosineDecayRestarts"

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        return keras_schedule_config(
            "CosineDecayRestarts",
            {
                "initial_learning_rate": float(params["initial_lr"]),
                "first_decay_steps": int(params["decay_steps"]),
                "t_mul": float(params["t_mul"]),
                "m_mul": float(params["m_mul"]),
                "alpha": float(params["alpha"]),
                "name": "SGDRDecay",
            },
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        frac = step / params["decay_steps"]
        t_mul = params["t_mul"]
        if t_mul == 1.0:
            restart = math.floor(frac)
            frac -= restart
        else:
            restart = math.floor(math.log(1 - frac * (1 - t_mul)) / math.log(t_mul))
            done = (1 - t_mul**restart) / (1 - t_mul)
            frac = (frac - done) / t_mul**restart
        cosine = 0.5 * params["m_mul"] ** restart * (1 + math.cos(math.pi * frac))
        return float(params["initial_lr"] * ((1 - params["alpha"]) * cosine + params["alpha"]))
