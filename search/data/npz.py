"""NPZ files: sizes checked from the zip and .npy headers before anything is decompressed,
arrays read in bounded chunks (never unpickling); written atomically.

An upload is hostile: a few MB of deflated zeros can expand to GBs, and a zip's sizes can lie.
So the total is bounded before any data is read, and each array is read into a buffer sized
from its .npy header, refusing a stream that yields more or fewer bytes than the header says.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from search.data.checks import assemble
from search.data.dataset import ARRAYS, MAX_ARRAY_BYTES, TASKS, Dataset, Source, Task
from search.errors import DatasetError

MEMBERS = (*ARRAYS, "name", "task")  # all an NPZ may hold (name and task: written by save_npz)
MAX_NPZ_BYTES = 4 * MAX_ARRAY_BYTES  # decompressed total when the caller sets no limit
_MAX_DIRECTORY_BYTES = 64 * 1024  # the zip's central directory, parsed whole by zipfile
_HEADER_BYTES = 16 * 1024  # at most this much of a member is decompressed to read its header
_CHUNK = 1024 * 1024
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # bzip2/lzma decompress unbounded chunks
_ALLOWED = ", ".join(f"{k}.npy" for k in MEMBERS)


def read_npz(source: Source, name: str | None = None, max_bytes: int = MAX_NPZ_BYTES) -> Dataset:
    """Read an NPZ with x_train, y_train, x_val, y_val (never unpickling anything).

    `max_bytes` bounds the arrays' decompressed total, checked from the headers first.
    `name` defaults to the name `save_npz` stored, else "upload". An optional stored `task`
    keeps whole-number regression targets from being read back as classes.
    """
    arrays = _read_npz_arrays(source, max_bytes)
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


@dataclass(frozen=True)
class NpyHeader:
    """What a member's .npy header says: the array, and where its data starts."""

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _read_npz_arrays(source: Source, max_bytes: int) -> dict[str, np.ndarray]:
    """The four arrays (plus optional name/task): the total bounded before any is decompressed."""
    with _binary_stream(source) as fileobj:
        head = fileobj.read(4)
        if not head:
            raise DatasetError("empty file")
        if not head.startswith(b"PK"):
            raise DatasetError("not a valid NPZ file: expected a zip archive from numpy.savez")
        _check_directory(fileobj)
        fileobj.seek(0)
        with _open_zip(fileobj) as archive:
            members = _members(archive)
            _check_total(sum(info.file_size for info in members.values()), max_bytes)
            headers = {k: member_header(archive, info, k) for k, info in members.items()}
            return {k: _read_data(archive, members[k], headers[k], k) for k in members}


def array_shape(source: Source, key: str) -> tuple[int, ...]:
    """The shape of one array of a stored NPZ, from its .npy header only (the API reads an
    upload's target width at submit without loading the arrays)."""
    with _binary_stream(source) as fileobj, _open_zip(fileobj) as archive:
        members = _members(archive)
        if key not in members:
            raise DatasetError(f"the NPZ has no {key}")
        return member_header(archive, members[key], key).shape


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


def _check_directory(fileobj: IO[bytes]) -> None:
    """Bound the central directory from its end record, before zipfile parses all of it."""
    try:
        end = zipfile._EndRecData(fileobj)  # type: ignore[attr-defined]  # what ZipFile reads
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"not a valid NPZ file (truncated or corrupt): {exc}") from None
    if end is None:
        return  # not a zip: ZipFile says so
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > len(MEMBERS) or size > _MAX_DIRECTORY_BYTES:
        raise DatasetError(
            f"the NPZ lists {entries} members ({size} bytes of directory); "
            f"it may hold at most {len(MEMBERS)}: {_ALLOWED}"
        )


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Each expected member once, plain or deflated; anything else is refused by name."""
    infos = archive.infolist()
    if len(infos) > len(MEMBERS):
        raise DatasetError(f"the NPZ has {len(infos)} members; it may hold at most {_ALLOWED}")
    found: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key, shown = _member_key(info.filename), repr(info.filename[:80])
        if key not in MEMBERS:
            raise DatasetError(f"unexpected member {shown} in the NPZ; it may hold only {_ALLOWED}")
        if key in found:
            raise DatasetError(f"the NPZ holds {key} twice ({found[key].filename[:80]!r}, {shown})")
        if info.flag_bits & 0x1:
            raise DatasetError(f"{key} is encrypted; store plain arrays (numpy.savez)")
        if info.compress_type not in _METHODS:
            raise DatasetError(
                f"{key} uses zip compression method {info.compress_type}; only stored "
                "(numpy.savez) or deflated (numpy.savez_compressed) members are read"
            )
        check_member_size(info, key)
        found[key] = info
    missing = [k for k in ARRAYS if k not in found]
    if missing:
        raise DatasetError(
            f"NPZ is missing key(s) {', '.join(missing)}; it needs {', '.join(ARRAYS)}"
        )
    return found


def check_member_size(info: zipfile.ZipInfo, key: str) -> None:
    """A member over MAX_ARRAY_BYTES is refused from the zip's directory, before it is read."""
    if info.file_size > MAX_ARRAY_BYTES:
        raise DatasetError(f"{key} is too large: {info.file_size} bytes (max {MAX_ARRAY_BYTES})")


