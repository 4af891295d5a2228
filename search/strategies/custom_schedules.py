"""The one schedule lrsearch exports that Keras does not ship, kept as source text.

Why text: the same source is what `search.training.schedules` runs (registered with Keras so
`keras.optimizers.schedules.deserialize` accepts the export) and what the Python snippet
prints for users without lrsearch installed, so the two can never drift apart. This module
imports nothing: the API reads it without Keras.
"""

from __future__ import annotations

from typing import Any

WARMUP_STABLE_DECAY = "WarmupStableDecay"
PACKAGE = "lrsearch"
REGISTERED_NAME = f"{PACKAGE}>{WARMUP_STABLE_DECAY}"

#: Warm-up from `start_lr` to `peak_lr` over `warmup_steps`, hold for `stable_steps`, then decay
#: to `end_lr` over `decay_steps`, and stay there. Shapes: warm-up "linear" or "cosine"; decay
#: "linear", "cosine" or "1-sqrt" (Hägele et al., 2024).
SOURCE = '''\
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up, stable, decay: linear decay to zero, WSD and one-cycle are all this."""

    def __init__(self, peak_lr, warmup_steps, stable_steps, decay_steps, start_lr=0.0,
                 end_lr=0.0, warmup_shape="linear", decay_shape="linear",
                 name="WarmupStableDecay"):
        super().__init__()
        self.peak_lr, self.start_lr, self.end_lr = peak_lr, start_lr, end_lr
        self.warmup_steps, self.stable_steps = warmup_steps, stable_steps
        self.decay_steps = decay_steps
        self.warmup_shape, self.decay_shape, self.name = warmup_shape, decay_shape, name

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        peak, start, end = (ops.cast(v, "float32")
                            for v in (self.peak_lr, self.start_lr, self.end_lr))
        warmup = ops.cast(self.warmup_steps, "float32")
        stable = ops.cast(self.stable_steps, "float32")
        decay = ops.cast(self.decay_steps, "float32")
        up = ops.clip(step / ops.maximum(warmup, 1.0), 0.0, 1.0)
        if self.warmup_shape == "cosine":
            up = 0.5 * (1.0 - ops.cos(math.pi * up))
        down = ops.clip((step - warmup - stable) / ops.maximum(decay, 1.0), 0.0, 1.0)
        if self.decay_shape == "cosine":
            left = 0.5 * (1.0 + ops.cos(math.pi * down))
        elif self.decay_shape == "1-sqrt":
            left = 1.0 - ops.sqrt(down)
        else:
            left = 1.0 - down
        rising = start + (peak - start) * up
        falling = end + (peak - end) * left
        return ops.where(step < warmup, rising, falling)

    def get_config(self):
        return {"peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps,
                "stable_steps": self.stable_steps, "decay_steps": self.decay_steps,
                "start_lr": self.start_lr, "end_lr": self.end_lr,
                "warmup_shape": self.warmup_shape, "decay_shape": self.decay_shape,
                "name": self.name}
'''


def warmup_stable_decay_rate(config: dict[str, Any], step: int) -> float:
    """The rate `SOURCE` gives at `step`, in plain Python (the documented formula)."""
    import math

    peak, start, end = config["peak_lr"], config["start_lr"], config["end_lr"]
    warmup, stable, decay = config["warmup_steps"], config["stable_steps"], config["decay_steps"]
    if step < warmup:
        up = min(max(step / max(warmup, 1.0), 0.0), 1.0)
        if config["warmup_shape"] == "cosine":
            up = 0.5 * (1.0 - math.cos(math.pi * up))
        return float(start + (peak - start) * up)
    down = min(max((step - warmup - stable) / max(decay, 1.0), 0.0), 1.0)
    shape = config["decay_shape"]
    if shape == "cosine":
        left = 0.5 * (1.0 + math.cos(math.pi * down))
    elif shape == "1-sqrt":
        left = 1.0 - math.sqrt(down)
    else:
        left = 1.0 - down
    return float(end + (peak - end) * left)


def warmup_stable_decay_config(
    peak_lr: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    *,
    start_lr: float = 0.0,
    end_lr: float = 0.0,
    warmup_shape: str = "linear",
    decay_shape: str = "linear",
) -> dict[str, Any]:
    """The serialised schedule (what `keras.optimizers.schedules.deserialize` accepts once
    `search.training.schedules` registered the class)."""
    return {
        "module": None,
        "class_name": WARMUP_STABLE_DECAY,
        "config": {
            "peak_lr": float(peak_lr),
            "warmup_steps": int(warmup_steps),
            "stable_steps": int(stable_steps),
            "decay_steps": int(decay_steps),
            "start_lr": float(start_lr),
            "end_lr": float(end_lr),
            "warmup_shape": warmup_shape,
            "decay_shape": decay_shape,
            "name": WARMUP_STABLE_DECAY,
        },
        "registered_name": REGISTERED_NAME,
    }
