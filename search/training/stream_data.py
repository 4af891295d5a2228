"""tf.data pipelines over a dataset registered by path (`search.data.references`), so data
larger than a worker's memory trains: records are read, shuffled in a bounded buffer,
batched and parsed as they go, epoch after epoch.

Every file is checked against this worker's data roots again before it is opened (a file
swapped for a symlink since it was registered is refused). Without val files, the last
record of every VAL_EVERY is validation, the others training: the same split each epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from search.data.dataset import Task
from search.data.references import VAL_EVERY, check_inside
from search.errors import DatasetError
from search.spec import StudySpec
from search.training.streamed import StreamedTask

#: Most bytes of records a shuffle buffer holds (its length follows the records' size).
SHUFFLE_BYTES = 64 * 1024 * 1024
MAX_SHUFFLE = 10_000
#: Parallel readers and parsers: fixed, not AUTOTUNE, whose buffers may grow with the machine's
#: RAM (its budget is half of it), so a slow consumer would let them outgrow a worker's cap.
PARALLEL_CALLS = 2
_FEATURE_DTYPES = {"float32": tf.float32, "int64": tf.int64}


@dataclass(frozen=True)
class RefShape:
    """What a model is sized by (search.training.models.Shaped), for data by path."""

    name: str
    task: Task
    n_classes: int | None
    input_shape: tuple[int, ...]
    n_outputs: int


def reference_task(
    spec: StudySpec,
    shape: RefShape,
    source: dict[str, Any],
    n_train: int,
    roots: list[Path],
    models_dir: Path | None,
) -> StreamedTask:
    """The study's task on data by path: its model kind sized by the data, lrsearch's loss
    and metrics for the task, pipelines over the files."""
    from search.training.models import build_model, loss_and_metrics

    files = {split: [check_inside(p, roots) for p in source[split]] for split in ("train", "val")}
    data = {**source, **files}
    return StreamedTask(
        name=f"dataset {shape.name!r}",
        build_model=lambda seed: build_model(spec.task.model, shape, seed, models_dir),
        datasets=lambda batch, seed: (
            pipeline(data, shape, "train", batch, seed),
            pipeline(data, shape, "val", max(batch, 1024), None),
        ),
        loss_and_metrics=lambda model: loss_and_metrics(shape, model),
        steps_per_epoch=max(1, math.ceil(n_train / spec.task.batch_size)),
    )


def pipeline(
    source: dict[str, Any], shape: RefShape, split: str, batch: int, seed: int | None
) -> tf.data.Dataset:
    """Batched (x, y) for one split, shuffled (seeded, anew each epoch) when `seed` is set."""
    fmt = source["format"]
    if fmt == "tfrecord":
        return _tfrecord(source, shape, split, batch, seed)
    if fmt == "npz":
        return _npz(source, split, batch, seed)
    records = _csv_rows(source, split) if fmt == "csv" else _parquet_rows(source, split)
    records = _split(records, source, split)
    if seed is not None:
        records = records.shuffle(MAX_SHUFFLE, seed=seed, reshuffle_each_iteration=True)
    return records.batch(batch).map(_labels(shape)).prefetch(2)


def _split(records: tf.data.Dataset, source: dict[str, Any], split: str) -> tf.data.Dataset:
    """Keep this split's records when validation is every VAL_EVERY-th of one stream."""
    if not source.get("split_every"):
        return records
    every = int(source["split_every"])
    want_val = split == "val"
    kept = records.enumerate().filter(lambda i, _: tf.equal(i % every, every - 1) == want_val)
    return kept.map(lambda _, record: record)


def _files(source: dict[str, Any], split: str) -> list[str]:
    own = source[split] if source[split] or split == "train" else source["train"]
    return [str(p) for p in own]


