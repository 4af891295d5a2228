"""A study's dataset ref -> its `Dataset`: the built-in name or the id of a stored upload."""

from __future__ import annotations

import re
from pathlib import Path

from search.data.builtin import BUILTIN, load_digits
from search.data.dataset import Dataset
from search.data.npz import read_npz
from search.errors import DatasetError

_REF = re.compile(r"[A-Za-z0-9_-]{1,64}")


def load_dataset(ref: str, data_dir: str | Path) -> Dataset:
    """Resolve a study's dataset ref: "digits" or the id of an upload under data_dir/datasets."""
    if not isinstance(ref, str) or not _REF.fullmatch(ref):
        raise DatasetError(
            f"invalid dataset id {str(ref)[:80]!r}: use 1-64 letters, digits, '_' or '-'"
        )
    if ref == BUILTIN:
        return load_digits()
    path = Path(data_dir) / "datasets" / f"{ref}.npz"
    if not path.is_file():
        raise DatasetError(f"unknown dataset {ref!r}: no built-in or uploaded dataset has this id")
    return read_npz(path, name=ref)
