"""One graph call per epoch for K members: the same batches, K rates, K sets of metrics.

Why: `search.training.epoch_loop` made a solo trial one graph call per epoch; here that one
call trains a whole population. The batches are the solo trial's (`epoch_orders` for the
seed). Each member's rate at every step is its own schedule's: a scheduled member's rates
for the whole run are played once at the start (`SwitchSchedule.over`, one branch call per
epoch, each epoch's first rate computed exactly as a solo optimizer computes it), a member
on a constant or callback-driven rate reads its own base rate each epoch. The graph holds no
schedule, so tracing it does not grow with K. The logs are per member with the names a solo
epoch gives (loss, accuracy/mae, val_...). The loss differentiated is the sum of the
members' mean losses: members share no weights, so each one's gradient is its own.

`active` masks members that ended (pruned, diverged, stopped): their rate is 0 and their
loss leaves the sum, so they stop moving; the graph keeps its K slots (no retrace).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from search.training.epoch_loop import epoch_orders
from search.training.lr_graph import SwitchSchedule
from search.training.population.optim import StackedOptimizer
from search.training.population.stacked import Layer, StackedNet, member_losses


class PopulationLoop:
    """Trains K members of one model on fixed arrays; reusable across populations."""

    def __init__(
        self,
        layers: list[Layer],
        shapes: list[tuple[int, ...]],
        k: int,
        optimizer: dict[str, Any],
        data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        batch_size: int,
        classification: bool,
        metric: str,
    ) -> None:
        self.k = k
        self.net = StackedNet(layers, shapes, k)
        self.optimizer = StackedOptimizer(optimizer, self.net.variables)
        # each member's own schedule: its base rate, which its LR callbacks drive
        self.schedules = [SwitchSchedule() for _ in range(k)]
        self._planner = SwitchSchedule()  # plays each scheduled member's rates ahead
        self._plan = tf.function(  # one trace for every number of epochs
            self._plan_rates, autograph=False, input_signature=[tf.TensorSpec([None], tf.int64)]
        )
        self._tables: list[np.ndarray | None] = [None] * k
        self._steps = -(-int(data[0].shape[0]) // batch_size)
        self._x, self._y, self._x_val, self._y_val = (tf.identity(a) for a in data)
        self._batch = batch_size
        self._val_batch = max(batch_size, 1024)
        self._classification = classification
        self._metric = metric
        self._epoch = tf.function(self._run_epoch, autograph=False, reduce_retracing=True)
        # the steps compiled by XLA where the net suits it (fused elementwise work: 2-3x faster
        # per step on CPU for the digits MLP); the rates stay outside, evaluated exactly as solo
        jit = self.net.suits_xla
        self._train_step = tf.function(self._train, autograph=False, jit_compile=jit)
        self._test_step = tf.function(self._batch_losses, autograph=False, jit_compile=jit)
        self._reset = tf.function(self.optimizer.reset, autograph=False)
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self.epochs_run = 0  # fused epochs trained so far (what a test or benchmark reads)

    def restart(
        self, members: list[list[np.ndarray]], exports: list[dict[str, Any]], epochs: int
    ) -> None:
        """A new population: each member's initial weights and schedule, a fresh optimizer.
        A scheduled member's rates for the whole run are played here, one graph call each;
        a member on a constant or callback-driven rate reads its base rate every epoch."""
        padded = members + [members[-1]] * (self.k - len(members))
        self.net.load(padded)
        self._reset()
        starts = tf.range(epochs, dtype=tf.int64) * self._steps
        self._tables = [None] * self.k
        for slot, export in enumerate(exports):
            self.schedules[slot].load(export)
            if export.get("schedule"):
                self._planner.load(export)
                self._tables[slot] = self._plan(starts).numpy()

    def _plan_rates(self, starts: tf.Tensor) -> tf.Tensor:
        """[epochs, steps]: the planner's rates, one branch call per epoch; each epoch's
        first step (the rate recorded) exactly as a solo optimizer reads it."""
        steps = tf.range(self._steps, dtype=tf.int64)
        return tf.map_fn(
            lambda start: self._planner.over(start + steps),
            starts,
            fn_output_signature=tf.TensorSpec([self._steps], tf.float32),
        )

    def orders(self, seed: int, epochs: int) -> np.ndarray:
        key = (seed, epochs)
        if key not in self._orders:
            self._orders[key] = epoch_orders(int(self._x.shape[0]), seed, epochs)
        return self._orders[key]

    def epoch(
        self, epoch: int, order: np.ndarray, active: np.ndarray
    ) -> tuple[list[dict[str, float]], list[float]]:
        """Train one epoch; per member its logs and the rate the epoch started with."""
        rates = np.zeros((self._steps, self.k), dtype=np.float32)
        for slot, table in enumerate(self._tables):
            base = self.schedules[slot].base_lr.numpy()  # float32, as the graph reads it
            rates[:, slot] = base if table is None else table[epoch]
        values = self._epoch(tf.constant(order), tf.constant(rates), tf.constant(active))
        self.epochs_run += 1
        arrays = {name: v.numpy() for name, v in values.items()}
        logs = [{name: float(a[k]) for name, a in arrays.items()} for k in range(self.k)]
        return logs, [float(r) for r in rates[0]]

    def _run_epoch(
        self, order: tf.Tensor, rates: tf.Tensor, active: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """The epoch's logs per member; `rates` is [steps, K]."""
        n, n_steps = int(self._x.shape[0]), self._steps
        batch = self._batch

        def train(step: tf.Tensor, *totals: tf.Tensor) -> tuple[tf.Tensor, ...]:
            idx = order[step * batch : tf.minimum((step + 1) * batch, n)]
            x, y = tf.gather(self._x, idx), tf.gather(self._y, idx)
            size = tf.cast(tf.shape(idx)[0], tf.float32)
            loss, metric = self._train_step(x, y, rates[step] * active, active)
            return self._accumulate(step, totals, loss, metric, size)

        train_totals = self._loop(n_steps, train)
        with tf.control_dependencies(train_totals):
            val_totals = self._loop(-(-int(self._x_val.shape[0]) // self._val_batch), self._val)
        logs = {
            **self._results(train_totals, ""),
            **self._results(val_totals, "val_"),
        }
        return logs

    def _val(self, step: tf.Tensor, *totals: tf.Tensor) -> tuple[tf.Tensor, ...]:
        n, batch = int(self._x_val.shape[0]), self._val_batch
        start, end = step * batch, tf.minimum((step + 1) * batch, n)
        loss, metric = self._test_step(self._x_val[start:end], self._y_val[start:end])
        return self._accumulate(step, totals, loss, metric, tf.cast(end - start, tf.float32))

    def _train(
        self, x: tf.Tensor, y: tf.Tensor, rates: tf.Tensor, active: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One step of every member (Keras's train_step, K at once): their batch losses and
        metric sums, after the update. The loss differentiated leaves ended members out."""
        variables = self.net.variables
        with tf.GradientTape() as tape:
            loss, metric = self._batch_losses(x, y)
            total = tf.reduce_sum(tf.where(active > 0, loss, tf.zeros_like(loss)))
        grads = tape.gradient(total, variables)
        done = self.optimizer.apply(grads, variables, rates)
        with tf.control_dependencies([done]):
            return tf.identity(loss), tf.identity(metric)

    def _batch_losses(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per member: the batch's mean loss (Keras's sum over batch size) and the sum of
        the per example metric values."""
        per_example, metric = member_losses(self.net(x), y, self._classification)
        size = tf.cast(tf.shape(per_example)[1], per_example.dtype)
        return tf.reduce_sum(per_example, axis=1) / size, tf.reduce_sum(metric, axis=1)

    @staticmethod
    def _accumulate(
        step: tf.Tensor,
        totals: tuple[tf.Tensor, ...],
        loss: tf.Tensor,
        metric: tf.Tensor,
        size: tf.Tensor,
    ) -> tuple[tf.Tensor, ...]:
        """Keras's Mean trackers: the loss weighted by batch size, the metric per example
        (`metric` is the batch's sum)."""
        loss_sum, loss_count, metric_sum, metric_count = totals
        return (
            step + 1,
            loss_sum + loss * size,
            loss_count + size,
            metric_sum + metric,
            metric_count + size,
        )

    def _loop(self, n_steps: int, body: Any) -> tuple[tf.Tensor, ...]:
        zeros = tf.zeros([self.k])
        start = (tf.constant(0), zeros, tf.constant(0.0), zeros, tf.constant(0.0))
        out = tf.while_loop(lambda s, *_: s < n_steps, body, start)
        return tuple(out[1:])

    def _results(self, totals: tuple[tf.Tensor, ...], prefix: str) -> dict[str, tf.Tensor]:
        loss_sum, loss_count, metric_sum, metric_count = totals
        return {
            f"{prefix}loss": tf.math.divide_no_nan(loss_sum, loss_count),
            f"{prefix}{self._metric}": tf.math.divide_no_nan(metric_sum, metric_count),
        }


__all__ = ["PopulationLoop"]
