"""What the API reads of a dataset registered by path: headers and schemas only, never the
data itself (the workers stream it).

- NPZ: each array's .npy header (shape, dtype), and the small label arrays (to know the
  task and the classes); members must be stored uncompressed (`np.savez`), so a worker can
  map them instead of reading them whole.
- CSV: the header row; rows are counted by scanning for line ends (no parsing).
- Parquet: the footer's schema and row count (pyarrow, when installed).
- TFRecord: the records counted by walking their length prefixes (seeks, no payload read),
  each length checked against its masked CRC-32C (pure Python, no TensorFlow).

The result is the `source` a dataset row keeps: what a worker needs to build its pipeline.
"""

from __future__ import annotations

import math
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
from search.data.npz import read_npy_header
from search.data.references import VAL_EVERY, ReferenceRequest
from search.errors import DatasetError

_SCAN_CHUNK = 4 * 1024 * 1024
MAX_HEADER_BYTES = 64 * (MAX_FEATURES + 2)
#: The most TFRecord records one registration counts (train and val files together): the
#: walk costs a few microseconds a record, so this bounds a request to a few minutes.
MAX_RECORDS = 100_000_000


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
    headers, labels = npz_layout(path)
    x_train, x_val = headers["x_train"], headers["x_val"]
    if x_train[0][1:] != x_val[0][1:]:
        raise DatasetError(f"x_train and x_val examples differ: {x_train[0]} vs {x_val[0]}")
    if math.prod(x_train[0][1:]) > MAX_FEATURES:
        raise DatasetError(f"too many features per example (at most {MAX_FEATURES})")
    task, n_classes = request.task, request.n_classes
    if task is None:
        task, n_classes = infer_task(labels["y_train"])
    elif task == "classification" and n_classes is None:
        n_classes = class_count(class_ids(labels["y_train"], "y_train"))
    y = labels["y_train"]
    outputs = n_classes if task == "classification" else (1 if y.ndim == 1 else y.shape[1])
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


def npz_layout(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str, int]], dict[str, Any]]:
    """Each array's (shape, dtype, data offset in the file) from its header, and the label
    arrays read whole (one value per row)."""
    fmt = np.lib.format
    headers: dict[str, tuple[tuple[int, ...], str, int]] = {}
    labels: dict[str, np.ndarray] = {}
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
                raw.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", raw.read(4))
                raw.seek(info.header_offset + 30 + name_len + extra_len)
                shape, fortran, dtype = read_npy_header(raw, key)
                if dtype.hasobject or fortran or dtype.kind not in "biuf" or not shape:
                    raise DatasetError(f"{key} must be a plain numeric C-order array")
                headers[key] = (tuple(int(d) for d in shape), dtype.str, raw.tell())
                if key.startswith("y_"):
                    with archive.open(info) as member:
                        labels[key] = fmt.read_array(member, allow_pickle=False)
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, struct.error, EOFError) as exc:
        raise DatasetError(f"not a readable NPZ: {exc}") from None
    for split in ("train", "val"):
        if headers[f"x_{split}"][0][0] != headers[f"y_{split}"][0][0]:
            raise DatasetError(f"x_{split} and y_{split} have different numbers of rows")
    return headers, labels


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
    val_rows = 0 if val else None
    for path in val:
        val_rows = (val_rows or 0) + count_records(path, MAX_RECORDS - total - (val_rows or 0))
    n_train, n_val = split_counts(total, val_rows)
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


def count_records(path: Path, budget: int = MAX_RECORDS) -> int:
    """TFRecord records in a file, by walking the length prefixes (payloads are skipped).

    Each length's masked CRC-32C is checked, so a file that is not TFRecord (a sparse file
    of zeros reads as millions of empty records) is refused at its first record, not walked
    to the end; a file whose records do not end exactly at its end is refused as truncated;
    past `budget` records (what the request has left of MAX_RECORDS) the walk stops.
    """
    size, offset, records = path.stat().st_size, 0, 0
    with open(path, "rb") as f:
        while offset < size:
            head = f.read(12)
            if len(head) < 12:
                raise DatasetError(f"{path.name} is not a TFRecord file (truncated record)")
            (length,) = struct.unpack("<Q", head[:8])
            (crc,) = struct.unpack("<I", head[8:])
            if masked_crc32c(head[:8]) != crc:
                raise DatasetError(
                    f"{path.name} is not a TFRecord file (or is corrupt): the length of record "
                    f"{records} at byte {offset} fails its CRC-32C check"
                )
            offset += 12 + length + 4
            if offset > size:
                raise DatasetError(f"{path.name} is not a TFRecord file (truncated record)")
            records += 1
            if records > budget:
                raise DatasetError(
                    f"too many TFRecord records: the files hold more than {MAX_RECORDS} (at "
                    f"most {MAX_RECORDS} per dataset; counting stopped in {path.name})"
                )
            f.seek(offset)
    return records


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C (Castagnoli) of `data`; pure Python (a table, a byte at a
    time), as the API never imports TensorFlow and only the 8-byte lengths are checked."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


__all__ = [
    "MAX_RECORDS",
    "RefInfo",
    "count_lines",
    "count_records",
    "masked_crc32c",
    "npz_layout",
    "read_headers",
]
