"""The one-graph-per-epoch loop against Keras's own `fit`, on real models and data."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from search.data import Dataset, load_digits
from search.spec import MlpModel
from search.training.epoch_loop import EpochLoop, epoch_orders
from search.training.models import build_model, loss_and_metrics

pytestmark = pytest.mark.slow
BATCH = 64


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def compiled(digits: Dataset) -> keras.Model:
    keras.backend.clear_session()
    model = build_model(MlpModel(hidden=[32]), digits, 0)
    loss, metrics = loss_and_metrics(digits, model)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, metrics=metrics)
    return model


def loop_for(model: keras.Model, digits: Dataset) -> EpochLoop:
    model.optimizer.build(model.trainable_variables)
    model.evaluate(digits.x_val[:1], digits.y_val[:1], verbose=0)  # builds the metrics
    data = (digits.x_train, digits.y_train)
    return EpochLoop(model, data, (digits.x_val, digits.y_val), BATCH, 1024)


def halve_each_epoch() -> keras.callbacks.Callback:
    return keras.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-2 * 0.5**epoch)


def test_epoch_orders_are_the_batches_fit_trains_on() -> None:
    n, seen = 150, []

    def record(index: tf.Tensor) -> tf.Tensor:
        seen.append(int(index.numpy()))
        return index

    def features(x: tf.Tensor, y: tf.Tensor, i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        y = y + 0 * tf.py_function(record, [i], tf.int64)
        return x, tf.ensure_shape(y, [])

    x = np.random.default_rng(0).random((n, 3), dtype=np.float32)
    parts = (x, np.zeros(n, np.int64), np.arange(n))
    data = tf.data.Dataset.from_tensor_slices(parts).shuffle(n, seed=7).map(features).batch(16)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, epochs=3, verbose=0)
    assert np.array_equal(np.reshape(seen, (3, n)), epoch_orders(n, 7, 3))
    assert not np.array_equal(epoch_orders(n, 7, 3)[1], epoch_orders(n, 8, 3)[1])


def test_the_loop_trains_like_model_fit_with_the_same_callbacks(digits: Dataset) -> None:
    reference = compiled(digits)
    train = (
        tf.data.Dataset.from_tensor_slices((digits.x_train, digits.y_train))
        .shuffle(len(digits.x_train), seed=3)
        .batch(BATCH)
    )
    fit = reference.fit(
        train,
        validation_data=(digits.x_val, digits.y_val),
        epochs=3,
        verbose=0,
        callbacks=[halve_each_epoch()],
    ).history
    model = compiled(digits)
    history = keras.callbacks.History()
    loop, rates = loop_for(model, digits), []
    seen = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rates.append(loop.epoch_rate)
    )
    last = loop.fit(epochs=3, seed=3, callbacks=[halve_each_epoch(), history, seen])
    assert rates == pytest.approx([1e-2, 5e-3, 2.5e-3])  # each epoch's rate, read in its graph
    assert set(history.history) == set(fit)
    for name, values in fit.items():
        assert history.history[name] == pytest.approx(values, rel=1e-5), name
    assert last["val_loss"] == pytest.approx(fit["val_loss"][-1], rel=1e-5)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2 * 0.25)


def test_a_callback_can_stop_training_and_initial_epoch_is_honoured(digits: Dataset) -> None:
    model = compiled(digits)
    loop = loop_for(model, digits)
    begun: list[int] = []

    def stop_after_second(epoch: int, logs: dict[str, Any]) -> None:
        if epoch == 1:
            model.stop_training = True

    hooks = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: begun.append(epoch), on_epoch_end=stop_after_second
    )
    loop.fit(epochs=5, seed=0, callbacks=[hooks])
    assert begun == [0, 1]
    begun.clear()
    loop.fit(epochs=5, seed=0, callbacks=[hooks], initial_epoch=3)
    assert begun == [3, 4]


def test_restart_and_resume_give_the_uninterrupted_run(digits: Dataset) -> None:
    model = compiled(digits)
    loop = loop_for(model, digits)
    initial = model.get_weights()
    straight = keras.callbacks.History()
    loop.fit(epochs=4, seed=1, callbacks=[straight])
    loop.restart()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), initial, strict=True))
    assert int(model.optimizer.iterations.numpy()) == 0
    first, rest = keras.callbacks.History(), keras.callbacks.History()
    loop.fit(epochs=2, seed=1, callbacks=[first])
    loop.fit(epochs=4, seed=1, callbacks=[rest], initial_epoch=2)
    resumed = first.history["val_loss"] + rest.history["val_loss"]
    assert resumed == pytest.approx(straight.history["val_loss"], rel=1e-6)
