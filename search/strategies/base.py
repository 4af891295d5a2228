"""What every LR strategy is: a search space, constraints, a Keras build, a plain-Python curve
and an export. Pure Python: Keras objects are built from the export by
`search.training.keras_export`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from search.errors import StrategyError
from search.strategies.export import Export, python_snippet, restore_best_callback

Params = dict[str, Any]


@dataclass(frozen=True)
class RunShape:
    """How long one trial trains: the unit every step-based constraint is written in."""

    epochs: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class ParamBounds:
    """Hard bounds of one parameter (what is legal at all) and its default search range."""

    kind: Literal["float", "int", "bool"]
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    default_low: float = 0.0
    default_high: float = 1.0
    log: bool = False

    def problems(self, value: float) -> list[str]:
        """Why `value` is outside the hard bounds (empty when it is fine)."""
        if isinstance(value, float) and not math.isfinite(value):
            return ["must be a finite number"]
        too_low = value <= self.low if self.low_open else value < self.low
        too_high = value >= self.high if self.high_open else value > self.high
        if too_low or too_high:
            return [f"must lie in {self.describe()}, got {value:g}"]
        return []

    def range_problems(self, low: float, high: float, log: bool) -> list[str]:
        """Why a user's range override is unusable."""
        if self.kind == "bool":
            return ["a boolean parameter has no range"]
        out = [f"low {m}" for m in self.problems(low)] + [f"high {m}" for m in self.problems(high)]
        if not low < high:
            out.append(f"low ({low:g}) must be below high ({high:g})")
        if self.kind == "int" and (low != int(low) or high != int(high)):
            out.append("an integer parameter needs integer bounds")
        if log and low <= 0:
            out.append("a log range needs low > 0")
        return out

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"


_BIG = 1e9
PARAM_BOUNDS: dict[str, ParamBounds] = {
    "initial_lr": ParamBounds(
        "float", 0, 10, low_open=True, default_low=1e-4, default_high=1e-1, log=True
    ),
    "decay_steps": ParamBounds("int", 1, _BIG),
    "decay_rate": ParamBounds("float", 0, 1, True, True, 0.05, 0.95),
    "staircase": ParamBounds("bool", 0, 1),
    "drop": ParamBounds("float", 0, 1, True, True, 0.1, 0.7),
    "n_boundaries": ParamBounds("int", 1, 4, default_low=1, default_high=4),
    "alpha": ParamBounds("float", 0, 1, high_open=True, default_low=0.0, default_high=0.3),
    "warmup_steps": ParamBounds("int", 0, _BIG),
    "t_mul": ParamBounds("float", 1, 4, default_low=1.0, default_high=2.0),
    "m_mul": ParamBounds("float", 0, 1, low_open=True, default_low=0.5, default_high=1.0),
    "end_factor": ParamBounds("float", 0, 1, high_open=True, default_low=0.0, default_high=0.1),
    "power": ParamBounds("float", 0, 10, low_open=True, default_low=0.5, default_high=3.0),
    "every": ParamBounds("int", 1, 10000, default_low=1, default_high=10),
    "factor": ParamBounds("float", 0, 1, True, True, 0.1, 0.7),
    "patience": ParamBounds("int", 0, 1000, default_low=0, default_high=5),
    "min_lr": ParamBounds("float", 0, 10, default_low=1e-7, default_high=1e-5, log=True),
    "cooldown": ParamBounds("int", 0, 1000, default_low=0, default_high=2),
    "decay_share": ParamBounds("float", 0, 1, low_open=True, default_low=0.1, default_high=0.3),
}


@dataclass(frozen=True)
class Param:
    """One searched parameter with the range used for this run."""

    name: str
    kind: Literal["float", "int", "bool"]
    low: float = 0.0
    high: float = 1.0
    log: bool = False


