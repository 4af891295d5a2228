"""`linear`: optional linear warm-up, then linear decay to zero at the end of the run.

Defazio et al. (2023) find linear decay to zero matches or beats cosine on a wide range of
problems; it has one searched knob besides the rate (the warm-up), so small studies can
search it well.
"""

from __future__ import annotations

from typing import Any

from search.strategies.base import Params, RunShape, Strategy
from search.strategies.custom_schedules import (
    warmup_stable_decay_config,
    warmup_stable_decay_rate,
)


class LinearToZero(Strategy):
    id = "linear"
    param_names = ("initial_lr", "warmup_steps")
    description = "warm-up, then linear decay to 0 (lrsearch's WarmupStableDecay)"

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        warmup = int(params["warmup_steps"])
        return warmup_stable_decay_config(
            params["initial_lr"], warmup, 0, max(1, run.total_steps - warmup)
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        return warmup_stable_decay_rate(self.keras_schedule(params, run)["config"], step)
