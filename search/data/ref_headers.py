"""What the API reads of a dataset registered by path: headers and schemas only, never the
data itself (the workers stream it).

- NPZ: each array's .npy header (shape, dtype), and y_train when the task or the classes
  are not given (read in chunks, after its header says it is one value per row); members
  must be stored uncompressed (`np.savez`), so a worker can map them instead of reading them
  whole.
- CSV: the header row; rows are counted by scanning for line ends (no parsing).
- Parquet: the footer's schema and row count (pyarrow, when installed).
- TFRecord: the records counted by search.data.tfrecord_count (no payload read).

The result is the `source` a dataset row keeps: what a worker needs to build its pipeline.
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from search.data.csv_reader import header_names
from search.data.dataset import (
    ARRAYS,
    MAX_FEATURES,
    MIN_ROWS,
    MIN_VAL_ROWS,
    Task,
    class_count,
    class_ids,
    infer_task,
)
from search.data.npz import check_member_size, member_header
from search.data.npz_labels import npz_labels
from search.data.references import VAL_EVERY, ReferenceRequest
from search.data.tfrecord_count import MAX_RECORDS, count_records
from search.errors import DatasetError

_SCAN_CHUNK = 4 * 1024 * 1024
MAX_HEADER_BYTES = 64 * (MAX_FEATURES + 2)


@dataclass
class RefInfo:
    """A registered dataset's shape and task, and the `source` its row keeps."""

    n_train: int
    n_val: int
    input_shape: list[int]
    task: Task
    n_classes: int | None
    size_bytes: int
    source: dict[str, Any] = field(default_factory=dict)


def read_headers(request: ReferenceRequest, train: list[Path], val: list[Path]) -> RefInfo:
    """The dataset as its headers describe it; a DatasetError says what is wrong."""
    reader = {"npz": _npz, "csv": _csv, "parquet": _parquet, "tfrecord": _tfrecord}
    info: RefInfo = reader[request.format](request, train, val)
    if info.n_train < MIN_ROWS or info.n_val < MIN_VAL_ROWS:
        raise DatasetError(
            f"too few rows: {info.n_train} training and {info.n_val} validation rows; "
            f"need at least {MIN_ROWS} and {MIN_VAL_ROWS}"
        )
    size = sum(p.stat().st_size for p in {*train, *val})
    info.size_bytes = size
    info.source.update(
        format=request.format,
        train=[str(p) for p in train],
        val=[str(p) for p in val],
        split_every=None if val else VAL_EVERY,
    )
    return info


def split_counts(total: int, val_rows: int | None) -> tuple[int, int]:
    """(train, val) rows: the val files' own count, or every VAL_EVERY-th of the records."""
    if val_rows is not None:
        return total, val_rows
    n_val = total // VAL_EVERY
    return total - n_val, n_val


def _one(files: list[Path], what: str) -> Path:
    if len(files) != 1:
        raise DatasetError(f"{what} must be exactly one file, got {len(files)}")
    return files[0]


def _declared(request: ReferenceRequest) -> tuple[Task, int | None, int]:
    task = request.task or "regression"
    n_classes = request.n_classes if task == "classification" else None
    return task, n_classes, (n_classes or 1)


# --- NPZ -------------------------------------------------------------------------------------


def _npz(request: ReferenceRequest, train: list[Path], val: list[Path]) -> RefInfo:
    if val:
        raise DatasetError("an NPZ holds its own validation arrays: give no val files")
    path = _one(train, "an NPZ dataset")
    headers = npz_layout(path)
    x_train, x_val = headers["x_train"], headers["x_val"]
    if x_train[0][1:] != x_val[0][1:]:
        raise DatasetError(f"x_train and x_val examples differ: {x_train[0]} vs {x_val[0]}")
    if math.prod(x_train[0][1:]) > MAX_FEATURES:
        raise DatasetError(f"too many features per example (at most {MAX_FEATURES})")
    task, n_classes = request.task, request.n_classes
    if task is None:
        task, n_classes = infer_task(npz_labels(path, headers, "y_train"))
    elif task == "classification" and n_classes is None:
        n_classes = class_count(class_ids(npz_labels(path, headers, "y_train"), "y_train"))
    y_shape = headers["y_train"][0]
    outputs = n_classes if task == "classification" else (1 if len(y_shape) == 1 else y_shape[1])
    return RefInfo(
        n_train=x_train[0][0],
        n_val=x_val[0][0],
        input_shape=list(x_train[0][1:]),
        task=task,
        n_classes=n_classes if task == "classification" else None,
        size_bytes=0,
        source={
            "shapes": {k: list(v[0]) for k, v in headers.items()},
            "dtypes": {k: v[1] for k, v in headers.items()},
            "offsets": {k: v[2] for k, v in headers.items()},
            "n_outputs": outputs,
        },
    )


