"""The one gate into a `Dataset`: every loader hands its arrays to `assemble`.

So a worker only ever meets finite float32 features, 0..K-1 int64 class ids (or float32
regression targets) and enough rows to train. Every problem is a `DatasetError` that names it.
"""

from __future__ import annotations

import math

import numpy as np

from search.data.dataset import (
    MAX_FEATURES,
    MIN_ROWS,
    MIN_VAL_ROWS,
    Dataset,
    Task,
    class_count,
    class_ids,
    infer_task,
)
from search.errors import DatasetError


def assemble(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task: Task | None = None,
    n_classes: int | None = None,
) -> Dataset:
    """Check everything and normalise dtypes; the only way loaded data becomes a Dataset."""
    x_train, x_val = _features("x_train", x_train), _features("x_val", x_val)
    if x_val.shape[1:] != x_train.shape[1:]:
        raise DatasetError(
            f"train/val feature shape mismatch: x_train examples have shape {x_train.shape[1:]}, "
            f"x_val examples have shape {x_val.shape[1:]}"
        )
    for split, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            n_y = "a scalar" if y.ndim == 0 else f"{len(y)} rows"
            raise DatasetError(f"x_{split} has {len(x)} rows but y_{split} has {n_y}")
        _check_labels_numeric(f"y_{split}", y)
    if len(x_train) < MIN_ROWS or len(x_val) < MIN_VAL_ROWS:
        raise DatasetError(
            f"too few rows: {len(x_train)} training and {len(x_val)} validation rows; "
            f"need at least {MIN_ROWS} and {MIN_VAL_ROWS}"
        )
    if task is None:
        task, n_classes = infer_task(y_train)
    elif task == "classification" and n_classes is None:
        n_classes = class_count(class_ids(np.asarray(y_train), "y_train"))
    elif task == "regression":
        n_classes = None
    if task == "classification":
        assert n_classes is not None
        y_train = class_ids(np.asarray(y_train), "y_train")
        y_val = class_ids(np.asarray(y_val), "y_val")
        for key, ids in (("y_train", y_train), ("y_val", y_val)):
            if ids.max() >= n_classes:
                raise DatasetError(
                    f"{key} has label {ids.max()} outside the classes 0..{n_classes - 1}"
                )
    else:
        y_train, y_val = _targets("y_train", y_train), _targets("y_val", y_val)
        if y_val.shape[1:] != y_train.shape[1:]:
            raise DatasetError(
                f"y_train and y_val shapes differ: {y_train.shape[1:]} vs {y_val.shape[1:]}"
            )
    for a in (x_train, y_train, x_val, y_val):
        a.setflags(write=False)
    return Dataset(name, x_train, y_train, x_val, y_val, task, n_classes)


def _features(key: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"{key} must be numeric (bool, int or float), got dtype {x.dtype}")
    if x.ndim < 2:
        raise DatasetError(f"{key} must have shape (rows, features...), got {x.shape}")
    if len(x) == 0:
        raise DatasetError(f"{key} has zero rows")
    n_features = math.prod(x.shape[1:])
    if n_features > MAX_FEATURES:
        raise DatasetError(
            f"too many features: {key} has {n_features} per example (at most {MAX_FEATURES})"
        )
    if n_features == 0:
        raise DatasetError(f"{key} has zero features per example: shape {x.shape}")
    out = x.astype(np.float32)  # always a fresh copy we may freeze
    if not np.isfinite(out).all():
        raise DatasetError(f"{key} contains NaN or inf (or values too large for float32)")
    return out


def _check_labels_numeric(key: str, y: np.ndarray) -> None:
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"{key} must be numeric, got dtype {y.dtype}")
    if y.ndim > 2:
        raise DatasetError(f"{key} must be 1-D (or 2-D for several regression targets): {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DatasetError(f"{key} contains NaN or inf")


def _targets(key: str, y: np.ndarray) -> np.ndarray:
    out = np.asarray(y).astype(np.float32)
    if not np.isfinite(out).all():
        raise DatasetError(f"{key} contains NaN or inf (or values too large for float32)")
    return out
