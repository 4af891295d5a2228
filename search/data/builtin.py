"""The built-in dataset: scikit-learn's bundled digits, so a study runs with no upload."""

from __future__ import annotations

import numpy as np

from search.data.checks import assemble
from search.data.dataset import Dataset
from search.data.splits import split

BUILTIN = "digits"


def load_digits(seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1], stratified split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_va, y_tr, y_va = split(x, y, seed, val_fraction, stratify=True)
    return assemble(BUILTIN, x_tr, y_tr, x_va, y_va, task="classification", n_classes=10)
