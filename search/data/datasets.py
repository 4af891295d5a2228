"""Datasets: load, validate and store training data with numpy and scikit-learn only.

Everything a user uploads goes through `_assemble`, so a worker only ever meets finite float32
features, 0..K-1 int64 class ids (or float32 regression targets) and enough rows to train.
Every problem is a `DatasetError` that names it. No TensorFlow here: the API imports this module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Literal, TypeAlias

import numpy as np
from sklearn.model_selection import train_test_split

from search.errors import DatasetError

Task: TypeAlias = Literal["classification", "regression"]
Source: TypeAlias = str | Path | bytes

MAX_FEATURES = 100_000
MIN_ROWS = 10  # training rows
MIN_VAL_ROWS = 2
MAX_CLASSES = 1000
MAX_ARRAY_BYTES = 2**31  # per NPZ member, checked before anything is allocated
_MAX_HEADER_CHARS = 64 * (MAX_FEATURES + 2)
ARRAYS = ("x_train", "y_train", "x_val", "y_val")
BUILTIN = "digits"
_REF = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TASKS: tuple[Task, ...] = ("classification", "regression")


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

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, without the batch dimension."""
        return tuple(int(d) for d in self.x_train.shape[1:])

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


# --- public loaders -------------------------------------------------------------------------


def load_digits(seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1], stratified split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, val_fraction, stratify=True)
    return _assemble(BUILTIN, x_tr, y_tr, x_va, y_va, task="classification", n_classes=10)


def read_npz(source: Source, name: str | None = None) -> Dataset:
    """Read an NPZ with x_train, y_train, x_val, y_val (never unpickling anything).

    `name` defaults to the name `save_npz` stored, else "upload". An optional stored `task`
    keeps whole-number regression targets from being read back as classes.
    """
    arrays = _read_npz_arrays(source)
    stored_name = _scalar_str(arrays.get("name"), "name")
    stored_task = _scalar_str(arrays.get("task"), "task")
    task: Task | None = None
    for known in _TASKS:
        if stored_task == known:
            task = known
    if stored_task is not None and task is None:
        raise DatasetError(f"stored task must be one of {', '.join(_TASKS)}, got {stored_task!r}")
    x_train, y_train, x_val, y_val = (arrays[k] for k in ARRAYS)
    return _assemble(name or stored_name or "upload", x_train, y_train, x_val, y_val, task=task)


def read_csv(
    source: Source, target: str, name: str = "upload", seed: int = 0, val_fraction: float = 0.2
) -> Dataset:
    """Read a headed CSV; `target` is the label column, every other column a numeric feature.

    A numeric target is classification when its values are exactly the ids 0..K-1, else
    regression; a text target is classification with ids given to the sorted labels.
    """
    _check_fraction(val_fraction)
    with _text_stream(source) as stream:
        x, raw_target = _parse_csv(stream, target)
    y = _target_values(target, raw_target)
    task, n_classes = infer_task(y)
    if task == "classification":
        y = y.astype(np.int64)
    x_tr, x_va, y_tr, y_va = _split(x, y, seed, val_fraction, stratify=task == "classification")
    _check_split_sizes(len(x), len(x_tr), len(x_va))
    return _assemble(name, x_tr, y_tr, x_va, y_va, task=task, n_classes=n_classes)


def save_npz(dataset: Dataset, path: str | Path) -> None:
    """Store a dataset as a plain (pickle-free) NPZ, atomically: readers never see half a file."""
    path = Path(path)
    arrays = {k: getattr(dataset, k) for k in ARRAYS}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, name=np.array(dataset.name), task=np.array(dataset.task))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        return "classification", _class_count(_class_ids(y, "labels"))
    if y.dtype.kind != "f":
        raise DatasetError(f"labels must be numeric, got dtype {y.dtype}")
    flat = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    if flat.ndim == 1 and _is_class_ids(flat):
        return "classification", int(flat.max()) + 1
    return "regression", None


# --- validation ------------------------------------------------------------------------------


