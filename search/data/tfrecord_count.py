"""TFRecord files counted without TensorFlow: walk the length prefixes, check each one's
masked CRC-32C, skip the payloads.

Why apart from search.data.ref_headers: the CRC is a small codec of its own, and a file that
is not TFRecord (a sparse file of zeros reads as millions of empty records) must be refused
at its first record, not walked for minutes by an API request.
"""

from __future__ import annotations

import struct
from pathlib import Path

from search.errors import DatasetError

#: The most TFRecord records one registration counts (train and val files together): the
#: walk costs a few microseconds a record, so this bounds a request to a few minutes.
MAX_RECORDS = 100_000_000


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
