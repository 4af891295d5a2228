"""The `lr` plot shows schedules as they are (per step, warm-ups from 0, a linear axis, x in
epochs) and the `range` plot the range test; both read from the drawn figure, no TF."""

from __future__ import annotations

import math

import pytest

from search.lr_curves import MAX_POINTS, log_scale, recorded_curve, sample, trial_curve
from search.lr_range import RangePlan, read
from search.plots import NothingToPlot, PlotOptions, PlotTrial, draw, range_ylim
from search.strategies import RunShape, get_strategy

RUN = RunShape(epochs=20, steps_per_epoch=23)
WARM = {"initial_lr": 0.01, "decay_steps": 400, "alpha": 0.0, "warmup_steps": 46}


def recorded(strategy_id: str, params: dict[str, object], run: RunShape = RUN) -> list[float]:
    """The per-epoch rates a worker records: the rate at each epoch's first step."""
    return get_strategy(strategy_id).lr_curve(params, run)


def test_a_warm_up_from_zero_is_drawn_step_by_step_in_epochs() -> None:
    curve = trial_curve("cosine", WARM, recorded("cosine", WARM), RUN)
    assert not curve.stepped and len(curve.epochs) == RUN.total_steps
    assert curve.epochs[0] == 0.0 and curve.rates[0] == 0.0
    assert curve.epochs[1] == pytest.approx(1 / 23)  # inside the first epoch
    peak = curve.rates.index(max(curve.rates))
    assert curve.epochs[peak] == pytest.approx(46 / 23) and max(curve.rates) == pytest.approx(0.01)
    assert curve.epochs[-1] == pytest.approx((RUN.total_steps - 1) / 23)


def test_a_long_run_is_sampled_to_a_few_hundred_points_keeping_the_peak() -> None:
    run = RunShape(1000, 100)
    params = {**WARM, "decay_steps": 90_000, "warmup_steps": 10_001}
    curve = trial_curve("cosine", params, recorded("cosine", params, run), run)
    assert len(curve.epochs) <= MAX_POINTS + 1
    assert max(curve.rates) == pytest.approx(0.01) and curve.rates[0] == 0.0
    assert curve.epochs[-1] == pytest.approx(999.99)
    assert sample(10, 500) == list(range(10))
    picked = sample(100_000, 5, keep=[7, 200_000])
    assert picked[0] == 0 and picked[-1] == 99_999 and 7 in picked and len(picked) == 6


def test_callback_strategies_draw_their_recorded_rates_as_steps() -> None:
    plateau = {"initial_lr": 0.1, "factor": 0.5, "patience": 1, "min_lr": 1e-5, "cooldown": 0}
    rates = [0.1, 0.1, 0.05, 0.05, 0.025]
    curve = trial_curve("plateau", plateau, rates, RUN)
    assert curve.stepped and curve.epochs == [0, 1, 2, 3, 4, 5]
    assert curve.rates == [*rates, 0.025]
    step = {"initial_lr": 0.1, "drop": 0.5, "every": 2}
    assert trial_curve("step", step, recorded("step", step), RUN).stepped


def test_a_run_shape_that_disagrees_with_the_record_falls_back_to_it() -> None:
    params = {"initial_lr": 0.01, "decay_steps": 100, "decay_rate": 0.5, "staircase": False}
    rates = recorded("exponential", params)
    assert not trial_curve("exponential", params, rates, RUN).stepped
    wrong = RunShape(RUN.epochs, RUN.steps_per_epoch * 2)
    assert trial_curve("exponential", params, rates, wrong) == recorded_curve(rates)
    assert trial_curve("exponential", params, rates, None).stepped
    assert trial_curve("gone", {}, rates, RUN).stepped  # an unknown strategy id
    assert trial_curve("exponential", {}, rates, RUN).stepped  # parameters missing


def test_the_axis_is_linear_unless_rates_span_decades_without_zero() -> None:
    def curve(*rates: float) -> object:
        return recorded_curve(list(rates))

    assert not log_scale([curve(0.0, 0.01)])  # a warm-up from 0
    assert not log_scale([curve(0.01, 0.001)])
    assert log_scale([curve(0.1, 1e-4)])
    assert not log_scale([curve(0.1, math.nan, 0.05)])


def lr_trials() -> list[PlotTrial]:
    const = {"initial_lr": 0.003}
    plateau = {"initial_lr": 0.01, "factor": 0.5, "patience": 2, "min_lr": 1e-6, "cooldown": 0}
    return [
        PlotTrial(3, 0.12, "cosine", recorded("cosine", WARM), [], WARM),
        PlotTrial(4, 0.2, "constant", recorded("constant", const), [], const),
        PlotTrial(12, 0.22, "plateau", [0.01] * 10 + [0.005] * 10, [], plateau),
    ]


def test_the_lr_figure_shows_steps_in_epochs_on_a_linear_axis() -> None:
    axes = draw("lr", lr_trials(), PlotOptions(k=3, run=RUN)).axes[0]
    assert axes.get_yscale() == "linear" and axes.get_ylim()[0] == 0.0
    assert axes.get_xlim() == (0.0, 20.0)
    ticks = [t for t in axes.get_xticks() if 0 <= t <= 20]
    assert all(float(t).is_integer() for t in ticks)
    labels = [line.get_label() for line in axes.lines]
    assert labels == ["#3 cosine (0.12)", "#4 constant (0.2)", "#12 plateau (0.22)"]
    cosine, _, plateau = axes.lines
    assert len(cosine.get_xdata()) == RUN.total_steps and cosine.get_ydata()[0] == 0.0
    assert plateau.get_drawstyle() == "steps-post"
    one = draw("lr", lr_trials(), PlotOptions(k=1, run=RUN)).axes[0]
    assert len(one.lines) == 1 and one.get_xlim() == (0.0, 20.0)  # to the last whole epoch


def test_the_range_figure_marks_the_edge_and_the_searched_range() -> None:
    plan = RangePlan(60)
    rates = [plan.rate(i) for i in range(60)]
    losses = [2.0 - math.log10(r / 1e-6) * 0.2 if r < 0.05 else 50 * r for r in rates]
    found = read(rates, losses)
    assert found.edge is not None and found.low is not None and found.high is not None
    axes = draw("range", [], PlotOptions(lr_range=found)).axes[0]
    assert axes.get_xscale() == "log"
    assert [line.get_label() for line in axes.lines][:2] == ["loss per step", "smoothed loss"]
    edge = axes.lines[2]
    assert list(edge.get_xdata()) == [found.edge, found.edge]
    assert any(found.low == pytest.approx(p.get_x()) for p in axes.patches)
    top = axes.get_ylim()[1]
    assert top < max(losses)  # the blown-up end does not squash the curve
    with pytest.raises(NothingToPlot):
        draw("range", [], PlotOptions())
    assert range_ylim([1.0], [math.inf]) is None
