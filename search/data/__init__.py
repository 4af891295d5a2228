"""Datasets: load, validate and store training data with numpy and scikit-learn only.

No TensorFlow here: the API imports this package. One concern per module:

- `dataset`: the `Dataset` itself, its size limits and `infer_task` (what labels mean);
- `checks`: `assemble`, the one gate every loader's arrays pass to become a `Dataset`;
- `splits`: seeded, stratified train/validation splits;
- `npz`: `read_npz` / `save_npz`; `csv_reader`: `read_csv`;
- `builtin`: `load_digits`; `refs`: `load_dataset`, a study's dataset ref -> `Dataset`.
"""

from search.data.builtin import BUILTIN, load_digits
from search.data.csv_reader import read_csv
from search.data.dataset import (
    MAX_ARRAY_BYTES,
    MAX_CLASSES,
    MAX_FEATURES,
    MIN_ROWS,
    MIN_VAL_ROWS,
    Dataset,
    Task,
    infer_task,
)
from search.data.npz import read_npz, save_npz
from search.data.refs import load_dataset

__all__ = [
    "BUILTIN",
    "MAX_ARRAY_BYTES",
    "MAX_CLASSES",
    "MAX_FEATURES",
    "MIN_ROWS",
    "MIN_VAL_ROWS",
    "Dataset",
    "Task",
    "infer_task",
    "load_dataset",
    "load_digits",
    "read_csv",
    "read_npz",
    "save_npz",
]
