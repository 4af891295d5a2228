"""PNG plots of a study's trials, rendered with matplotlib's Agg canvas (no display, no pyplot
global state, so API threads can render concurrently).

matplotlib is imported lazily, only when a plot is drawn; nothing here imports TensorFlow or
the service. Callers choose which trials to pass (the API bounds that for huge studies):
`lr` and `validation` draw the first `k` trials given, so pass them best first. `range` draws
the study's learning-rate range test (`PlotOptions.lr_range`), no trials.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.lr_curves import LrCurve, log_scale, trial_curve
from search.lr_range import BLOW_UP, RangeResult
from search.outcome import TrialOutcome
from search.strategies import RunShape

PLOT_NAMES: tuple[str, ...] = ("lr", "validation", "history", "strategies", "range")
FIGSIZE = (8.0, 4.5)
DPI = 100


class NothingToPlot(ValueError):
    """The trials given hold no data for this plot (e.g. no finished trial)."""


@dataclass(frozen=True)
class PlotTrial:
    """The few fields of a finished trial that the plots draw."""

    number: int
    value: float | None
    strategy: str
    lr: list[float] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # the strategy's, as `lr_at` takes

    @classmethod
    def from_outcome(
        cls,
        number: int,
        value: float | None,
        outcome: TrialOutcome,
        metric: str,
        intermediate: Iterable[tuple[int, float]] = (),
        params: Mapping[str, Any] | None = None,
    ) -> PlotTrial:
        """Build from what a worker stores: the outcome's `lr` and `history` (intermediate
        values stand in for the objective's curve when the history lacks it)."""
        curve = outcome.history.get(metric)
        if not curve:
            curve = [v for _, v in sorted(intermediate)]
        strategy = outcome.strategy or (params or {}).get("strategy") or "?"
        return cls(
            number=number,
            value=value,
            strategy=str(strategy),
            lr=_floats(outcome.lr),
            curve=_floats(curve),
            params=dict(outcome.params or outcome.export.get("params") or {}),
        )

    @classmethod
    def from_attrs(
        cls,
        number: int,
        value: float | None,
        user_attrs: Mapping[str, Any],
        metric: str,
        intermediate: Iterable[tuple[int, float]] = (),
        params: Mapping[str, Any] | None = None,
    ) -> PlotTrial:
        """`from_outcome` for a trial's raw user attributes."""
        outcome = TrialOutcome.from_attrs(user_attrs)
        return cls.from_outcome(number, value, outcome, metric, intermediate, params)


@dataclass(frozen=True)
class PlotOptions:
    """What the plots need to know about the study besides its trials."""

    metric: str = "val_loss"
    direction: str = "minimize"
    k: int = 5
    title: str = ""
    note: str = ""
    run: RunShape | None = None  # the trials' run shape: `lr` draws schedules per step
    lr_range: RangeResult | None = None  # what `range` draws


def render(name: str, trials: Sequence[PlotTrial], options: PlotOptions | None = None) -> bytes:
    """PNG bytes of plot `name` (one of PLOT_NAMES); NothingToPlot when there is no data."""
    return _png(draw(name, trials, options))


def draw(name: str, trials: Sequence[PlotTrial], options: PlotOptions | None = None) -> Any:
    """The matplotlib Figure that `render` encodes (its axes say what was drawn)."""
    drawers: dict[str, Callable[[Any, Sequence[PlotTrial], PlotOptions], None]] = {
        "lr": _draw_lr,
        "validation": _draw_validation,
        "history": _draw_history,
        "strategies": _draw_strategies,
        "range": _draw_range,
    }
    if name not in drawers:
        raise KeyError(f"unknown plot {name!r}; known: {', '.join(PLOT_NAMES)}")
    options = options or PlotOptions()
    figure, axes = _figure()
    drawers[name](axes, trials, options)
    heading = " - ".join(p for p in (options.title, options.note) if p)
    if heading:
        figure.suptitle(heading, fontsize=10, parse_math=False)  # a user's name, not TeX
    return figure


