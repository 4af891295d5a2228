"""CSV files: a headed table whose `target` column is the label and every other a feature.

The header is read (and bounded) before any row; rows are parsed in chunks so a large file never
holds more than about a million Python floats at once. The target streams too: numbers into a
float64 buffer, text labels into a dict of at most MAX_CLASSES short labels and an int64 id per
row, so memory stays a few bytes per row whatever the labels look like.
"""

from __future__ import annotations

import csv
import io
from array import array
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
#: The longest target value (a class label or a number), in characters.
MAX_LABEL_CHARS = 200


def read_csv(
    source: Source, target: str, name: str = "upload", seed: int = 0, val_fraction: float = 0.2
) -> Dataset:
    """Read a headed CSV; `target` is the label column, every other column a numeric feature.

    A numeric target is classification when its values are exactly the ids 0..K-1, else
    regression; a text target is classification with ids given to the sorted labels.
    """
    check_fraction(val_fraction)
    with _text_stream(source) as stream:
        x, column = _parse_csv(stream, target)
    y = column.values()
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


def _parse_csv(stream: io.TextIOBase, target: str) -> tuple[np.ndarray, _TargetColumn]:
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
    column = _TargetColumn(target)
    for line, row in _csv_rows(stream, offset=skipped):
        if len(row) != len(header):
            raise DatasetError(
                f"line {line} has {len(row)} fields but the header has {len(header)}"
            )
        column.add(row[t].strip(), line)
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
    _refuse_row_index(features, x)
    return x, column


def _refuse_row_index(features: list[str], x: np.ndarray) -> None:
    """An unnamed first column counting 0, 1, 2... is pandas' index (`df.to_csv()` without
    `index=False`): as a feature it would tell the model each row's position, silently."""
    if features[0] == "" and np.array_equal(x[:, 0], np.arange(len(x), dtype=x.dtype)):
        raise DatasetError(
            "the first column has no name and counts the rows 0, 1, 2...: a row index (pandas "
            "writes one unless df.to_csv(..., index=False)); remove it, or name it to keep it"
        )


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
    return skipped, header_names(line)


def header_names(line: str) -> list[str]:
    """The column names of a header line; a quoted name still open at the line's end (a
    newline inside quotes) is refused, as the line holds only part of the header."""
    try:
        next(csv.reader([line], strict=True))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise DatasetError(
                "the header row has a quoted column name that runs past the end of the line "
                "(a newline inside quotes); column names must be on the first line"
            ) from None
    try:
        return [h.strip() for h in next(csv.reader([line]))]
    except (csv.Error, StopIteration) as exc:
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


class _TargetColumn:
    """The target column as it streams: all numbers (float64) or all text labels, each label
    given an id on first sight (a dict, so MAX_CLASSES labels of MAX_LABEL_CHARS at most are
    held, never a row's worth of strings)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.numbers = array("d")
        self.ids = array("q")
        self.classes: dict[str, int] = {}
        self.first = ""

    def add(self, value: str, line: int) -> None:
        """One row's target value, checked at once so a bad one is refused by its line."""
        known = self.classes.get(value)
        if known is not None:
            self.ids.append(known)
            return
        if not value:
            raise DatasetError(
                f"target column {self.name!r} has empty (missing) values (line {line})"
            )
        if len(value) > MAX_LABEL_CHARS:
            raise DatasetError(
                f"target column {self.name!r}, line {line}: a value of {len(value)} characters "
                f"(at most {MAX_LABEL_CHARS})",
                field="target",
            )
        if not self.first:
            self.first = value
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if self.classes:
                raise self._mixed(line)
            self.numbers.append(number)
            return
        if self.numbers:
            raise self._mixed(line)
        if len(self.classes) >= MAX_CLASSES:
            raise DatasetError(
                f"too many classes in {self.name!r}: more than {MAX_CLASSES} distinct labels "
                f"by line {line} (at most {MAX_CLASSES})",
                field="target",
            )
        self.classes[value] = len(self.classes)
        self.ids.append(self.classes[value])

    def values(self) -> np.ndarray:
        """Numbers as float64; text labels as int64 ids of the sorted distinct labels."""
        if self.numbers:
            y = np.frombuffer(self.numbers, dtype=np.float64).copy()
            if not np.isfinite(y).all():
                raise DatasetError(f"NaN or inf in target column {self.name!r}")
            self._check_varies(bool((y != y[0]).any()), len(y), "nothing to learn")
            return y
        rank = np.empty(len(self.classes), dtype=np.int64)
        for position, label in enumerate(sorted(self.classes)):
            rank[self.classes[label]] = position
        self._check_varies(
            len(self.classes) > 1, len(self.ids), "classification needs at least 2 classes"
        )
        return rank[np.frombuffer(self.ids, dtype=np.int64)]

    def _mixed(self, line: int) -> DatasetError:
        return DatasetError(f"target column {self.name!r} mixes numbers and text (line {line})")

    def _check_varies(self, varies: bool, rows: int, why: str) -> None:
        """A target with one distinct value leaves nothing to learn: refused on the `target`
        field (a numeric one would otherwise be read as a constant regression)."""
        if not varies:
            raise DatasetError(
                f"target column {self.name!r} has one distinct value ({self.first[:40]!r} in "
                f"all {rows} rows): {why}; choose a column whose values vary",
                field="target",
            )
