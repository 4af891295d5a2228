"""`piecewise`: PiecewiseConstantDecay with n evenly spaced boundaries, each dropping the rate
by `drop` (values = initial * drop ** k). Boundaries always lie inside the run.
"""

from __future__ import annotations

from typing import Any

from search.strategies.base import Params, RunShape, Strategy
from search.strategies.export import keras_schedule_config


def boundaries_and_values(params: Params, run: RunShape) -> tuple[list[int], list[float]]:
    """Place n boundaries evenly inside the run; one value per segment."""
    n = int(params["n_boundaries"])
    bounds = [max(1, run.total_steps * k // (n + 1)) for k in range(1, n + 1)]
    values = [float(params["initial_lr"] * params["drop"] ** k) for k in range(n + 1)]
    return bounds, values


class Piecewise(Strategy):
    id = "piecewise"
    param_names = ("initial_lr", "n_boundaries", "drop")
    description = "keras.optimizers.schedules.PiecewiseConstantDecay"

    def run_problems(self, params: Params, run: RunShape) -> list[str]:
        if run.total_steps <= int(params["n_boundaries"]):
            return [f"n_boundaries: {params['n_boundaries']} do not fit in {run.total_steps} steps"]
        return []

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        bounds, values = boundaries_and_values(params, run)
        return keras_schedule_config(
            "PiecewiseConstantDecay",
            {"boundaries": bounds, "values": values, "name": "PiecewiseConstant"},
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        bounds, values = boundaries_and_values(params, run)
        segment = sum(1 for b in bounds if step > b)
        return values[segment]