# --- the plots --------------------------------------------------------------------------


def _draw_lr(axes: Any, trials: Sequence[PlotTrial], options: PlotOptions) -> None:
    """The rate each of the best k trials applied against epochs: schedules per step from
    their formula, callback strategies per epoch as recorded (search.lr_curves)."""
    chosen: list[tuple[PlotTrial, LrCurve]] = []
    for trial in trials:
        curve = trial_curve(trial.strategy, trial.params, trial.lr, options.run)
        if curve.has_data:
            chosen.append((trial, curve))
        if len(chosen) >= max(1, options.k):
            break
    if not chosen:
        raise NothingToPlot("no finished trial recorded this curve")
    for trial, curve in chosen:
        style = "steps-post" if curve.stepped else "default"
        axes.plot(curve.epochs, curve.rates, drawstyle=style, label=_label(trial))
    if log_scale([c for _, c in chosen]):
        axes.set_yscale("log")
    else:
        axes.set_ylim(bottom=0)
    axes.set_xlim(0, max(math.ceil(c.epochs[-1]) for _, c in chosen))  # whole epochs
    _whole_epochs(axes)
    axes.set_xlabel("epoch")
    axes.set_ylabel("learning rate")
    axes.set_title(f"learning rate of the best {len(chosen)} trials")
    _finish(axes, legend=True)


def _draw_validation(axes: Any, trials: Sequence[PlotTrial], options: PlotOptions) -> None:
    """The objective metric per epoch of the best k trials."""
    chosen = _best_with(trials, options.k, lambda t: any(math.isfinite(v) for v in t.curve))
    for trial in chosen:
        epochs = range(1, len(trial.curve) + 1)
        axes.plot(epochs, trial.curve, marker=_marker(len(trial.curve)), label=_label(trial))
    axes.set_xlabel("epoch")
    axes.set_ylabel(options.metric)
    axes.set_title(f"{options.metric} of the best {len(chosen)} trials")
    _finish(axes, legend=True)


def _draw_history(axes: Any, trials: Sequence[PlotTrial], options: PlotOptions) -> None:
    """Each finished trial's value by trial number, and the best value found so far."""
    points = sorted((t.number, t.value) for t in trials if _finite(t.value))
    if not points:
        raise NothingToPlot("no finished trial has a finite value")
    numbers = [n for n, _ in points]
    values = [float(v) for _, v in points if v is not None]
    axes.scatter(numbers, values, s=14, alpha=0.6, label="trial value")
    axes.step(
        numbers,
        best_so_far(values, options.direction),
        where="post",
        color="C3",
        label="best so far",
    )
    axes.set_xlabel("trial number")
    axes.set_ylabel(options.metric)
    axes.set_title("optimization history")
    _finish(axes, legend=True)


def _draw_strategies(axes: Any, trials: Sequence[PlotTrial], options: PlotOptions) -> None:
    """Values grouped by strategy family: a box per family plus every trial as a dot."""
    groups = group_by_strategy(trials, options.direction)
    if not groups:
        raise NothingToPlot("no finished trial has a finite value")
    names = list(groups)
    positions = list(range(1, len(names) + 1))
    axes.boxplot([groups[n] for n in names], positions=positions, widths=0.5, showfliers=False)
    for position, name in zip(positions, names, strict=True):
        values = groups[name]
        axes.scatter(_jitter(position, len(values)), values, s=12, alpha=0.6, zorder=3)
    axes.set_xticks(positions, [f"{n}\n(n={len(groups[n])})" for n in names])
    axes.set_ylabel(options.metric)
    axes.set_title("value by strategy (best first)")
    _finish(axes, legend=False)