NpzLayout: TypeAlias = dict[str, tuple[tuple[int, ...], str, int]]


def npz_layout(path: Path) -> NpzLayout:
    """Each array's (shape, dtype, data offset in the file), from its .npy header only.

    The headers are checked as an upload's are (`member_header`: no pickle, sizes matching
    the zip's), and the labels' shapes before any label is read: one value per row (1-D, or
    2-D with at most MAX_FEATURES outputs), as many rows as their x, and at most
    MAX_ARRAY_BYTES (`check_member_size`).
    """
    headers: NpzLayout = {}
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            members = {n.removesuffix(".npy"): archive.getinfo(n) for n in archive.namelist()}
            for key in ARRAYS:
                info = members.get(key)
                if info is None:
                    raise DatasetError(f"the NPZ has no {key}")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise DatasetError(
                        f"{key} is compressed (np.savez_compressed): a dataset by path must be "
                        "saved with np.savez, so workers can read it without loading it whole"
                    )
                header = member_header(archive, info, key)
                shape, dtype = header.shape, header.dtype
                if header.fortran or dtype.kind not in "biuf" or not shape:
                    raise DatasetError(f"{key} must be a plain numeric C-order array")
                if key.startswith("y_"):
                    _check_label_header(key, shape, headers[key.replace("y_", "x_")][0][0])
                    check_member_size(info, key)
                raw.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", raw.read(4))
                start = info.header_offset + 30 + name_len + extra_len
                headers[key] = (shape, dtype.str, start + header.offset)
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, struct.error, EOFError) as exc:
        raise DatasetError(f"not a readable NPZ: {exc}") from None
    widths = {headers[k][0][1:] for k in ("y_train", "y_val")}
    if len(widths) > 1 and max(math.prod(w) for w in widths) > 1:
        raise DatasetError(f"y_train and y_val rows differ: {' vs '.join(map(str, widths))}")
    return headers


def _check_label_header(key: str, shape: tuple[int, ...], x_rows: int) -> None:
    """Labels are one value (or a bounded row of outputs) per example of x, from the header."""
    if len(shape) > 2:
        raise DatasetError(
            f"{key} must be 1-D (or 2-D for several regression targets), got shape {shape}"
        )
    if len(shape) == 2 and shape[1] > MAX_FEATURES:
        raise DatasetError(
            f"{key} has {shape[1]} outputs per row (shape {shape}); at most {MAX_FEATURES}"
        )
    if shape[0] != x_rows:
        x_key = key.replace("y_", "x_")
        raise DatasetError(
            f"{x_key} and {key} have different numbers of rows ({x_rows} vs {shape[0]})"
        )


# --- CSV -------------------------------------------------------------------------------------


def _csv(request: ReferenceRequest, train: list[Path], val: list[Path]) -> RefInfo:
    path = _one(train, "a CSV dataset's train")
    header = csv_header(path)
    if request.target not in header:
        raise DatasetError(f"target column {request.target!r} is not in the header")
    if len(set(header)) != len(header) or len(header) < 2:
        raise DatasetError("the header needs distinct names and a column besides the target")
    val_rows = None
    if val:
        val_path = _one(val, "a CSV dataset's val")
        if csv_header(val_path) != header:
            raise DatasetError("the val file's header differs from the train file's")
        val_rows = count_lines(val_path) - 1
    n_train, n_val = split_counts(count_lines(path) - 1, val_rows)
    task, n_classes, outputs = _declared(request)
    return RefInfo(
        n_train,
        n_val,
        [len(header) - 1],
        task,
        n_classes,
        0,
        {"columns": header, "target": request.target, "n_outputs": outputs},
    )


