"""`cosine`: CosineDecay with an optional linear warm-up from 0 to the initial rate."""

from __future__ import annotations

import math
from typing import Any

from search.strategies.base import Params, RunShape, Strategy
from search.strategies.export import keras_schedule_config


class Cosine(Strategy):
    id = "cosine"
    param_names = ("initial_lr", "decay_steps", "alpha", "warmup_steps")
    description = "keras.optimizers.schedules.CosineDecay (with warm-up)"

    def run_problems(self, params: Params, run: RunShape) -> list[str]:
        out = super().run_problems(params, run)
        if not out and params["decay_steps"] + params["warmup_steps"] > run.total_steps:
            out.append(
                f"decay_steps + warmup_steps: {params['decay_steps'] + params['warmup_steps']}"
                f" is longer than the run ({run.total_steps} steps)"
            )
        return out

    def space(self, run: RunShape, overrides: dict[str, Any] | None = None) -> list[Any]:
        return super().space(run, overrides)

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        warm = int(params["warmup_steps"])
        lr = float(params["initial_lr"])
        return keras_schedule_config(
            "CosineDecay",
            {
                "initial_learning_rate": 0.0 if warm else lr,
                "decay_steps": int(params["decay_steps"]),
                "alpha": float(params["alpha"]),
                "name": "CosineDecay",
                "warmup_target": lr if warm else None,
                "warmup_steps": warm,
            },
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        lr, warm = params["initial_lr"], int(params["warmup_steps"])
        if warm and step < warm:
            return float(lr * step / warm)
        done = min(step - warm, params["decay_steps"]) / params["decay_steps"]
        cosine = 0.5 * (1 + math.cos(math.pi * done))
        return float(lr * ((1 - params["alpha"]) * cosine + params["alpha"]))
