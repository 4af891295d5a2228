"""NPZ files: read member by member (sizes checked first, never unpickling), write atomically."""

from __future__ import annotations

import io
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from search.data.checks import assemble
from search.data.dataset import ARRAYS, MAX_ARRAY_BYTES, TASKS, Dataset, Source, Task
from search.errors import DatasetError


def read_npz(source: Source, name: str | None = None) -> Dataset:
    """Read an NPZ with x_train, y_train, x_val, y_val (never unpickling anything).

    `name` defaults to the name `save_npz` stored, else "upload". An optional stored `task`
    keeps whole-number regression targets from being read back as classes.
    """
    arrays = _read_npz_arrays(source)
    stored_name = _scalar_str(arrays.get("name"), "name")
    stored_task = _scalar_str(arrays.get("task"), "task")
    task: Task | None = None
    for known in TASKS:
        if stored_task == known:
            task = known
    if stored_task is not None and task is None:
        raise DatasetError(f"stored task must be one of {', '.join(TASKS)}, got {stored_task!r}")
    x_train, y_train, x_val, y_val = (arrays[k] for k in ARRAYS)
    return assemble(name or stored_name or "upload", x_train, y_train, x_val, y_val, task=task)


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