def _member_key(name: str) -> str:
    return name[: -len(".npy")] if name.endswith(".npy") else name


def _check_total(total: int, max_bytes: int) -> None:
    """The zip's declared sizes: each .npy header must then match its own (`member_header`)."""
    if total > max_bytes:
        raise DatasetError(
            f"the NPZ decompresses to {total} bytes, over the limit of {max_bytes} bytes "
            "(read from its headers; nothing was decompressed)"
        )


def read_npy_header(stream: IO[bytes], key: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, fortran order, dtype) of the .npy header at the stream's position (versions
    1.0 and 2.0); the stream is left at the array's data."""
    fmt = np.lib.format
    version = fmt.read_magic(stream)
    if version == (1, 0):
        return fmt.read_array_header_1_0(stream)
    if version == (2, 0):
        return fmt.read_array_header_2_0(stream)
    raise DatasetError(f"{key}: unsupported .npy format version {version}")


def _open_zip(fileobj: IO[bytes]) -> zipfile.ZipFile:
    """The archive, or a DatasetError saying it is not a readable NPZ."""
    try:
        return zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"not a valid NPZ file (truncated or corrupt): {exc}") from None


def member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> NpyHeader:
    """The member's .npy header, from its first bytes only; its sizes must match the zip's
    (so the data an array's header describes is all there, and no more)."""
    with _member_errors(key):
        with archive.open(info) as f:
            stream = io.BytesIO(f.read(min(_HEADER_BYTES, info.file_size)))
        shape, fortran, dtype = read_npy_header(stream, key)
    if dtype.hasobject:
        raise DatasetError(
            f"{key} is a pickled/object array; pickle is not allowed (store plain numeric "
            "arrays, e.g. with numpy.savez)"
        )
    if any(d < 0 for d in shape):
        raise DatasetError(f"not a valid NPZ file: {key} has a negative shape {shape}")
    header = NpyHeader(tuple(shape), bool(fortran), dtype, stream.tell())
    held = info.file_size - header.offset
    if header.nbytes != held:
        what = "is truncated" if header.nbytes > held else "holds more than its header describes"
        raise DatasetError(
            f"not a valid NPZ file: {key} {what} ({header.nbytes} bytes described, "
            f"{max(held, 0)} in the archive)"
        )
    return header


def _read_data(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: NpyHeader, key: str
) -> np.ndarray:
    """The array, read in bounded chunks into a buffer the header sized, never past it."""
    size = header.nbytes
    buffer = bytearray(size)
    view = memoryview(buffer)
    with _member_errors(key), archive.open(info) as f:
        if len(f.read(header.offset)) != header.offset:
            raise DatasetError(f"not a valid NPZ file: {key} is truncated")
        done = 0
        while done < size:
            chunk = f.read(min(_CHUNK, size - done))
            if not chunk:
                raise DatasetError(
                    f"not a valid NPZ file: {key} is truncated ({done} of {size} bytes)"
                )
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
        if f.read(1):
            raise DatasetError(f"not a valid NPZ file: {key} holds more than its header describes")
    order: Literal["C", "F"] = "F" if header.fortran else "C"
    return np.ndarray(header.shape, dtype=header.dtype, buffer=buffer, order=order)


@contextmanager
def _member_errors(key: str) -> Iterator[None]:
    """zipfile, zlib and numpy errors of one member as a DatasetError naming it."""
    try:
        yield
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