def csv_header(path: Path) -> list[str]:
    """The first row's column names (read under a size cap)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            line = f.readline(MAX_HEADER_BYTES)
        except UnicodeDecodeError:
            raise DatasetError(f"{path.name} is not UTF-8 text") from None
    if not line.strip():
        raise DatasetError(f"{path.name} has no header row")
    try:
        return header_names(line)
    except DatasetError as exc:
        raise DatasetError(f"{path.name}: {exc}") from None


def count_lines(path: Path) -> int:
    """Non-empty lines, counted by scanning bytes for line ends (no parsing)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_SCAN_CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


# --- Parquet ---------------------------------------------------------------------------------


def _parquet(request: ReferenceRequest, train: list[Path], val: list[Path]) -> RefInfo:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            "Parquet needs pyarrow, which is not installed here (pip install pyarrow on the "
            "API and the workers)"
        ) from None
    path = _one(train, "a Parquet dataset's train")
    schema, rows = _parquet_meta(pq, path)
    if request.target not in schema:
        raise DatasetError(f"target column {request.target!r} is not in the schema")
    columns = [c for c in schema if c != request.target]
    val_rows = None
    if val:
        val_schema, val_rows = _parquet_meta(pq, _one(val, "a Parquet dataset's val"))
        if val_schema != schema:
            raise DatasetError("the val file's schema differs from the train file's")
    n_train, n_val = split_counts(rows, val_rows)
    task, n_classes, outputs = _declared(request)
    return RefInfo(
        n_train,
        n_val,
        [len(columns)],
        task,
        n_classes,
        0,
        {"columns": columns, "target": request.target, "n_outputs": outputs},
    )


def _parquet_meta(pq: Any, path: Path) -> tuple[list[str], int]:
    try:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
    except Exception as exc:
        raise DatasetError(f"{path.name} is not a readable Parquet file: {exc}") from None
    numeric = ("int", "uint", "float", "double", "bool", "halffloat")
    bad = [f.name for f in schema if not str(f.type).startswith(numeric)]
    if bad:
        raise DatasetError(f"non-numeric column(s) {', '.join(map(repr, bad[:10]))}")
    return [f.name for f in schema], int(meta.num_rows)


# --- TFRecord --------------------------------------------------------------------------------


def _tfrecord(request: ReferenceRequest, train: list[Path], val: list[Path]) -> RefInfo:
    assert request.features is not None and request.label is not None
    total = 0
    for path in train:
        total += count_records(path, MAX_RECORDS - total)
    val_total = 0  # MAX_RECORDS holds for train and val together
    for path in val:
        val_total += count_records(path, MAX_RECORDS - total - val_total)
    n_train, n_val = split_counts(total, val_total if val else None)
    inputs = {k: v for k, v in request.features.items() if k != request.label}
    sizes = [math.prod(f.shape) for f in inputs.values()]
    shape = next(iter(inputs.values())).shape if len(inputs) == 1 else [sum(sizes)]
    if math.prod(shape) > MAX_FEATURES:
        raise DatasetError(f"too many features per example (at most {MAX_FEATURES})")
    task, n_classes, outputs = _declared(request)
    label = request.features[request.label]
    if task == "regression":
        outputs = math.prod(label.shape)
    train_bytes = sum(p.stat().st_size for p in train)
    return RefInfo(
        n_train,
        n_val,
        list(shape) or [1],
        task,
        n_classes,
        0,
        {
            "features": {k: v.model_dump() for k, v in request.features.items()},
            "label": request.label,
            "n_outputs": outputs,
            "record_bytes": max(1, train_bytes // max(total, 1)),
        },
    )


__all__ = [
    "RefInfo",
    "count_lines",
    "npz_layout",
    "read_headers",
]
