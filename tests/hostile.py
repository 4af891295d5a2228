"""Hostile NPZ archives written by hand (zip bombs, zips whose headers lie) and a measure of a
process's peak memory, for the tests and benchmarks/hostile_uploads.py.

The archives are built streaming: a 1 GiB bomb never holds more than its ~5 MB of deflate.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1024 * 1024
GiB = 1024 * MiB


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """The .npy header numpy writes for an array of this shape (no data)."""
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)  # type: ignore[arg-type]
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def zeros(total: int, chunk: int = MiB) -> Iterator[bytes]:
    """`total` zero bytes, one chunk at a time."""
    block = bytes(chunk)
    while total > 0:
        yield block[: min(chunk, total)]
        total -= chunk


def small_arrays() -> dict[str, np.ndarray]:
    """A valid little dataset (40 + 10 rows, 3 features, 3 classes)."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(40, 3)).astype(np.float32),
        "y_train": np.arange(40) % 3,
        "x_val": rng.normal(size=(10, 3)).astype(np.float32),
        "y_val": np.arange(10) % 3,
    }


Member = tuple[str, Iterable[bytes], "int | None"]


def write_zip(path: Path, members: Iterable[Member], flags: int = 0) -> None:
    """A zip of deflated members, each from its chunks. When a member's declared size is given,
    its zip headers (size and CRC) describe only that many first bytes: the stream has more."""
    directory, offset = [], 0
    with path.open("wb") as out:
        for name, chunks, declared in members:
            deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
            packed, crc, size, crc_declared = io.BytesIO(), 0, 0, 0
            for chunk in chunks:
                if declared is not None and size < declared:
                    crc_declared = zlib.crc32(chunk[: declared - size], crc_declared)
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
                packed.write(deflate.compress(chunk))
            packed.write(deflate.flush())
            if declared is not None:
                crc, size = crc_declared, declared
            data, raw_name = packed.getvalue(), name.encode()
            fields = (20, flags, 8, 0, 0x21, crc, len(data), size, len(raw_name), 0)
            local = struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields)
            out.write(local + raw_name + data)
            central = struct.pack("<4s6H3L5HLL", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, offset)
            directory.append(central + raw_name)
            offset += len(local) + len(raw_name) + len(data)
        listing, n = b"".join(directory), min(len(directory), 0xFFFF)  # zipfile reads it all
        out.write(listing)
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(listing), offset, 0))


def zip_bomb(path: Path, expands_to: int = GiB) -> Path:
    """A valid-looking NPZ whose x_train (float32 zeros) decompresses to `expands_to` bytes."""
    rows = expands_to // 4
    members: list[Member] = [("x_train.npy", [npy_header((rows, 1)), *zeros(rows * 4)], None)]
    members += [
        (f"{k}.npy", [npy_bytes(a)], None) for k, a in small_arrays().items() if k != "x_train"
    ]
    write_zip(path, members)
    return path


def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    """A process's resident memory (VmRSS) or its peak since the last reset (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int | str = "self") -> bool:
    """Reset the process's VmHWM to its current RSS (Linux); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_growth(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn's result or the exception it raised, how far this process's peak RSS rose above its
    RSS before the call). Raises RuntimeError where the peak cannot be reset."""
    if not reset_peak():
        raise RuntimeError("cannot reset VmHWM (/proc/self/clear_refs)")
    before = rss_bytes()
    try:
        result: Any = fn()
    except Exception as exc:  # handed back to the caller to assert on
        result = exc
    return result, rss_bytes(field="VmHWM") - before


def stored_npz(path: Path, arrays: dict[str, tuple[bytes, int]]) -> Path:
    """An uncompressed NPZ (as np.savez writes) whose members are their first bytes (a .npy
    header, maybe some data) and then `size` zero bytes left as a hole in the file: a sparse
    file whose arrays claim GBs takes no disk. Each member's zip CRC is its content's."""
    directory, offset = [], 0
    with path.open("wb") as out:
        for key, (header, size) in arrays.items():
            crc = zlib.crc32(header)
            for chunk in zeros(size, 16 * MiB):
                crc = zlib.crc32(chunk, crc)
            raw_name, total = f"{key}.npy".encode(), len(header) + size
            fields = (20, 0, 0, 0, 0x21, crc, total, total, len(raw_name), 0)
            local = struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields)
            out.write(local + raw_name + header)
            out.seek(size, io.SEEK_CUR)
            central = struct.pack("<4s6H3L5HLL", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, offset)
            directory.append(central + raw_name)
            offset += len(local) + len(raw_name) + total
        listing, n = b"".join(directory), len(directory)
        out.write(listing)
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(listing), offset, 0))
    return path