def _draw_range(axes: Any, trials: Sequence[PlotTrial], options: PlotOptions) -> None:
    """The range test: loss and smoothed loss against the rate (log), the edge of stability
    and the initial-rate range the study searched."""
    found = options.lr_range
    if found is None or not found.rates:
        raise NothingToPlot("this study has no learning-rate range test")
    rates, losses = found.rates, found.losses[: len(found.rates)]
    smoothed = [v if math.isfinite(v) else math.nan for v in found.smoothed[: len(rates)]]
    axes.plot(rates[: len(losses)], losses, color="C0", alpha=0.35, label="loss per step")
    axes.plot(rates[: len(smoothed)], smoothed, color="C0", label="smoothed loss")
    if found.low is not None and found.high is not None:
        axes.axvspan(
            found.low,
            found.high,
            color="C2",
            alpha=0.15,
            label=f"searched initial rate {found.low:.2g} - {found.high:.2g}",
        )
    if found.edge is not None:
        axes.axvline(
            found.edge, color="C3", linestyle="--", label=f"edge of stability {found.edge:.2g}"
        )
    axes.set_xscale("log")
    limits = range_ylim(losses, smoothed)
    if limits is not None:
        axes.set_ylim(*limits)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    found_edge = "" if found.edge is not None else " (no edge found: default range searched)"
    axes.set_title(f"learning-rate range test{found_edge}")
    _finish(axes, legend=True)


# --- pure helpers (tested without drawing) ---------------------------------------------------


def best_so_far(values: Sequence[float], direction: str) -> list[float]:
    """Running minimum (or maximum when maximizing) of the values in order."""
    pick = max if direction == "maximize" else min
    out: list[float] = []
    for value in values:
        out.append(value if not out else pick(out[-1], value))
    return out


def group_by_strategy(trials: Sequence[PlotTrial], direction: str) -> dict[str, list[float]]:
    """Finite values per strategy, strategies ordered by median, best first."""
    groups: dict[str, list[float]] = {}
    for trial in trials:
        if _finite(trial.value):
            groups.setdefault(trial.strategy, []).append(float(trial.value or 0.0))
    sign = -1.0 if direction == "maximize" else 1.0
    order = sorted(groups, key=lambda name: (sign * _median(groups[name]), name))
    return {name: groups[name] for name in order}


def range_ylim(losses: Sequence[float], smoothed: Sequence[float]) -> tuple[float, float] | None:
    """Loss limits that show the curve up to where the test counts it blown up (BLOW_UP times
    its lowest smoothed loss), not the last steps' explosion."""
    low_s = [v for v in smoothed if math.isfinite(v)]
    if not low_s:
        return None
    top = min(max(low_s), BLOW_UP * min(low_s))
    bottom = min([v for v in losses if math.isfinite(v)] + low_s)
    margin = 0.05 * (top - bottom) or 0.05 * abs(top) or 0.05
    return bottom - margin, top + margin


def _best_with(
    trials: Sequence[PlotTrial], k: int, has_data: Callable[[PlotTrial], bool]
) -> list[PlotTrial]:
    chosen = [t for t in trials if has_data(t)][: max(1, k)]
    if not chosen:
        raise NothingToPlot("no finished trial recorded this curve")
    return chosen


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _jitter(center: float, n: int, width: float = 0.15) -> list[float]:
    """Deterministic spread of n dots around a box (same picture on every request)."""
    if n <= 1:
        return [center] * n
    return [center - width + 2 * width * i / (n - 1) for i in range(n)]


def _label(trial: PlotTrial) -> str:
    value = f"{trial.value:.4g}" if _finite(trial.value) else "-"
    return f"#{trial.number} {trial.strategy} ({value})"


def _marker(n_points: int) -> str | None:
    return "o" if n_points <= 30 else None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _floats(values: Iterable[Any]) -> list[float]:
    """Numbers as floats; null (a diverged metric in JSON) becomes NaN so lines break there."""
    return [float(v) if isinstance(v, int | float) else math.nan for v in values]


# --- matplotlib, lazily ----------------------------------------------------------------------


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _whole_epochs(axes: Any) -> None:
    """Ticks at whole epochs only (curves are drawn between them)."""
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _finish(axes: Any, *, legend: bool) -> None:
    axes.grid(True, alpha=0.3)
    if legend:
        axes.legend(fontsize=8)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
