"""What a dataset is: the validated `Dataset`, its size limits, and what its labels mean.

No TensorFlow here (nor anywhere in `search.data`): the API imports this package.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np

from search.errors import DatasetError

Task: TypeAlias = Literal["classification", "regression"]
Source: TypeAlias = str | Path | bytes

MAX_FEATURES = 100_000
MIN_ROWS = 10  # training rows
MIN_VAL_ROWS = 2
MAX_CLASSES = 1000
MAX_ARRAY_BYTES = 2**31  # per NPZ member, checked before anything is allocated
ARRAYS = ("x_train", "y_train", "x_val", "y_val")
TASKS: tuple[Task, ...] = ("classification", "regression")


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Validated train/val arrays plus what the model builder needs to know about them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: Task
    n_classes: int | None
    #: The statistics it was standardised with (`search.data.preprocess`), as exported.
    preprocess: dict[str, Any] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, without the batch dimension."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes of its four arrays: what storing it takes, give or take the NPZ headers."""
        return sum(int(getattr(self, k).nbytes) for k in ARRAYS)

    @property
    def n_outputs(self) -> int:
        """Width of the model's output layer."""
        if self.task == "classification":
            return int(self.n_classes or 0)
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    def fingerprint(self) -> str:
        """Short content hash (task, dtypes, shapes, bytes; not the name) for cache keys."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha1(f"{self.task}:{self.n_classes}".encode())
        for key in ARRAYS:
            a = np.ascontiguousarray(getattr(self, key))
            h.update(f"|{key}:{a.dtype.str}:{a.shape}|".encode())
            h.update(a.data)
        return h.hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return (self.name, self.task, self.n_classes) == (
            other.name,
            other.task,
            other.n_classes,
        ) and all(_same_array(getattr(self, k), getattr(other, k)) for k in ARRAYS)

    def __hash__(self) -> int:
        return hash((self.name, self.fingerprint()))

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, n_classes={self.n_classes}, "
            f"train={self.x_train.shape}, val={self.x_val.shape})"
        )


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))


# --- task inference --------------------------------------------------------------------------


def infer_task(y: np.ndarray) -> tuple[Task, int | None]:
    """Classification for integer labels (which must be 0..K-1, K >= 2), regression for floats.

    Float labels count as classes only when they are whole numbers forming exactly 0..K-1;
    any other float target (ages, prices, 1-based ratings) is regression.
    """
    y = np.asarray(y)
    if y.size == 0:
        raise DatasetError("labels have zero rows")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind in "iu":
        return "classification", class_count(class_ids(y, "labels"))
    if y.dtype.kind != "f":
        raise DatasetError(f"labels must be numeric, got dtype {y.dtype}")
    flat = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    if flat.ndim == 1 and _is_class_ids(flat):
        return "classification", int(flat.max()) + 1
    if _is_one_hot(y):  # `to_categorical` output: a classification, not K 0/1 regressions
        raise DatasetError(
            f"labels of shape {y.shape} look one-hot (each row a single 1, the rest 0): store "
            "their class ids instead (y.argmax(axis=1)) for a classification"
        )
    return "regression", None


def _is_one_hot(y: np.ndarray) -> bool:
    return bool(
        y.ndim == 2
        and y.shape[1] >= 2
        and np.isin(y, (0.0, 1.0)).all()
        and (y.sum(axis=1) == 1).all()
    )


def class_ids(y: np.ndarray, key: str) -> np.ndarray:
    """Labels as 1-D int64 ids; rejects fractions, negatives and one-hot/multi-column labels."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DatasetError(
            f"{key}: class labels must be a 1-D array of class ids, got shape {y.shape} "
            "(for one-hot labels store their argmax)"
        )
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise DatasetError(f"{key}: class labels must be whole numbers 0..K-1")
    if len(y) and y.dtype.kind in "uf" and y.max() >= MAX_CLASSES:  # before int64 wraps them
        raise DatasetError(
            f"{key}: too many classes: labels go up to {y.max()} (at most {MAX_CLASSES} "
            "classes, ids 0..K-1)"
        )
    ids = y.astype(np.int64)
    if len(ids) and ids.min() < 0:
        raise DatasetError(f"{key}: class labels must be 0..K-1; found negative label {ids.min()}")
    return ids


def class_count(ids: np.ndarray) -> int:
    """K for labels that use exactly 0..K-1, K >= 2; else a DatasetError saying what is off."""
    top = int(ids.max())
    if top >= MAX_CLASSES:
        raise DatasetError(
            f"too many classes: labels go up to {top} (at most {MAX_CLASSES} classes, ids 0..K-1)"
        )
    present = np.bincount(ids, minlength=top + 1) > 0
    if present.sum() < 2:
        raise DatasetError(f"classification needs at least 2 classes; every label is {top}")
    if not present.all():
        missing = np.flatnonzero(~present)[:10].tolist()
        raise DatasetError(
            f"class labels must be 0..K-1 with every class present; labels go up to {top} "
            f"but {missing} never occur (1-based or sparse labels must be renumbered)"
        )
    return top + 1


def _is_class_ids(y: np.ndarray) -> bool:
    if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
        return False
    lo, hi = float(y.min()), float(y.max())
    if lo < 0 or hi >= MAX_CLASSES or hi < 1:
        return False
    return bool((np.bincount(y.astype(np.int64), minlength=int(hi) + 1) > 0).all())
