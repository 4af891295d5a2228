"""The range test's plan and reading, on curves whose edge is known."""

from __future__ import annotations

import math

import pytest

from search.lr_range import (
    CEILING,
    FLOOR,
    LOW_DIVISOR,
    MAX_STEPS,
    RangePlan,
    RangeResult,
    plan_for,
    read,
)


def test_the_plan_sweeps_from_start_to_end_and_costs_at_most_a_third_of_a_trial() -> None:
    plan = RangePlan(100)
    assert plan.rate(0) == pytest.approx(1e-6) and plan.rate(99) == pytest.approx(10.0)
    assert plan_for(10_000) == RangePlan(MAX_STEPS)
    assert plan_for(90) == RangePlan(30)
    assert plan_for(40) is None  # too short to afford one


def _curve(edge: float, steps: int = 100) -> tuple[list[float], list[float]]:
    """A loss falling until `edge`, then blowing up (a quadratic bowl in log rate)."""
    plan = RangePlan(steps)
    rates = [plan.rate(i) for i in range(steps)]
    losses = [
        2.0 - 1.5 * min(1.0, r / edge) + 50 * max(0.0, math.log10(r / edge)) ** 2 for r in rates
    ]
    return rates, losses


def test_the_range_ends_at_the_edge_of_stability_and_spans_the_divisor() -> None:
    rates, losses = _curve(edge=0.03)
    result = read(rates, losses)
    assert result.edge is not None and 0.01 < result.edge < 0.06
    assert result.high == pytest.approx(result.edge)
    assert result.low == pytest.approx(result.edge / LOW_DIVISOR)


def test_ranges_stay_within_the_floor_and_ceiling() -> None:
    high = read(*_curve(edge=5.0))
    assert high.high == CEILING
    low = read(*_curve(edge=1e-4))
    assert low.low == FLOOR and low.high is not None and low.high > low.low


def test_a_curve_that_only_rises_or_diverges_at_once_gives_no_range() -> None:
    plan = RangePlan(50)
    rates = [plan.rate(i) for i in range(50)]
    assert read(rates, [1.0 + i for i in range(50)]).low is None
    assert read(rates, [math.nan]).edge is None
    flat = [1.0 - 0.001 * i for i in range(40)] + [10.0] * 10  # never learned: no edge
    assert read(rates, flat).edge is None


def test_results_round_trip_through_stored_attributes() -> None:
    result = read(*_curve(edge=0.03))
    again = RangeResult.from_attrs(result.as_attrs())
    assert (again.edge, again.low, again.high) == (result.edge, result.low, result.high)
    assert again.rates == result.rates