def _assemble(
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
        n_classes = _class_count(_class_ids(np.asarray(y_train), "y_train"))
    elif task == "regression":
        n_classes = None
    if task == "classification":
        assert n_classes is not None
        y_train = _class_ids(np.asarray(y_train), "y_train")
        y_val = _class_ids(np.asarray(y_val), "y_val")
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


def _class_ids(y: np.ndarray, key: str) -> np.ndarray:
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
    ids = y.astype(np.int64)
    if len(ids) and ids.min() < 0:
        raise DatasetError(f"{key}: class labels must be 0..K-1; found negative label {ids.min()}")
    return ids


def _class_count(ids: np.ndarray) -> int:
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


# --- splitting -------------------------------------------------------------------------------


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")


def _split(
    x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split, stratified when asked and possible (else a plain shuffled split)."""
    _check_fraction(val_fraction)
    if len(x) < 2:
        raise DatasetError(f"too few rows: {len(x)}; need at least {MIN_ROWS + MIN_VAL_ROWS}")
    kwargs = {"test_size": val_fraction, "random_state": seed, "shuffle": True}
    if stratify:
        try:
            return tuple(train_test_split(x, y, stratify=y, **kwargs))  # type: ignore[return-value]
        except ValueError:
            pass  # a class with one row, or fewer val rows than classes
    return tuple(train_test_split(x, y, **kwargs))  # type: ignore[return-value]


def _check_split_sizes(n: int, n_train: int, n_val: int) -> None:
    if n_train < MIN_ROWS or n_val < MIN_VAL_ROWS:
        raise DatasetError(
            f"too few rows: {n} data rows split into {n_train} training and {n_val} validation "
            f"rows; need at least {MIN_ROWS} and {MIN_VAL_ROWS}"
        )


# --- NPZ -------------------------------------------------------------------------------------


def _read_npz_arrays(source: Source) -> dict[str, np.ndarray]:
    """The four arrays (plus optional name/task) read member by member, sizes checked first."""
    with _binary_stream(source) as fileobj:
        head = fileobj.read(4)
        if not head:
            raise DatasetError("empty file")
        if not head.startswith(b"PK"):
            raise DatasetError("not a valid NPZ file: expected a zip archive from numpy.savez")
        fileobj.seek(0)
        try:
            archive = zipfile.ZipFile(fileobj)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DatasetError(f"not a valid NPZ file (truncated or corrupt): {exc}") from None
        with archive:
            members = {_member_key(n): n for n in archive.namelist()}
            missing = [k for k in ARRAYS if k not in members]
            if missing:
                raise DatasetError(
                    f"NPZ is missing key(s) {', '.join(missing)}; it needs {', '.join(ARRAYS)}"
                )
            wanted = [k for k in (*ARRAYS, "name", "task") if k in members]
            return {k: _read_member(archive, members[k], k) for k in wanted}


@contextmanager
def _binary_stream(source: Source) -> Iterator[IO[bytes]]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
        return
    try:
        f = open(source, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise DatasetError(f"no such file: {Path(source).name}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {Path(source).name}: {exc.strerror}") from None
    with f:
        yield f


def _member_key(name: str) -> str:
    return name[: -len(".npy")] if name.endswith(".npy") else name


def _read_member(archive: zipfile.ZipFile, member: str, key: str) -> np.ndarray:
    fmt = np.lib.format
    info = archive.getinfo(member)
    if info.file_size > MAX_ARRAY_BYTES:
        raise DatasetError(f"{key} is too large: {info.file_size} bytes (max {MAX_ARRAY_BYTES})")
    try:
        with archive.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise DatasetError(f"{key}: unsupported .npy format version {version}")
            if dtype.hasobject:
                raise DatasetError(
                    f"{key} is a pickled/object array; pickle is not allowed (store plain numeric "
                    "arrays, e.g. with numpy.savez)"
                )
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise DatasetError(f"not a valid NPZ file: {key} is truncated")
        with archive.open(info) as f:
            return fmt.read_array(f, allow_pickle=False)
    except DatasetError:
        raise
    except (
        zipfile.BadZipFile,
        OSError,
        EOFError,
        ValueError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as exc:  # unsupported compression, encryption
        if "pickle" in str(exc):
            raise DatasetError(f"{key}: pickle is not allowed ({exc})") from None
        raise DatasetError(f"not a valid NPZ file: {key} is corrupt ({exc})") from None


def _scalar_str(a: np.ndarray | None, key: str) -> str | None:
    if a is None:
        return None
    if a.dtype.kind != "U" or a.ndim != 0 or len(str(a)) > 200:
        raise DatasetError(f"stored {key} must be a short text scalar")
    return str(a)


# --- CSV -------------------------------------------------------------------------------------


@contextmanager
def _text_stream(source: Source) -> Iterator[io.TextIOBase]:
    """Text view of a path or bytes, tolerant of a UTF-8 BOM."""
    if isinstance(source, bytes):
        yield io.TextIOWrapper(io.BytesIO(source), "utf-8-sig", newline="")
        return
    try:
        f = open(source, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DatasetError(f"cannot read {Path(source).name}: {exc.strerror}") from None
    with f:
        yield f


def _parse_csv(stream: io.TextIOBase, target: str) -> tuple[np.ndarray, list[str]]:
    """Header first (column count checked before any row is parsed), then rows in chunks."""
    skipped, header = _csv_header(stream)
    if len(header) - 1 > MAX_FEATURES:
        raise DatasetError(f"too many feature columns: {len(header) - 1} (at most {MAX_FEATURES})")
    if target not in header:
        shown = ", ".join(repr(h) for h in header[:20])
        raise DatasetError(f"target column {target!r} not found in the header ({shown})")
    dupes = sorted(h for h, n in Counter(header).items() if n > 1)
    if dupes:
        raise DatasetError(f"duplicate column names in the header: {_names(dupes)}")
    if len(header) < 2:
        raise DatasetError("a CSV needs at least one feature column besides the target")
    t = header.index(target)
    features = header[:t] + header[t + 1 :]
    chunk_rows = max(1, 1_000_000 // len(header))  # bounds the Python floats alive at once
    chunks: list[np.ndarray] = []
    pending: list[list[float]] = []
    labels: list[str] = []
    for line, row in _csv_rows(stream, offset=skipped):
        if len(row) != len(header):
            raise DatasetError(
                f"line {line} has {len(row)} fields but the header has {len(header)}"
            )
        labels.append(row[t].strip())
        values = row[:t] + row[t + 1 :]
        try:
            pending.append([float(v) for v in values])
        except ValueError:
            raise DatasetError(_non_numeric_message(features, values, line)) from None
        if len(pending) >= chunk_rows:
            chunks.append(np.array(pending, dtype=np.float32))
            pending = []
    if pending:
        chunks.append(np.array(pending, dtype=np.float32))
    if not chunks:
        raise DatasetError("the CSV has a header but zero data rows")
    x = np.concatenate(chunks)
    bad = [features[i] for i in np.flatnonzero(~np.isfinite(x).all(axis=0))]
    if bad:
        raise DatasetError(f"NaN or inf (or a value too large) in column(s) {_names(bad)}")
    return x, labels


def _csv_header(stream: io.TextIOBase) -> tuple[int, list[str]]:
    """(lines read, column names), reading at most _MAX_HEADER_CHARS of the first line."""
    skipped = 0
    try:
        while line := stream.readline(_MAX_HEADER_CHARS):
            skipped += 1
            if line.strip():
                break
    except UnicodeDecodeError:
        raise DatasetError("the CSV is not UTF-8 text") from None
    if not line:
        raise DatasetError("empty file: a CSV needs a header row and data rows")
    if len(line) >= _MAX_HEADER_CHARS and not line.endswith(("\n", "\r")):
        raise DatasetError(f"the header row is too long (over {_MAX_HEADER_CHARS} characters)")
    try:
        return skipped, [h.strip() for h in next(csv.reader([line]))]
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV header: {exc}") from None


def _csv_rows(stream: io.TextIOBase, offset: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank data row."""
    reader = csv.reader(stream)
    try:
        for row in reader:
            if any(f.strip() for f in row):
                yield offset + reader.line_num, row
    except csv.Error as exc:
        raise DatasetError(f"malformed CSV near line {offset + reader.line_num}: {exc}") from None
    except UnicodeDecodeError:
        raise DatasetError("the CSV is not UTF-8 text") from None


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")


def _non_numeric_message(features: list[str], values: list[str], line: int) -> str:
    bad = [(name, v) for name, v in zip(features, values, strict=True) if not _is_float(v)]
    empty = [name for name, v in bad if not v.strip()]
    text = [f"{name!r} (e.g. {v.strip()[:30]!r})" for name, v in bad if v.strip()]
    parts = []
    if text:
        parts.append(f"non-numeric column(s) {', '.join(text[:10])}")
    if empty:
        parts.append(f"empty (missing) value(s) in column(s) {_names(empty)}")
    return f"line {line}: " + "; ".join(parts) + "; every column but the target must be numeric"


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _target_values(target: str, raw: list[str]) -> np.ndarray:
    """Numeric targets as float64; an all-text target as ids of its sorted distinct labels."""
    if any(not v for v in raw):
        raise DatasetError(f"target column {target!r} has empty (missing) values")
    numeric = [_is_float(v) for v in raw]
    if all(numeric):
        y = np.array([float(v) for v in raw], dtype=np.float64)
        if not np.isfinite(y).all():
            raise DatasetError(f"NaN or inf in target column {target!r}")
        return y
    if any(numeric):
        raise DatasetError(f"target column {target!r} mixes numbers and text")
    classes, ids = np.unique(np.array(raw), return_inverse=True)
    if len(classes) > MAX_CLASSES:
        raise DatasetError(
            f"too many classes in {target!r}: {len(classes)} (at most {MAX_CLASSES})"
        )
    return ids.astype(np.int64)