class Strategy(ABC):
    """One LR strategy family. Subclasses fill `id`, `param_names`, and the five methods."""

    id: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    description: ClassVar[str]

    def space(self, run: RunShape, overrides: dict[str, Any] | None = None) -> list[Param]:
        """The parameters searched for this run (defaults, narrowed by the run, then overrides)."""
        overrides = overrides or {}
        out = []
        for name in self.param_names:
            param = self._default_param(name, run)
            if name in overrides:
                o = overrides[name]
                low, high, log = _range_tuple(o)
                param = Param(name, param.kind, low, high, log)
            out.append(param)
        return out

    def _default_param(self, name: str, run: RunShape) -> Param:
        b = PARAM_BOUNDS[name]
        if name == "decay_steps":
            return Param(name, "int", max(1, run.total_steps // 10), max(2, run.total_steps), True)
        if name == "warmup_steps":
            return Param(name, "int", 0, max(1, run.total_steps // 5))
        if name == "every":
            return Param(name, "int", 1, max(2, run.epochs // 2))
        if name == "patience":
            return Param(name, "int", 0, max(1, min(5, run.epochs // 3)))
        return Param(name, b.kind, b.default_low, b.default_high, b.log)

    def check(self, params: Params, run: RunShape) -> None:
        """Raise StrategyError naming each parameter that breaks a bound or the run's length."""
        problems = []
        for name in self.param_names:
            if name not in params:
                problems.append(f"{name}: missing")
                continue
            if PARAM_BOUNDS[name].kind != "bool":
                problems += [f"{name}: {m}" for m in PARAM_BOUNDS[name].problems(params[name])]
        problems += self.run_problems(params, run) if not problems else []
        if problems:
            raise StrategyError(f"{self.id}: " + "; ".join(problems))

    def run_problems(self, params: Params, run: RunShape) -> list[str]:
        """Constraints that depend on the run (decay and warm-up no longer than it)."""
        out = []
        for name in ("decay_steps", "warmup_steps"):
            if name in params and params[name] > run.total_steps:
                out.append(
                    f"{name}: {params[name]} is longer than the run ({run.total_steps} steps)"
                )
        return out

    @abstractmethod
    def keras_schedule(self, params: Params, run: RunShape) -> dict[str, Any] | None:
        """The serialised Keras LearningRateSchedule, or None for a plain float rate."""

    def keras_callbacks(self, params: Params, run: RunShape, monitor: str) -> list[dict[str, Any]]:
        """Serialised callbacks that change the rate while training (none by default)."""
        return []

    @abstractmethod
    def lr_at(self, params: Params, run: RunShape, step: int, epoch: int) -> float:
        """The documented rate at a global step (schedules) or an epoch (callbacks)."""

    def lr_curve(self, params: Params, run: RunShape) -> list[float]:
        """The rate at the first step of each epoch, computed without TensorFlow."""
        return [
            float(self.lr_at(params, run, e * run.steps_per_epoch, e)) for e in range(run.epochs)
        ]

    def export(
        self,
        params: Params,
        run: RunShape,
        monitor: str = "val_loss",
        optimizer: dict[str, Any] | None = None,
        direction: str | None = None,
        *,
        best_mode: str | None = None,
        preprocess: dict[str, Any] | None = None,
    ) -> Export:
        """The Keras config and a Python snippet that rebuilds the optimizer and callbacks.

        With the objective's `direction`, a callback that watches `monitor` in mode "auto"
        gets "min" or "max": Keras cannot tell the direction of a custom metric by itself.
        `best_mode` ("min"/"max", from `objective.aggregate` = best) adds the EarlyStopping that
        ends a user's fit on the best epoch's weights; `preprocess` carries the statistics the
        data was standardised with (`search.data.preprocess`)."""
        self.check(params, run)
        optimizer = optimizer or {"class_name": "Adam", "config": {}}
        callbacks = self.keras_callbacks(params, run, monitor)
        if direction is not None:
            mode = "max" if direction == "maximize" else "min"
            for callback in callbacks:
                if callback.get("config", {}).get("mode") == "auto":
                    callback["config"]["mode"] = mode
        if best_mode is not None:
            callbacks.append(restore_best_callback(monitor, best_mode, run.epochs))
        export = Export(
            self.keras_schedule(params, run),
            callbacks,
            float(params["initial_lr"]),
            optimizer,
            preprocess=preprocess,
        )
        return replace(export, python=python_snippet(export))


def _range_tuple(o: Any) -> tuple[float, float, bool]:
    if isinstance(o, dict):
        return o["low"], o["high"], bool(o.get("log", False))
    return o.low, o.high, bool(o.log)
