"""`constant`: one rate set by hand for the whole run (`optimizer.learning_rate.assign`)."""

from __future__ import annotations

from typing import Any

from search.strategies.base import Params, RunShape, Strategy


class Constant(Strategy):
    id = "constant"
    param_names = ("initial_lr",)
    description = "A fixed learning rate."

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any] | None:
        return None

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        return float(params["initial_lr"])
