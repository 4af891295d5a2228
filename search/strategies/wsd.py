"""`wsd`: warm-up, stable, decay: the peak rate held, then a 1-sqrt decay to zero over the
last `decay_share` of the run (Hägele et al., 2024: matches or beats cosine, and 1-sqrt is
their best cooldown shape)."""

from __future__ import annotations

from typing import Any

from search.strategies.base import Params, RunShape, Strategy
from search.strategies.custom_schedules import (
    warmup_stable_decay_config,
    warmup_stable_decay_rate,
)


class WarmupStableDecay(Strategy):
    id = "wsd"
    param_names = ("initial_lr", "warmup_steps", "decay_share")
    description = "warm-up, stable, 1-sqrt decay to 0 (lrsearch's WarmupStableDecay)"

    def run_problems(self, params: Params, run: RunShape) -> list[str]:
        out = super().run_problems(params, run)
        decay = decay_steps(params, run)
        if not out and params["warmup_steps"] + decay > run.total_steps:
            out.append(
                f"warmup_steps + decay: {params['warmup_steps'] + decay} is longer than the run"
                f" ({run.total_steps} steps)"
            )
        return out

    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any]:
        warmup, decay = int(params["warmup_steps"]), decay_steps(params, run)
        stable = max(0, run.total_steps - warmup - decay)
        return warmup_stable_decay_config(
            params["initial_lr"], warmup, stable, decay, decay_shape="1-sqrt"
        )

    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        return warmup_stable_decay_rate(self.keras_schedule(params, run)["config"], step)


def decay_steps(params: Params, run: RunShape) -> int:
    """Steps of the final decay: `decay_share` of the run, at least one."""
    return max(1, round(run.total_steps * float(params["decay_share"])))
