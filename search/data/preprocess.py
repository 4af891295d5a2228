"""`task.preprocess`: standardise tabular features (and a regression target) with statistics of
the training split only, so validation stays unseen, and hand the statistics to the export.

Only 2-D feature arrays (one row of features per example) are standardised; image and sequence
data is refused at submit. Why not per channel: an `(H, W)` image has no channel axis (its last
axis is its width), so "per channel" would silently mean per column there, and images usually
come scaled already; a user who wants it scales them before uploading.

Every trial's export carries the statistics, so their size is capped: at most
MAX_STANDARDIZED_FEATURES features. Pure numpy (the API checks specs with `problems`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from search.data.dataset import Dataset

#: The most features `standardize` accepts: each trial's export (stored with the trial and
#: read back by the API's pages and plots) carries a mean and a std per feature, twice with
#: the snippet: about 50 kB per trial at this cap.
MAX_STANDARDIZED_FEATURES = 1000
#: Statistics are rounded to this many significant digits (float32 holds about 7), and the data
#: is standardised with the rounded values, so a user's script reproduces it exactly.
SIGNIFICANT_DIGITS = 8


def problems(
    input_shape: tuple[int, ...], task: str, *, standardize: bool, standardize_target: bool
) -> list[str]:
    """Why this preprocessing cannot apply to a dataset of this shape and task (empty: fine)."""
    out = []
    if standardize and len(input_shape) != 1:
        out.append(
            f"standardize needs tabular data (2-D features); examples of this dataset have "
            f"shape {tuple(input_shape)}: scale images and sequences before uploading"
        )
    elif standardize and input_shape[0] > MAX_STANDARDIZED_FEATURES:
        out.append(
            f"standardize takes at most {MAX_STANDARDIZED_FEATURES} features (every trial's "
            f"export carries their statistics); this dataset has {input_shape[0]}"
        )
    if standardize_target and task != "regression":
        out.append(f"standardize_target needs a regression target; this dataset is {task}")
    return out


def standardized(dataset: Dataset, *, features: bool, target: bool) -> Dataset:
    """The dataset with features and/or target standardised by its training split's mean and
    std (a constant column's std counts as 1); `preprocess` holds what was applied. Raises
    ValueError for a dataset `problems` refuses."""
    refused = problems(
        dataset.input_shape, dataset.task, standardize=features, standardize_target=target
    )
    if refused:
        raise ValueError("; ".join(refused))
    if not (features or target):
        return dataset
    stats: dict[str, Any] = {"mean": None, "std": None, "target_mean": None, "target_std": None}
    x_train, x_val, y_train, y_val = dataset.x_train, dataset.x_val, dataset.y_train, dataset.y_val
    if features:
        mean, std = _fit(x_train)
        x_train, x_val = _apply(x_train, mean, std), _apply(x_val, mean, std)
        stats.update(mean=mean.tolist(), std=std.tolist())
    if target:
        mean, std = _fit(y_train)
        y_train, y_val = _apply(y_train, mean, std), _apply(y_val, mean, std)
        scalar = y_train.ndim == 1
        stats.update(
            target_mean=float(mean) if scalar else mean.tolist(),
            target_std=float(std) if scalar else std.tolist(),
        )
    return dataclasses.replace(
        dataset, x_train=x_train, x_val=x_val, y_train=y_train, y_val=y_val, preprocess=stats
    )


def _fit(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) std in float64, rounded; std 0 becomes 1."""
    mean = _rounded(np.asarray(np.mean(values, axis=0, dtype=np.float64)))
    std = _rounded(np.asarray(np.std(values, axis=0, dtype=np.float64)))
    return mean, np.where(std > 0, std, 1.0)


def _apply(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """`(values - mean) / std` in float32, as the snippet computes it."""
    return (values - mean.astype(np.float32)) / std.astype(np.float32)


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.array([float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in np.atleast_1d(values)]).reshape(
        np.shape(values)
    )
