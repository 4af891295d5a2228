"""Fit a compiled Keras model with one graph call per epoch, data held as tensors.

Why: on a small model Keras's `fit` spends most of a trial in Python, not in training: per
epoch it makes two dataset iterators, resets and reads every metric eagerly, runs `evaluate`
with its own callback bookkeeping, and hands each batch over from tf.data's threads. On the
digits MLP that was ~25 ms of Python per epoch against ~10 ms of compute, and the thread
hand-offs left two workers on two cores idle a third of the time. Here one `tf.function` runs
a whole epoch (Keras's own `train_step` per batch, then `test_step` over the validation data)
and returns the epoch's logs; Python only drives the callbacks, through Keras's `CallbackList`
with the same hooks and logs as `fit`.

Batches are the ones `fit` would see for `Dataset.shuffle(n, seed).batch(b)`: the per-epoch
orders are drawn from that very pipeline (shuffle draws depend only on the seed and the buffer
size), so a trial trains on exactly the batches a fresh model under `model.fit` gets (pinned by
tests/integration/test_epoch_loop.py and test_training.py).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

Logs = dict[str, float]


def epoch_orders(n: int, seed: int, epochs: int) -> np.ndarray:
    """[epochs, n] example indices: epoch e's order under `Dataset.shuffle(n, seed)` in `fit`.

    Keras 3's epoch iterator opens a new dataset iterator when an epoch ends and another when
    the next one begins, so epoch e sees the pipeline's (2e)-th reshuffle, not its e-th."""
    pipeline = tf.data.Dataset.range(n).shuffle(n, seed=seed).batch(n)
    drawn = [next(iter(pipeline)).numpy() for _ in range(max(2 * epochs - 1, 0))]
    return np.asarray(drawn[::2], dtype=np.int32).reshape(epochs, n)


class EpochLoop:
    """Trains one compiled model on fixed arrays; reusable across trials of that model."""

    def __init__(
        self,
        model: keras.Model,
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        batch_size: int,
        val_batch_size: int,
    ) -> None:
        self.model = model
        # identity places the arrays on the default device (a GPU when there is one) once
        self._x, self._y = (tf.identity(a) for a in train)
        self._x_val, self._y_val = (tf.identity(a) for a in val)
        self._batch = batch_size
        self._val_batch = val_batch_size
        self._epoch = tf.function(self._run_epoch, autograph=False, reduce_retracing=True)
        self._orders: dict[tuple[int, int], np.ndarray] = {}
        self.epoch_rate = float("nan")  # the learning rate the last epoch started with
        self._variables = [*model.weights, *model.optimizer.variables]
        self._initial = [tf.identity(v) for v in self._variables]  # copies, taken now
        self._restart = tf.function(self._assign_initial, autograph=False)

    def restart(self, weights: list[np.ndarray] | None = None) -> None:
        """Weights and optimizer state back to their values when the loop was made, in one
        graph call (a new trial starts where a freshly built, seeded model would); with
        `weights`, the model then starts from those instead (another seed's initial weights)."""
        self._restart()
        if weights is not None:
            self.model.set_weights(weights)

    def _assign_initial(self) -> None:
        for var, value in zip(self._variables, self._initial, strict=True):
            var.assign(value)

    def fit(self, *, epochs: int, seed: int, callbacks: list[Any], initial_epoch: int = 0) -> Logs:
        """`model.fit(train, validation_data=val, epochs=..., initial_epoch=...)`, same hooks."""
        model = self.model
        orders = self._orders_for(seed, epochs)
        hooks = keras.callbacks.CallbackList(callbacks, model=model)
        model.stop_training = False
        hooks.on_train_begin()
        logs: Logs = {}
        for epoch in range(initial_epoch, epochs):
            hooks.on_epoch_begin(epoch)
            values, rate = self._epoch(orders[epoch])
            logs = {k: float(v) for k, v in values.items()}
            self.epoch_rate = float(rate)
            hooks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        hooks.on_train_end(logs)
        return logs

    def step_losses(self, seed: int, steps: int) -> list[float]:
        """Train the next `steps` batches (fit's order for `seed`, epoch after epoch) and
        return each batch's own loss (for the range test; NaN once the loss is not finite)."""
        n = int(self._x.shape[0])
        per_epoch = -(-n // self._batch)
        orders = self._orders_for(seed, -(-steps // per_epoch))
        for metric in self.model.metrics:
            metric.reset_state()
        losses: list[float] = []
        seen, mean = 0, 0.0
        for step in range(steps):
            epoch, index = divmod(step, per_epoch)
            idx = orders[epoch][index * self._batch : (index + 1) * self._batch]
            running = float(self._train_batch(tf.constant(idx)))
            size = len(idx)
            loss = (running * (seen + size) - mean * seen) / size  # the tracker is a mean
            seen, mean = seen + size, running
            losses.append(loss if np.isfinite(loss) else float("nan"))
            if not np.isfinite(loss):
                break
        return losses

    def _train_batch(self, idx: tf.Tensor) -> tf.Tensor:
        if not hasattr(self, "_one_batch"):
            self._one_batch = tf.function(self._batch_step, autograph=False, reduce_retracing=True)
        return self._one_batch(idx)

    def _batch_step(self, idx: tf.Tensor) -> tf.Tensor:
        logs = self.model.train_step((tf.gather(self._x, idx), tf.gather(self._y, idx)))
        return tf.identity(logs["loss"])

    def _orders_for(self, seed: int, epochs: int) -> np.ndarray:
        key = (seed, epochs)
        if key not in self._orders:
            self._orders[key] = epoch_orders(int(self._x.shape[0]), seed, epochs)
        return self._orders[key]

    def _run_epoch(self, order: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """The epoch's logs, and the learning rate it started with (read here, in the same
        graph call: reading it eagerly was a second call per epoch)."""
        model = self.model
        rate = tf.identity(model.optimizer.learning_rate)
        with tf.control_dependencies([rate]):
            train = self._steps(self._x, self._y, self._batch, model.train_step, order)
        with tf.control_dependencies(list(train.values())):
            val = self._steps(self._x_val, self._y_val, self._val_batch, model.test_step)
        return {**train, **{f"val_{k}": v for k, v in val.items()}}, rate

    def _steps(
        self, x: tf.Tensor, y: tf.Tensor, batch: int, step_fn: Any, order: Any = None
    ) -> dict[str, tf.Tensor]:
        """Reset the metrics, run `step_fn` over every batch (taken in `order` when given),
        return the metrics' results."""
        model = self.model
        for metric in model.metrics:
            metric.reset_state()
        n = int(x.shape[0])
        n_steps = -(-n // batch)

        def body(step: tf.Tensor) -> tuple[tf.Tensor]:
            start = step * batch
            end = tf.minimum(start + batch, n)
            if order is None:
                step_fn((x[start:end], y[start:end]))
            else:
                idx = order[start:end]
                step_fn((tf.gather(x, idx), tf.gather(y, idx)))
            return (step + 1,)

        (done,) = tf.while_loop(lambda s: s < n_steps, body, (tf.constant(0),))
        with tf.control_dependencies([done]):
            results: dict[str, tf.Tensor] = {}
            for metric in model.metrics:
                result = metric.result()
                if isinstance(result, dict):
                    results.update({k: tf.identity(v) for k, v in result.items()})
                else:
                    results[metric.name] = tf.identity(result)
        return results
