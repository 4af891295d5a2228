"""Datasets registered by path: files on shared storage (mounted at the same path on the
workers) under one of the configured data roots, never copied, streamed by the workers.

The path rules, checked by the API when a dataset is registered and again by a worker
before it opens a file: a path is relative to a root or absolute inside one; `..` is
refused outright; the path is resolved (symlinks followed) and the result must still lie
inside the same root, so a symlink whose target leaves the root is refused; only regular
files are accepted. The API reads headers and schemas only (`search.data.ref_headers`).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from search.data.dataset import MAX_CLASSES, Task
from search.errors import DatasetError

Format = Literal["npz", "csv", "parquet", "tfrecord"]
FORMATS: tuple[str, ...] = ("npz", "csv", "parquet", "tfrecord")
#: The most files one pattern may match (shards of a TFRecord dataset).
MAX_FILES = 10_000
#: Without `val` files, every VAL_EVERY-th record (the last of each group) is validation.
VAL_EVERY = 5
MAX_PATH_CHARS = 4096


class FeatureSpec(BaseModel):
    """One TFRecord feature: its dtype and its shape per example ([] for a scalar)."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float32", "int64"]
    shape: list[int] = Field(default_factory=list, max_length=4)

    @model_validator(mode="after")
    def _positive(self) -> FeatureSpec:
        if any(d < 1 for d in self.shape):
            raise ValueError("every dimension of a feature's shape must be at least 1")
        return self


class ReferenceRequest(BaseModel):
    """`POST /v1/datasets/by-reference`: which files, and how to read them."""

    model_config = ConfigDict(extra="forbid")

    format: Format
    train: list[str] = Field(min_length=1, max_length=100)
    val: list[str] = Field(default_factory=list, max_length=100)
    name: str | None = Field(None, max_length=200)
    target: str | None = Field(None, min_length=1, max_length=200)
    task: Task | None = None
    n_classes: int | None = Field(None, ge=2, le=MAX_CLASSES)
    features: dict[str, FeatureSpec] | None = Field(None, max_length=64)
    label: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _one_path_is_a_list(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("train", "val"):
                if isinstance(data.get(key), str):
                    data[key] = [data[key]]
        return data

    @model_validator(mode="after")
    def _what_each_format_needs(self) -> ReferenceRequest:
        missing = [f for f in _NEEDS[self.format] if getattr(self, f) is None]
        if self.task == "classification" and self.format != "npz" and self.n_classes is None:
            missing.append("n_classes")
        if missing:
            raise ValueError(f"a {self.format} dataset needs {', '.join(missing)}")
        if self.format == "tfrecord":
            assert self.features is not None
            if self.label not in self.features or len(self.features) < 2:
                raise ValueError("label must name one of features, and features need one more")
        return self


_NEEDS: dict[str, tuple[str, ...]] = {
    "npz": (),
    "csv": ("target", "task"),
    "parquet": ("target", "task"),
    "tfrecord": ("features", "label", "task"),
}


def check_roots(roots: Sequence[Path]) -> list[Path]:
    """The configured roots, resolved; a DatasetError when there are none."""
    if not roots:
        raise DatasetError(
            "no data roots are configured: set LRSEARCH_DATA_ROOTS to the shared directories "
            "datasets may be registered from"
        )
    return [Path(r).resolve() for r in roots]


def resolve_files(patterns: Sequence[str], roots: Sequence[Path], *, glob_ok: bool) -> list[Path]:
    """Every file the patterns name, resolved and checked inside a root (sorted per pattern);
    a DatasetError names the first that breaks a rule."""
    resolved_roots = check_roots(roots)
    files: list[Path] = []
    for pattern in patterns:
        files.extend(_one(pattern, resolved_roots, glob_ok))
        if len(files) > MAX_FILES:
            raise DatasetError(f"the paths match more than {MAX_FILES} files")
    return files


def check_inside(path: str | Path, roots: Sequence[Path]) -> Path:
    """A stored absolute path, checked again (a worker does before it reads): still a regular
    file, resolving inside the root it is in."""
    return _checked(Path(path), check_roots(roots), str(path))


def _one(pattern: str, roots: list[Path], glob_ok: bool) -> list[Path]:
    if not pattern or len(pattern) > MAX_PATH_CHARS or "\x00" in pattern:
        raise DatasetError("a path must be 1 to 4096 characters, without NUL")
    if ".." in Path(pattern).parts:
        raise DatasetError(f"{pattern!r}: '..' is not allowed in a path")
    is_glob = glob.has_magic(pattern)
    if is_glob and not glob_ok:
        raise DatasetError(f"{pattern!r}: patterns are only allowed for TFRecord shards")
    for root in _candidate_roots(pattern, roots):
        joined = Path(pattern) if Path(pattern).is_absolute() else root / pattern
        if is_glob:
            matches = sorted(Path(p) for p in glob.glob(str(joined)))
            if matches:
                return [_checked(m, [root], pattern) for m in matches]
        elif joined.exists() or joined.is_symlink():
            return [_checked(joined, [root], pattern)]
    raise DatasetError(f"{pattern!r}: no such file under the data roots")


def _candidate_roots(pattern: str, roots: list[Path]) -> list[Path]:
    """An absolute path belongs to the root it is written under (checked before any symlink
    is followed); a relative one is tried against each root in order."""
    path = Path(pattern)
    if not path.is_absolute():
        return roots
    inside = [r for r in roots if path.is_relative_to(r)]
    if not inside:
        raise DatasetError(f"{pattern!r} is not under a data root (LRSEARCH_DATA_ROOTS)")
    return inside[:1]


def _checked(path: Path, roots: list[Path], shown: str) -> Path:
    """The path resolved (symlinks followed) inside one of `roots`, a regular file."""
    root = next((r for r in roots if path.is_relative_to(r)), None)
    if root is None:
        raise DatasetError(f"{shown!r} is not under a data root (LRSEARCH_DATA_ROOTS)")
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DatasetError(f"{shown!r}: no such file (or a broken symlink)") from None
    if not real.is_relative_to(root):
        raise DatasetError(f"{shown!r} is a symlink whose target leaves its data root")
    if not real.is_file():
        raise DatasetError(f"{shown!r} is not a regular file")
    return real


__all__ = [
    "FORMATS",
    "MAX_FILES",
    "VAL_EVERY",
    "FeatureSpec",
    "Format",
    "ReferenceRequest",
    "check_inside",
    "check_roots",
    "resolve_files",
]
