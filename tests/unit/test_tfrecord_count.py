"""count_records, the API's TFRecord walk: real files written by TensorFlow are counted
exactly, and files whose length fields fail their masked CRC-32C are refused at the first
bad record, by name and offset (the API itself never imports TensorFlow)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from search.data import tfrecord_count
from search.data.tfrecord_count import count_records, masked_crc32c
from search.errors import DatasetError

tf = pytest.importorskip("tensorflow")


def _examples(path: Path, n: int) -> list[int]:
    """n tf.train.Examples of varied sizes, written by TensorFlow; their offsets."""
    offsets, offset = [], 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            features = {
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5] * (i % 7 + 1))),
                "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
            }
            data = tf.train.Example(features=tf.train.Features(feature=features))
            payload = data.SerializeToString()
            writer.write(payload)
            offsets.append(offset)
            offset += 16 + len(payload)
    return offsets


def test_crc32c_matches_the_castagnoli_check_value_and_tensorflows_mask() -> None:
    rotated = (masked_crc32c(b"123456789") - 0xA282EAD8) & 0xFFFFFFFF
    unmasked = ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
    assert unmasked == 0xE3069283  # CRC-32C's published check value


def test_tensorflow_records_are_counted_exactly(tmp_path: Path) -> None:
    path = tmp_path / "real.tfrecord"
    _examples(path, 137)
    assert count_records(path) == 137 == sum(1 for _ in tf.data.TFRecordDataset(str(path)))
    empty = tmp_path / "empty.tfrecord"
    with tf.io.TFRecordWriter(str(empty)):
        pass
    assert count_records(empty) == 0


def test_a_sparse_file_of_zeros_is_refused_at_its_first_record(tmp_path: Path) -> None:
    path = tmp_path / "zeros0.tfrecord"
    with path.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    with pytest.raises(DatasetError) as info:
        count_records(path)
    assert "zeros0.tfrecord" in str(info.value) and "record 0 at byte 0" in str(info.value)


def test_a_corrupt_length_is_refused_by_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.tfrecord"
    offsets = _examples(path, 10)
    data = bytearray(path.read_bytes())
    data[offsets[4]] ^= 0x01  # record 4's length no longer matches its CRC
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as info:
        count_records(path)
    assert f"record 4 at byte {offsets[4]}" in str(info.value)


def test_the_count_stops_past_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "many.tfrecord"
    length = struct.pack("<Q", 0)
    record = (
        length + struct.pack("<I", masked_crc32c(length)) + struct.pack("<I", masked_crc32c(b""))
    )
    path.write_bytes(record * 50)
    assert count_records(path, budget=50) == 50
    with pytest.raises(DatasetError) as info:
        count_records(path, budget=49)
    assert f"more than {tfrecord_count.MAX_RECORDS}" in str(info.value) and "many.tfrecord" in str(
        info.value
    )
