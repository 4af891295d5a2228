"""An example lrsearch task plugin: Gaussian blobs written once as TFRecord shards, read back
by a streaming tf.data pipeline, a label-smoothed loss and an error-rate metric of its own.

lrsearch finds it through the entry point `example-blobs` (see pyproject.toml) and calls
`build_model`, `loss`, `metrics`, `datasets` and `steps_per_epoch` with the validated
`Args`; it compiles the model itself, with the optimizer and learning rate it is searching.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field

__version__ = "0.1.0"
SHUFFLE_BUFFER = 4096


class Args(BaseModel):
    """`task.plugin_args` of a study (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(4000, ge=100, le=50_000_000)
    n_val: int = Field(1000, ge=10, le=5_000_000)
    features: int = Field(16, ge=2, le=4096)
    classes: int = Field(4, ge=2, le=100)
    noise: float = Field(3.0, gt=0, le=10)
    hidden: list[int] = Field(default_factory=lambda: [64, 32], max_length=6)
    smoothing: float = Field(0.05, ge=0, lt=1)
    shards: int = Field(4, ge=1, le=256)
    data_seed: int = Field(0, ge=0)
    cache_dir: str | None = Field(None, description="where the shards go (default: a temp dir)")


class SmoothedCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy on logits with label smoothing."""

    def __init__(self, classes: int, smoothing: float, name: str = "smoothed_crossentropy"):
        super().__init__(name=name)
        self.classes, self.smoothing = classes, smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels = keras.ops.one_hot(
            keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), self.classes
        )
        labels = labels * (1.0 - self.smoothing) + self.smoothing / self.classes
        return keras.losses.categorical_crossentropy(labels, y_pred, from_logits=True)


class ErrorRate(keras.metrics.Metric):
    """The share of examples whose arg-max class is wrong (1 - accuracy)."""

    def __init__(self, name: str = "error_rate", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.wrong = self.add_variable(shape=(), initializer="zeros", name="wrong")
        self.seen = self.add_variable(shape=(), initializer="zeros", name="seen")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        predicted = keras.ops.argmax(y_pred, axis=-1)
        truth = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), predicted.dtype)
        wrong = keras.ops.cast(keras.ops.not_equal(predicted, truth), "float32")
        self.wrong.assign_add(keras.ops.sum(wrong))
        self.seen.assign_add(keras.ops.cast(keras.ops.shape(wrong)[0], "float32"))

    def result(self) -> Any:
        return self.wrong / keras.ops.maximum(self.seen, 1.0)


class BlobsTask:
    """The plugin: everything a training script would have, minus the optimizer."""

    Args = Args

    def build_model(self, args: Args) -> keras.Model:
        inputs = keras.Input(shape=(args.features,), name="features")
        x = inputs
        for units in args.hidden:
            x = keras.layers.Dense(units, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Dense(args.classes, name="logits")(x))

    def loss(self, args: Args) -> keras.losses.Loss:
        return SmoothedCrossentropy(args.classes, args.smoothing)

    def metrics(self, args: Args) -> list[Any]:
        return [ErrorRate(), keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def steps_per_epoch(self, args: Args, batch_size: int) -> int:
        return math.ceil(args.n_train / batch_size)  # known: no counting pass needed

    def datasets(
        self, args: Args, batch_size: int, seed: int | None
    ) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        folder = write_shards(args)
        train = _pipeline(sorted(folder.glob("train-*.tfrecord")), args, batch_size, seed)
        val = _pipeline(sorted(folder.glob("val-*.tfrecord")), args, batch_size, None)
        return train, val


# --- the data: written once per argument set, then streamed -----------------------------------


def write_shards(args: Args) -> Path:
    """Write the blobs as TFRecord shards under the cache dir (once; workers that race write
    the same bytes, each shard renamed into place whole) and return their folder."""
    base = Path(args.cache_dir or Path(tempfile.gettempdir()) / "lrsearch-example-task")
    key = (
        f"n{args.n_train}-{args.n_val}-f{args.features}-c{args.classes}-z{args.noise}-"
        f"s{args.shards}-d{args.data_seed}"
    )
    folder = base / key
    if (folder / "DONE").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.data_seed)
    centres = rng.normal(0.0, 2.0, size=(args.classes, args.features)).astype(np.float32)
    for split, n, shards in (("train", args.n_train, args.shards), ("val", args.n_val, 1)):
        for shard, rows in enumerate(np.array_split(np.arange(n), shards)):
            labels = rng.integers(0, args.classes, size=len(rows))
            noise = rng.normal(0.0, args.noise, size=(len(rows), args.features))
            _write(folder / f"{split}-{shard:05d}.tfrecord", centres[labels] + noise, labels)
    (folder / "DONE").write_text(json.dumps(args.model_dump()))
    return folder


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for features, label in zip(x.astype(np.float32), y, strict=True):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "x": tf.train.Feature(float_list=tf.train.FloatList(value=features)),
                        "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                    }
                )
            )
            writer.write(example.SerializeToString())
    os.replace(tmp, path)


def _pipeline(files: list[Path], args: Args, batch_size: int, seed: int | None) -> tf.data.Dataset:
    """Shards read in parallel, shuffled (seeded, anew each epoch), batched, then parsed."""
    spec = {
        "x": tf.io.FixedLenFeature([args.features], tf.float32),
        "y": tf.io.FixedLenFeature([1], tf.int64),
    }

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, spec)
        return parsed["x"], parsed["y"]

    data = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    if seed is not None:
        data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    data = data.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, len(files)),
        deterministic=True,
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if seed is not None:
        data = data.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
