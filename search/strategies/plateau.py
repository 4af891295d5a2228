"""`plateau`: ReduceLROnPlateau on the study's objective (factor, patience, min_lr, cooldown).

Its curve depends on the metric history, so `lr_curve_from_history` replays Keras's rule on the
recorded values; `lr_at` alone only knows the starting rate.
"""

from __future__ import annotations

from typing import Any

from search.strategies.base import Params, RunShape, Strategy


class Plateau(Strategy):
    id = "plateau"
    param_names = ("initial_lr", "factor", "patience", "min_lr", "cooldown")
    description = "keras.callbacks.ReduceLROnPlateau"

    def run_problems(self, params: Params, run: RunShape) -> list[str]:
        if params["min_lr"] >= params["initial_lr"]:
            return [
                f"min_lr: {params['min_lr']:g} must be below initial_lr {params['initial_lr']:g}"
            ]
        return []

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any] | None:
        return None

    def keras_callbacks(self, params: Params, run: RunShape, monitor: str) -> list[dict[str, Any]]:
        config = {
            "monitor": monitor,
            "factor": float(params["factor"]),
            "patience": int(params["patience"]),
            "min_lr": float(params["min_lr"]),
            "cooldown": int(params["cooldown"]),
            "mode": "auto",
            "min_delta": 1e-4,
            "verbose": 0,
        }
        return [{"class_name": "ReduceLROnPlateau", "config": config}]

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        return float(params["initial_lr"])

    def lr_curve_from_history(
        self, params: Params, monitored: list[float], maximize: bool
    ) -> list[float]:
        """Replay ReduceLROnPlateau on recorded metric values: the rate at each epoch's start."""
        lr, best, wait, cool = float(params["initial_lr"]), None, 0, 0
        curve = []
        for value in monitored:
            curve.append(lr)
            better = best is None or (value > best + 1e-4 if maximize else value < best - 1e-4)
            if cool > 0:
                cool -= 1
                wait = 0
            if better:
                best, wait = value, 0
            elif cool <= 0:
                wait += 1
                if wait >= params["patience"] and lr > params["min_lr"]:
                    lr = max(lr * params["factor"], params["min_lr"])
                    cool, wait = int(params["cooldown"]), 0
        return curve
