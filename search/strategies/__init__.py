"""The registry of LR strategies: one module per family, looked up by id."""

from __future__ import annotations

from search.strategies.base import PARAM_BOUNDS, Param, Params, RunShape, Strategy
from search.strategies.constant import Constant
from search.strategies.cosine import Cosine
from search.strategies.cosine_restarts import CosineRestarts
from search.strategies.exponential import Exponential
from search.strategies.export import Export
from search.strategies.inverse_time import InverseTime
from search.strategies.linear import LinearToZero
from search.strategies.one_cycle import OneCycle
from search.strategies.piecewise import Piecewise
from search.strategies.plateau import Plateau
from search.strategies.polynomial import Polynomial
from search.strategies.step import StepDecay
from search.strategies.wsd import WarmupStableDecay

_REGISTRY: dict[str, Strategy] = {
    s.id: s
    for s in (
        Constant(),
        Exponential(),
        Piecewise(),
        Cosine(),
        CosineRestarts(),
        InverseTime(),
        Polynomial(),
        StepDecay(),
        Plateau(),
        LinearToZero(),
        WarmupStableDecay(),
        OneCycle(),
    )
}
STRATEGY_IDS: tuple[str, ...] = tuple(_REGISTRY)


def get_strategy(strategy_id: str) -> Strategy:
    """The strategy with this id; KeyError names the known ids."""
    try:
        return _REGISTRY[strategy_id]
    except KeyError:
        raise KeyError(
            f"unknown strategy {strategy_id!r}; known: {', '.join(STRATEGY_IDS)}"
        ) from None


__all__ = [
    "PARAM_BOUNDS",
    "STRATEGY_IDS",
    "Export",
    "Param",
    "Params",
    "RunShape",
    "Strategy",
    "get_strategy",
]
