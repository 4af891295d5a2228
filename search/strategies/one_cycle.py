"""`one_cycle`: Smith's one-cycle policy: from peak/25 up to the peak (cosine) over the first
`warmup_steps`, then cosine annealing to peak/1e4 at the end of the run (the shape of
PyTorch's OneCycleLR with its defaults, without momentum cycling)."""

from __future__ import annotations

from typing import Any

from search.strategies.base import Param, Params, RunShape, Strategy
from search.strategies.custom_schedules import (
    warmup_stable_decay_config,
    warmup_stable_decay_rate,
)

START_DIVISOR = 25.0
END_DIVISOR = 1e4


class OneCycle(Strategy):
    id = "one_cycle"
    param_names = ("initial_lr", "warmup_steps")
    description = "one-cycle: cosine up from peak/25, cosine down to peak/1e4"

    def _default_param(self, name: str, run: RunShape) -> Param:
        if name == "warmup_steps":  # OneCycleLR's pct_start is 0.3; search 10-50%
            return Param(name, "int", max(1, run.total_steps // 10), max(2, run.total_steps // 2))
        return super()._default_param(name, run)

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        peak, warmup = float(params["initial_lr"]), int(params["warmup_steps"])
        return warmup_stable_decay_config(
            peak,
            warmup,
            0,
            max(1, run.total_steps - warmup),
            start_lr=peak / START_DIVISOR,
            end_lr=peak / END_DIVISOR,
            warmup_shape="cosine",
            decay_shape="cosine",
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        return warmup_stable_decay_rate(self.keras_schedule(params, run)["config"], step)
