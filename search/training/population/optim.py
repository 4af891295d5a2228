"""Keras's optimizers written on stacked variables, with one learning rate per member.

Why: the K members of a population share their step count but each has its own rate (its
own schedule) and its own optimizer state. The formulas are Keras 3's own (keras/src/
optimizers/adam.py, adamw.py via base_optimizer's weight decay, sgd.py, rmsprop.py), in the
same order and float32, with the rate broadcast over each member's slice; the
hyperparameters are read from the very optimizer a solo trial makes (`make_optimizer`).

A member whose rate is 0 does not move (Adam's step and AdamW's decay are both scaled by the
rate): that is how a pruned, diverged or stopped member is masked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from search.training.keras_export import make_optimizer

#: The slots each optimizer keeps per weight, in the order Keras lists its `variables`.
_SLOTS = {"Adam": ("momentum", "velocity"), "AdamW": ("momentum", "velocity")}


def supported(config: dict[str, Any]) -> bool:
    """True when the stacked update reproduces this optimizer (the spec's four, without
    Keras's rarer variants: AMSGrad, Nesterov, centered or momentum RMSprop, clipping)."""
    try:
        opt = make_optimizer(config, 1e-3)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
    name = type(opt).__name__
    if name not in ("Adam", "AdamW", "SGD", "RMSprop"):
        return False
    if any(getattr(opt, a, None) for a in ("clipnorm", "clipvalue", "global_clipnorm")):
        return False
    if getattr(opt, "use_ema", False) or getattr(opt, "amsgrad", False):
        return False
    if name == "SGD" and opt.nesterov:
        return False
    if name == "RMSprop" and (opt.centered or opt.momentum > 0):
        return False
    return name == "AdamW" or opt.weight_decay is None


class StackedOptimizer:
    """One optimizer state per member, every member's update in the same few ops."""

    def __init__(self, config: dict[str, Any], variables: list[tf.Variable]) -> None:
        opt = make_optimizer(config, 1e-3)
        self.kind = type(opt).__name__
        self._opt = opt
        if self.kind in _SLOTS:
            self.slot_names: tuple[str, ...] = _SLOTS[self.kind]
        elif self.kind == "SGD":
            self.slot_names = ("momentum",) if opt.momentum != 0 else ()
        else:
            self.slot_names = ("velocity",)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._compiled = tf.function(self._apply, autograph=False, jit_compile=True)
        self.slots = {
            name: [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
            for name in self.slot_names
        }

    def all_variables(self) -> list[tf.Variable]:
        return [self.iterations, *(v for name in self.slot_names for v in self.slots[name])]

    def reset(self) -> None:
        """Back to a fresh optimizer: step 0, every slot zero (called inside a graph)."""
        self.iterations.assign(0)
        for name in self.slot_names:
            for var in self.slots[name]:
                var.assign(tf.zeros_like(var))

    def member_state(self, k: int) -> list[np.ndarray]:
        """Member k's optimizer variables in the order the solo optimizer's `variables` has
        them (iteration, then per weight its slots): what a solo checkpoint holds."""
        state = [np.asarray(self.iterations.numpy())]
        for i in range(len(next(iter(self.slots.values()), []))):
            state.extend(np.asarray(self.slots[name][i][k].numpy()) for name in self.slot_names)
        return state

    def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable], rates: tf.Tensor) -> Any:
        """One step for every member: `rates` is [K], each member's own learning rate.
        Compiled by XLA: its many small elementwise ops fuse into a few loops."""
        return self._compiled(grads, variables, rates)

    def _apply(self, grads: list[tf.Tensor], variables: list[tf.Variable], rates: tf.Tensor) -> Any:
        updates = []
        for i, (grad, var) in enumerate(zip(grads, variables, strict=True)):
            lr = tf.reshape(rates, [-1] + [1] * (var.shape.rank - 1))
            updates.append(self._update(i, grad, var, lr))
        with tf.control_dependencies(updates):
            return self.iterations.assign_add(1)

    def _update(self, i: int, grad: tf.Tensor, var: tf.Variable, lr: tf.Tensor) -> Any:
        opt = self._opt
        if self.kind in ("Adam", "AdamW"):
            if self.kind == "AdamW":  # base_optimizer's decay, before the step, same rate
                wd = tf.cast(opt.weight_decay, var.dtype)
                var.assign_sub(var * wd * lr)
            m, v = self.slots["momentum"][i], self.slots["velocity"][i]
            local_step = tf.cast(self.iterations + 1, var.dtype)
            beta_1_power = tf.pow(tf.cast(opt.beta_1, var.dtype), local_step)
            beta_2_power = tf.pow(tf.cast(opt.beta_2, var.dtype), local_step)
            alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            m.assign_add(tf.multiply(tf.subtract(grad, m), 1 - opt.beta_1))
            v.assign_add(tf.multiply(tf.subtract(tf.square(grad), v), 1 - opt.beta_2))
            return var.assign_sub(tf.divide(tf.multiply(m, alpha), tf.sqrt(v) + opt.epsilon))
        if self.kind == "SGD":
            if not self.slot_names:
                return var.assign_sub(tf.multiply(grad, lr))
            m = self.slots["momentum"][i]
            momentum = tf.cast(opt.momentum, var.dtype)
            m.assign(tf.subtract(tf.multiply(m, momentum), tf.multiply(grad, lr)))
            return var.assign_add(m)
        velocity = self.slots["velocity"][i]
        rho = opt.rho
        velocity.assign(tf.multiply(rho, velocity) + tf.multiply(1 - rho, tf.square(grad)))
        increment = tf.divide(tf.multiply(lr, grad), tf.sqrt(tf.add(velocity, opt.epsilon)))
        return var.assign_sub(increment)


__all__ = ["StackedOptimizer", "supported"]
