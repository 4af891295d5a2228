"""The learning rate a trial applied, for plotting against epochs (pure Python, no Keras).

Schedules are drawn step by step from the strategy's own formula (`Strategy.lr_at`), so a
warm-up from 0 or a restart inside an epoch shows as it was; callback strategies (`step`,
`plateau`) change the rate between epochs, plateau's from the metric it watched, so their
recorded per-epoch rates are drawn as steps. The formula is trusted only where it agrees with
what the trial recorded at each epoch's start (a run shape guessed wrong falls back too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from search.strategies import RunShape, Strategy, get_strategy

#: The most points drawn per curve: a 1000-epoch run of 100 steps per epoch is 100,000
#: steps, far more than the plot's 800 pixels can show.
MAX_POINTS = 500
#: How closely the formula must match each recorded epoch-start rate (float32 storage).
AGREEMENT = 1e-3
#: A linear axis unless the rates span more than this factor (and none is 0).
LOG_SPAN = 100.0


@dataclass(frozen=True)
class LrCurve:
    """Rates against epochs (x = step / steps_per_epoch); `stepped`: each value holds until
    the next x (draw with steps-post)."""

    epochs: list[float]
    rates: list[float]
    stepped: bool

    @property
    def has_data(self) -> bool:
        return any(math.isfinite(v) for v in self.rates)


def trial_curve(
    strategy_id: str,
    params: dict[str, object],
    recorded: Sequence[float],
    run: RunShape | None,
    max_points: int = MAX_POINTS,
) -> LrCurve:
    """The per-step curve from the formula when a schedule's formula and run shape are known
    and agree with the recorded rates; else the recorded per-epoch rates as steps."""
    strategy = _known(strategy_id)
    if run is not None and strategy is not None:
        try:
            if not strategy.keras_callbacks(dict(params), run, "val_loss"):
                curve = _formula_curve(strategy, dict(params), run, len(recorded), max_points)
                if _agrees(strategy, dict(params), run, recorded):
                    return curve
        except (KeyError, TypeError, ValueError, ArithmeticError):
            pass  # parameters from another version: draw what was recorded
    return recorded_curve(recorded, max_points)


def recorded_curve(recorded: Sequence[float], max_points: int = MAX_POINTS) -> LrCurve:
    """Per-epoch rates held over their epoch: x = 0..n, the last value repeated at n."""
    n = len(recorded)
    if n == 0:
        return LrCurve([], [], True)
    picked = sample(n, max_points)
    epochs = [float(e) for e in picked] + [float(n)]
    rates = [float(recorded[e]) for e in picked]
    return LrCurve(epochs, rates + rates[-1:], True)


def sample(n: int, max_points: int, keep: Sequence[int] = ()) -> list[int]:
    """Up to about `max_points` indices of 0..n-1, evenly spaced, always with the first and
    the last, plus the `keep` indices inside the range (a warm-up's peak)."""
    if n <= max_points:
        return list(range(n))
    count = max(2, max_points)
    chosen = {round(i * (n - 1) / (count - 1)) for i in range(count)}
    chosen.update(k for k in keep if 0 <= k < n)
    return sorted(chosen)


def log_scale(curves: Sequence[LrCurve]) -> bool:
    """A log axis only when the rates span more than LOG_SPAN and none is 0 or below."""
    values = [v for c in curves for v in c.rates if math.isfinite(v)]
    if not values or min(values) <= 0:
        return False
    return max(values) / min(values) > LOG_SPAN


def _formula_curve(
    strategy: Strategy, params: dict[str, object], run: RunShape, epochs_run: int, max_points: int
) -> LrCurve:
    epochs = min(run.epochs, epochs_run) if epochs_run else run.epochs
    total, per_epoch = epochs * run.steps_per_epoch, run.steps_per_epoch
    keep = [int(v) for k in ("warmup_steps",) if isinstance(v := params.get(k), int | float)]
    steps = sample(total, max_points, keep)
    rates = [float(strategy.lr_at(params, run, s, s // per_epoch)) for s in steps]
    return LrCurve([s / per_epoch for s in steps], rates, False)


def _agrees(
    strategy: Strategy, params: dict[str, object], run: RunShape, recorded: Sequence[float]
) -> bool:
    """The formula gives the recorded rate at the start of every recorded epoch."""
    for epoch, value in enumerate(recorded[: run.epochs]):
        if not math.isfinite(value):
            continue
        formula = float(strategy.lr_at(params, run, epoch * run.steps_per_epoch, epoch))
        if not math.isclose(formula, value, rel_tol=AGREEMENT, abs_tol=1e-12):
            return False
    return True


def _known(strategy_id: str) -> Strategy | None:
    try:
        return get_strategy(strategy_id)
    except KeyError:
        return None
