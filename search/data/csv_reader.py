"""CSV files: a headed table whose `target` column is the label and every other a feature.

The header is read (and bounded) before any row; rows are parsed in chunks so a large file never
holds more than about a million Python floats at once.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from search.data.checks import assemble
from search.data.dataset import MAX_CLASSES, MAX_FEATURES, Dataset, Source, infer_task
from search.data.splits import check_fraction, check_split_sizes, split
from search.errors import DatasetError

MAX_HEADER_CHARS = 64 * (MAX_FEATURES + 2)


def read_csv(
    source: Source, target: str, name: str = "upload", seed: int = 0, val_fraction: float = 0.2
) -> Dataset:
    """Read a headed CSV; `target` is the label column, every other column a numeric feature.

    A numeric target is classification when its values are exactly the ids 0..K-1, else
    regression; a text target is classification with ids given to the sorted labels.
    """
    check_fraction(val_fraction)
    with _text_stream(source) as stream:
        x, raw_target = _parse_csv(stream, target)
    y = _target_values(target, raw_target)
    task, n_classes = infer_task(y)
    if task == "classification":
        y = y.astype(np.int64)
    x_tr, x_va, y_tr, y_va = split(x, y, seed, val_fraction, stratify=task == "classification")
    check_split_sizes(len(x), len(x_tr), len(x_va))
    return assemble(name, x_tr, y_tr, x_va, y_va, task=task, n_classes=n_classes)


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
    """(lines read, column names), reading at most MAX_HEADER_CHARS of the first line."""
    skipped = 0
    try:
        while line := stream.readline(MAX_HEADER_CHARS):
            skipped += 1
            if line.strip():
                break
    except UnicodeDecodeError:
        raise DatasetError("the CSV is not UTF-8 text") from None
    if not line:
        raise DatasetError("empty file: a CSV needs a header row and data rows")
    if len(line) >= MAX_HEADER_CHARS and not line.endswith(("\n", "\r")):
        raise DatasetError(f"the header row is too long (over {MAX_HEADER_CHARS} characters)")
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
        _check_varies(target, np.unique(y), raw, "nothing to learn")
        return y
    if any(numeric):
        raise DatasetError(f"target column {target!r} mixes numbers and text")
    classes, ids = np.unique(np.array(raw), return_inverse=True)
    _check_varies(target, classes, raw, "classification needs at least 2 classes")
    if len(classes) > MAX_CLASSES:
        raise DatasetError(
            f"too many classes in {target!r}: {len(classes)} (at most {MAX_CLASSES})"
        )
    return ids.astype(np.int64)


def _check_varies(target: str, distinct: np.ndarray, raw: list[str], why: str) -> None:
    """A target with one distinct value leaves nothing to learn: refused on the `target`
    field (a numeric one would otherwise be read as a constant regression)."""
    if len(distinct) < 2:
        raise DatasetError(
            f"target column {target!r} has one distinct value ({raw[0][:40]!r} in all "
            f"{len(raw)} rows): {why}; choose a column whose values vary",
            field="target",
        )
