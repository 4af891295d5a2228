"""One LearningRateSchedule that can play every strategy, its parameters held in variables.

Why: compiling a Keras model costs about as much as training a small one. With this schedule a
compiled model is reused across trials of every strategy: a trial only assigns variables. Each
branch is the real Keras schedule class (built on variables), so the rate applied is Keras's own
formula, and callback strategies (LearningRateScheduler, ReduceLROnPlateau) drive `base_lr`
through a small optimizer view instead of the optimizer's (schedule-backed) rate.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from search.strategies.custom_schedules import WARMUP_STABLE_DECAY

MAX_BOUNDARIES = 4
_FAR = 2**40  # a boundary that is never reached: pads short piecewise schedules

_NUMERIC: dict[str, tuple[str, ...]] = {
    "ExponentialDecay": ("initial_learning_rate", "decay_steps", "decay_rate"),
    "InverseTimeDecay": ("initial_learning_rate", "decay_steps", "decay_rate"),
    "PolynomialDecay": ("initial_learning_rate", "decay_steps", "end_learning_rate", "power"),
    "CosineDecay": (
        "initial_learning_rate",
        "decay_steps",
        "alpha",
        "warmup_target",
        "warmup_steps",
    ),
    "CosineDecayRestarts": (
        "initial_learning_rate",
        "first_decay_steps",
        "t_mul",
        "m_mul",
        "alpha",
    ),
}
_FLAG: dict[str, str] = {
    "ExponentialDecay": "staircase",
    "InverseTimeDecay": "staircase",
    "PolynomialDecay": "cycle",
}
#: lrsearch's own schedule: numeric fields in variables, its shapes as one-hot weights, so
#: one branch plays every shape (a branch per shape pair tripled the graph's tracing time).
_WSD_NUMERIC = ("peak_lr", "warmup_steps", "stable_steps", "decay_steps", "start_lr", "end_lr")
_WSD_UP = ("linear", "cosine")
_WSD_DOWN = ("linear", "cosine", "1-sqrt")


def _var(value: float, dtype: Any = tf.float32) -> tf.Variable:
    return tf.Variable(value, dtype=dtype, trainable=False)


class SwitchSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Dispatches on `branch` to one of the Keras built-in schedules (or to `base_lr`)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.base_lr = _var(1e-3)
        self._slots: dict[tuple[str, bool], tuple[int, dict[str, tf.Variable]]] = {}
        self._fns: list[Any] = [lambda step: tf.identity(self.base_lr)]
        for cls_name, fields in _NUMERIC.items():
            for flag in (False, True) if cls_name in _FLAG else (False,):
                self._add_slot(cls_name, flag, {f: _var(1.0) for f in fields})
        self._boundaries = [
            tf.Variable(_FAR, dtype=tf.int64, trainable=False) for _ in range(MAX_BOUNDARIES)
        ]
        self._values = [_var(1e-3) for _ in range(MAX_BOUNDARIES + 1)]
        piecewise = keras.optimizers.schedules.PiecewiseConstantDecay(
            self._boundaries, self._values
        )
        self._slots[("PiecewiseConstantDecay", False)] = (len(self._fns), {})
        self._fns.append(piecewise)
        self._wsd = _ShapedWarmupStableDecay()
        self._slots[(WARMUP_STABLE_DECAY, False)] = (len(self._fns), self._wsd.numeric)
        self._fns.append(self._wsd)

    def _add_slot(self, cls_name: str, flag: bool, variables: dict[str, tf.Variable]) -> None:
        cls = getattr(keras.optimizers.schedules, cls_name)
        kwargs: dict[str, Any] = dict(variables)
        if cls_name in _FLAG:
            kwargs[_FLAG[cls_name]] = flag
        self._slots[(cls_name, flag)] = (len(self._fns), variables)
        self._fns.append(cls(**kwargs))

    def __call__(self, step: Any) -> Any:
        step = tf.cast(step, tf.int64)  # int64 like optimizer.iterations, so padded bounds fit
        branches = [lambda fn=fn: tf.cast(fn(step), tf.float32) for fn in self._fns]
        return tf.switch_case(tf.convert_to_tensor(self.branch), branches)

    def over(self, steps: Any) -> Any:
        """The rates at a vector of int64 steps, in one branch call (a fused population plays
        its members' runs this way: a call per step was most of its epoch). The
        first step is computed alone, exactly as `__call__` computes it; on the others,
        vector math may round cos and pow differently: within 1e-6 relative."""

        def vector(fn: Any, at: Any) -> Any:
            if isinstance(fn, keras.optimizers.schedules.CosineDecay):
                return _cosine_over(fn, at)  # Keras's one uses a scalar `cond`
            return tf.cast(fn(at), tf.float32) + tf.zeros(tf.shape(at), tf.float32)

        def both(fn: Any) -> Any:
            first = tf.reshape(tf.cast(fn(steps[0]), tf.float32), [1])
            return tf.concat([first, vector(fn, steps[1:])], axis=0)

        branches = [lambda fn=fn: both(fn) for fn in self._fns]
        return tf.switch_case(tf.convert_to_tensor(self.branch), branches)

    def load(self, export: dict[str, Any]) -> None:
        """Play the strategy described by an export (schedule config or a plain initial rate)."""
        self.base_lr.assign(float(export["initial_lr"]))
        schedule = export.get("schedule")
        if not schedule:
            self.branch.assign(0)
            return
        cls_name, cfg = schedule["class_name"], dict(schedule["config"])
        index, variables = self._slots[(cls_name, bool(cfg.get(_FLAG.get(cls_name, ""), False)))]
        if cls_name == WARMUP_STABLE_DECAY:
            self._wsd.load_shapes(cfg["warmup_shape"], cfg["decay_shape"])
        if cls_name == "PiecewiseConstantDecay":
            self._load_piecewise(cfg["boundaries"], cfg["values"])
        if cls_name == "CosineDecay" and cfg.get("warmup_target") is None:
            cfg["warmup_target"], cfg["warmup_steps"] = cfg["initial_learning_rate"], 0
        for name, var in variables.items():
            var.assign(float(cfg[name]))
        self.branch.assign(index)

    def _load_piecewise(self, boundaries: list[int], values: list[float]) -> None:
        if len(boundaries) > MAX_BOUNDARIES:
            raise ValueError(f"at most {MAX_BOUNDARIES} boundaries are supported")
        padded_b = list(boundaries) + [_FAR] * (MAX_BOUNDARIES - len(boundaries))
        padded_v = list(values) + [values[-1]] * (MAX_BOUNDARIES + 1 - len(values))
        for var, b in zip(self._boundaries, padded_b, strict=True):
            var.assign(int(b))
        for var, v in zip(self._values, padded_v, strict=True):
            var.assign(float(v))

    def get_config(self) -> dict[str, Any]:
        return {}


def _cosine_over(fn: Any, steps: Any) -> Any:
    """Keras's CosineDecay.__call__ (with a warmup target, as loaded here) on a vector of
    steps: its two branches computed with its own functions, then selected elementwise."""
    initial = tf.convert_to_tensor(fn.initial_learning_rate)
    dtype = initial.dtype
    decay_steps = tf.cast(fn.decay_steps, dtype)
    target = tf.cast(fn.warmup_target, dtype)
    warmup_steps = tf.cast(fn.warmup_steps, dtype)
    step = tf.minimum(tf.cast(steps, dtype), decay_steps + warmup_steps)
    rising = fn._warmup_function(step, warmup_steps, target, initial)
    falling = fn._decay_function(step - warmup_steps, decay_steps, target, dtype)
    return tf.cast(tf.where(step < warmup_steps, rising, falling), tf.float32)


class _ShapedWarmupStableDecay:
    """`WarmupStableDecay` (search.strategies.custom_schedules) on variables, its shapes
    chosen by one-hot weights: w * x + 0 * y is exactly x, so every shape gives exactly the
    exported class's float32 rate (pinned by tests/integration/test_strategy_keras.py)."""

    def __init__(self) -> None:
        self.numeric = {f: _var(1.0) for f in _WSD_NUMERIC}
        self.up = {s: _var(0.0) for s in _WSD_UP}
        self.down = {s: _var(0.0) for s in _WSD_DOWN}

    def load_shapes(self, warmup_shape: str, decay_shape: str) -> None:
        for name, var in self.up.items():
            var.assign(1.0 if name == warmup_shape else 0.0)
        for name, var in self.down.items():
            var.assign(1.0 if name == decay_shape else 0.0)

    def __call__(self, step: Any) -> Any:
        v = self.numeric
        step = tf.cast(step, tf.float32)
        warmup, stable, decay = v["warmup_steps"], v["stable_steps"], v["decay_steps"]
        up = tf.clip_by_value(step / tf.maximum(warmup, 1.0), 0.0, 1.0)
        up = self.up["linear"] * up + self.up["cosine"] * (0.5 * (1.0 - tf.cos(math.pi * up)))
        down = tf.clip_by_value((step - warmup - stable) / tf.maximum(decay, 1.0), 0.0, 1.0)
        left = (
            self.down["linear"] * (1.0 - down)
            + self.down["cosine"] * (0.5 * (1.0 + tf.cos(math.pi * down)))
            + self.down["1-sqrt"] * (1.0 - tf.sqrt(down))
        )
        peak, start, end = v["peak_lr"], v["start_lr"], v["end_lr"]
        rising = start + (peak - start) * up
        falling = end + (peak - end) * left
        return tf.where(step < warmup, rising, falling)


class LrHandle:
    """Looks like an optimizer to LR callbacks, but reads and writes the schedule's base_lr."""

    def __init__(self, schedule: SwitchSchedule) -> None:
        self._schedule = schedule

    @property
    def learning_rate(self) -> tf.Variable:
        return self._schedule.base_lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._schedule.base_lr.assign(float(value))


class _ModelView:
    """The model as a callback sees it, with the optimizer swapped for an LrHandle."""

    def __init__(self, model: keras.Model, handle: LrHandle) -> None:
        self._model = model
        self.optimizer = handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class DrivenCallback(keras.callbacks.Callback):
    """Runs a stock LR callback's epoch hooks against the shared schedule's base_lr."""

    def __init__(self, inner: keras.callbacks.Callback, schedule: SwitchSchedule) -> None:
        super().__init__()
        self.inner = inner
        self._handle = LrHandle(schedule)

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self.inner.set_model(_ModelView(model, self._handle))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.inner.on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.inner.on_epoch_end(epoch, logs)
