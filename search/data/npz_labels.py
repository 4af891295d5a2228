"""An NPZ's label array judged without holding it: read in bounded chunks into a digest that
the label rules (`infer_task`, `class_ids`, `class_count`) judge as they would the whole.

Why: a dataset registered by path may be far larger than the API's memory; its labels are
read only when the task or the classes must be inferred, and then a chunk at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from search.data.dataset import MAX_CLASSES
from search.errors import DatasetError

_LABEL_CHUNK = 4 * 1024 * 1024  # bytes of labels held at once while the task is inferred
#: One array of an NPZ file: (shape, dtype string, offset of its data in the file).
ArrayLayout: TypeAlias = tuple[tuple[int, ...], str, int]


def npz_labels(path: Path, headers: Mapping[str, ArrayLayout], key: str) -> np.ndarray:
    """What `infer_task`, `class_ids` and `class_count` need of a label array, in bounded
    memory: a 1-D (or one-column) array is read in chunks into `label_digest`; a wider one
    is never read (no such array is class ids, and its width is all a regression needs)."""
    shape, dtype_str, offset = headers[key]
    dtype = np.dtype(dtype_str)
    if len(shape) == 2 and shape[1] > 1:
        like = np.zeros((1, shape[1]), dtype=np.int64 if dtype.kind == "b" else dtype)
        return np.broadcast_to(like, shape)
    digest = label_digest(_chunks(path, offset, math.prod(shape), dtype, key), dtype)
    return digest.reshape(-1, 1) if len(shape) == 2 else digest


def _chunks(
    path: Path, offset: int, count: int, dtype: np.dtype[Any], key: str
) -> Iterator[np.ndarray]:
    """`count` values of `dtype` from `offset`, a bounded chunk at a time."""
    per_chunk = max(1, _LABEL_CHUNK // dtype.itemsize)
    with open(path, "rb") as f:
        f.seek(offset)
        while count > 0:
            n = min(per_chunk, count)
            data = f.read(n * dtype.itemsize)
            if len(data) != n * dtype.itemsize:
                raise DatasetError(f"not a readable NPZ: {key} is truncated")
            yield np.frombuffer(data, dtype=dtype)
            count -= n


def label_digest(chunks: Iterable[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    """A few values that `infer_task`, `class_ids` and `class_count` judge as they would the
    whole label array: every id 0..MAX_CLASSES-1 present, each chunk's min and max, and one
    non-finite and one fractional value if there are any. So the label rules stay in one
    place and the API holds one chunk of labels, not all of them."""
    present = np.zeros(MAX_CLASSES, dtype=bool)
    kept: list[np.ndarray] = []
    for chunk in chunks:
        values = chunk
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            if not finite.all():
                kept.append(values[~finite][:1])
                values = values[finite]
            whole = values == np.round(values)
            if not whole.all():
                kept.append(values[~whole][:1])
                values = values[whole]
        if values.size:
            kept.append(np.array([values.min(), values.max()], dtype=dtype))
            ids = values[(values >= 0) & (values < MAX_CLASSES)].astype(np.int64)
            present[ids] = True
    return np.concatenate([np.flatnonzero(present).astype(dtype), *kept])
