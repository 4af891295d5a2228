"""The learning-rate range test's plan and its reading, in plain Python (the API plots it).

A range test (Smith 2017; fastai's `lr_find`) trains the study's own model once while the rate
rises exponentially, step by step, and records the training loss. Where the smoothed loss is
lowest, just before it blows up, is the edge of stability for this model, data and optimizer.
lrsearch reads a *range* from it, not a point (a single suggested value moves with the noise
of one run): the initial-rate search range becomes [edge / LOW_DIVISOR, edge / HIGH_DIVISOR],
replacing the default range (1e-4 to 1e-1) that knows nothing about the task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: The rates the test sweeps, per step, exponentially (fastai sweeps from 1e-7; below 1e-6
#: nothing trains in so few steps, and short tests need the resolution higher up).
START_LR = 1e-6
END_LR = 10.0
#: Steps of the test: at most this many, and never more than a third of one trial's steps.
MAX_STEPS = 100
MIN_STEPS = 20
#: The test stops once the smoothed loss exceeds this many times its minimum.
BLOW_UP = 4.0
#: Exponential smoothing of the per-step loss (bias-corrected, as fastai does), over about
#: this share of the test's steps: a fixed factor lags a short test past its own edge.
SMOOTHING_WINDOW = 1 / 15
SMOOTHING_RANGE = (0.5, 0.9)
#: The searched initial-rate range, as divisors of the edge of stability.
HIGH_DIVISOR = 1.0
LOW_DIVISOR = 300.0
#: A curve whose smoothed loss never fell below this share of its start shows no edge.
LEARNED = 0.9
#: The widest a range may be: the study's default range (what no test would change).
FLOOR, CEILING = 1e-5, 1.0


@dataclass(frozen=True)
class RangePlan:
    """How many steps to run, from which rate, growing by which factor per step."""

    steps: int
    start_lr: float = START_LR
    end_lr: float = END_LR

    @property
    def growth(self) -> float:
        return float((self.end_lr / self.start_lr) ** (1.0 / max(self.steps - 1, 1)))

    def rate(self, step: int) -> float:
        return float(self.start_lr * self.growth**step)


def plan_for(total_steps: int) -> RangePlan | None:
    """The test for a run of `total_steps`; None when a run is too short to afford one."""
    steps = min(MAX_STEPS, total_steps // 3)
    return RangePlan(steps) if steps >= MIN_STEPS else None


@dataclass(frozen=True)
class RangeResult:
    """The recorded curve and the range read from it (None: no usable edge was found)."""

    rates: list[float]
    losses: list[float]
    edge: float | None
    low: float | None = None
    high: float | None = None
    smoothed: list[float] = field(default_factory=list)

    def as_attrs(self) -> dict[str, Any]:
        return {
            "rates": self.rates,
            "losses": [v if math.isfinite(v) else None for v in self.losses],
            "smoothed": [v if math.isfinite(v) else None for v in self.smoothed],
            "edge": self.edge,
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> RangeResult:
        def floats(values: list[Any]) -> list[float]:
            return [math.nan if v is None else float(v) for v in values]

        return cls(
            floats(attrs.get("rates", [])),
            floats(attrs.get("losses", [])),
            attrs.get("edge"),
            attrs.get("low"),
            attrs.get("high"),
            floats(attrs.get("smoothed", [])),
        )


def read(rates: list[float], losses: list[float]) -> RangeResult:
    """Smooth the curve, find the edge of stability, and the search range around it."""
    smoothed = _smooth(losses)
    best, edge = math.inf, None
    for rate, value in zip(rates, smoothed, strict=False):
        if not math.isfinite(value) or value > BLOW_UP * best:
            break
        if value < best:
            best, edge = value, rate
    start = smoothed[0] if smoothed else math.inf
    if edge is None or not math.isfinite(best) or not best < LEARNED * start:
        return RangeResult(rates, losses, None, smoothed=smoothed)  # it never learned
    high = min(CEILING, edge / HIGH_DIVISOR)
    low = max(FLOOR, min(high / 10, edge / LOW_DIVISOR))
    return RangeResult(rates, losses, edge, low, high, smoothed)


def _smooth(losses: list[float]) -> list[float]:
    low, high = SMOOTHING_RANGE
    beta = min(high, max(low, 1 - 1 / max(1.0, len(losses) * SMOOTHING_WINDOW)))
    out, average = [], 0.0
    for i, value in enumerate(losses, start=1):
        if not math.isfinite(value):
            out.append(math.inf)
            break
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta**i))
    return out