def _labels(shape: RefShape) -> Any:
    """y as class ids (int64, one axis) or float targets."""

    def fix(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if shape.task == "classification":
            return x, tf.reshape(tf.cast(y, tf.int64), [-1])
        return x, tf.reshape(tf.cast(y, tf.float32), [-1, shape.n_outputs])

    return fix


# --- TFRecord --------------------------------------------------------------------------------


def _tfrecord(
    source: dict[str, Any], shape: RefShape, split: str, batch: int, seed: int | None
) -> tf.data.Dataset:
    files = _files(source, split)
    records = tf.data.Dataset.from_tensor_slices(files)
    cycle = min(4, len(files))
    records = records.interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle,
        num_parallel_calls=min(PARALLEL_CALLS, cycle),
        deterministic=True,
    )
    records = _split(records, source, split)
    if seed is not None:
        buffer = max(16, min(MAX_SHUFFLE, SHUFFLE_BYTES // int(source["record_bytes"])))
        records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    features = {
        name: tf.io.FixedLenFeature(f["shape"], _FEATURE_DTYPES[f["dtype"]])
        for name, f in source["features"].items()
    }
    label = source["label"]
    inputs = sorted(k for k in features if k != label)

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, features)
        xs = [tf.cast(parsed[k], tf.float32) for k in inputs]
        x = (
            xs[0]
            if len(xs) == 1
            else tf.concat([tf.reshape(v, [tf.shape(v)[0], -1]) for v in xs], axis=1)
        )
        return x, parsed[label]

    parsed = records.batch(batch).map(parse, num_parallel_calls=PARALLEL_CALLS)
    return parsed.map(_labels(shape)).prefetch(2)


# --- CSV and Parquet -------------------------------------------------------------------------


def _csv_rows(source: dict[str, Any], split: str) -> tf.data.Dataset:
    columns, target = source["columns"], source["target"]
    t = columns.index(target)
    files = _files(source, split)
    lines = tf.data.Dataset.from_tensor_slices(files).flat_map(
        lambda f: tf.data.TextLineDataset(f).skip(1)
    )
    lines = lines.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)

    def decode(line: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        values = tf.io.decode_csv(line, [[0.0]] * len(columns))
        x = tf.stack([v for i, v in enumerate(values) if i != t])
        return x, values[t]

    return lines.map(decode, num_parallel_calls=PARALLEL_CALLS)


def _parquet_rows(source: dict[str, Any], split: str) -> tf.data.Dataset:
    """Row groups read one record batch at a time (pyarrow), never the whole file."""
    import pyarrow.parquet as pq

    columns, target = source["columns"], source["target"]
    files = _files(source, split)

    def rows() -> Any:
        for path in files:
            for part in pq.ParquetFile(path).iter_batches(batch_size=4096):
                x = np.stack([part.column(c).to_numpy(zero_copy_only=False) for c in columns], 1)
                y = part.column(target).to_numpy(zero_copy_only=False)
                yield from zip(x.astype(np.float32), y.astype(np.float32), strict=True)

    signature = (
        tf.TensorSpec([len(columns)], tf.float32),
        tf.TensorSpec([], tf.float32),
    )
    return tf.data.Dataset.from_generator(rows, output_signature=signature)


# --- NPZ (uncompressed members, mapped) ------------------------------------------------------


def _npz(source: dict[str, Any], split: str, batch: int, seed: int | None) -> tf.data.Dataset:
    """Rows gathered batch by batch from the arrays mapped in place (np.memmap)."""
    path = source["train"][0]
    x = _mapped(path, source, f"x_{split}")
    y = _mapped(path, source, f"y_{split}")
    n = len(x)
    order = tf.data.Dataset.range(n)
    if seed is not None:
        order = order.shuffle(n, seed=seed, reshuffle_each_iteration=True)

    def gather(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(idx)
        return np.asarray(x[rows], np.float32), np.asarray(y[rows])

    y_type = tf.int64 if y.dtype.kind in "biu" else tf.float32

    def load(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        bx, by = tf.numpy_function(gather, [idx], [tf.float32, tf.as_dtype(y.dtype)])
        bx.set_shape([None, *x.shape[1:]])
        by.set_shape([None, *y.shape[1:]])
        return bx, tf.cast(by, y_type)

    return order.batch(batch).map(load).prefetch(2)


def _mapped(path: str, source: dict[str, Any], key: str) -> np.memmap:
    shape_key = source.get("shapes", {}).get(key)
    offset = int(source["offsets"][key])
    dtype = np.dtype(source["dtypes"][key])
    if shape_key is None:
        raise DatasetError(f"the stored layout of {key} is incomplete; register the NPZ again")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape_key))


__all__ = ["VAL_EVERY", "RefShape", "pipeline", "reference_task"]
