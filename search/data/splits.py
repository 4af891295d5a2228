"""Seeded train/validation splits for the loaders that get one table (CSV, digits)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from search.data.dataset import MIN_ROWS, MIN_VAL_ROWS
from search.errors import DatasetError


def check_fraction(val_fraction: float) -> None:
    """Refuse a validation fraction outside (0, 1) before any file is read."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")


def split(
    x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split, stratified when asked and possible (else a plain shuffled split)."""
    check_fraction(val_fraction)
    if len(x) < 2:
        raise DatasetError(f"too few rows: {len(x)}; need at least {MIN_ROWS + MIN_VAL_ROWS}")
    kwargs = {"test_size": val_fraction, "random_state": seed, "shuffle": True}
    if stratify:
        try:
            return tuple(train_test_split(x, y, stratify=y, **kwargs))
        except ValueError:
            pass  # a class with one row, or fewer val rows than classes
    return tuple(train_test_split(x, y, **kwargs))


def check_split_sizes(n: int, n_train: int, n_val: int) -> None:
    """Name both halves when a split leaves too few rows on either side."""
    if n_train < MIN_ROWS or n_val < MIN_VAL_ROWS:
        raise DatasetError(
            f"too few rows: {n} data rows split into {n_train} training and {n_val} validation "
            f"rows; need at least {MIN_ROWS} and {MIN_VAL_ROWS}"
        )
