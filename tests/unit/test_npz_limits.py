"""read_npz against hostile archives: zip bombs, zips whose sizes lie, and unexpected members.

The decompressed total is refused from the headers, before anything is decompressed, and the
memory the reader takes is measured from this process (VmHWM), not assumed.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.data import MAX_FEATURES, read_npz
from search.data.dataset import class_count, class_ids, infer_task
from search.data.npz_labels import label_digest, npz_labels
from search.data.ref_headers import npz_layout
from search.errors import DatasetError
from tests import hostile
from tests.hostile import GiB, MiB

LIMIT = 256 * MiB
MEMORY_BOUND = 64 * MiB  # the bomb is ~5 MB on disk; reading it must not cost much more


def _valid(path: Path) -> Path:
    members = [
        (f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in hostile.small_arrays().items()
    ]
    hostile.write_zip(path, members)
    return path


def _error(source: Path | bytes, max_bytes: int = LIMIT) -> str:
    with pytest.raises(DatasetError) as info:
        read_npz(source if isinstance(source, bytes) else source.read_bytes(), max_bytes=max_bytes)
    return str(info.value)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hostile.zip_bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz", GiB)


def test_a_1_gib_zip_bomb_is_refused_from_its_headers_quickly_and_cheaply(bomb: Path) -> None:
    data = bomb.read_bytes()
    assert len(data) < 8 * MiB
    total = sum(i.file_size for i in zipfile.ZipFile(bomb).infolist())
    assert total > GiB
    started = time.perf_counter()
    try:
        error, growth = hostile.peak_growth(lambda: read_npz(data, max_bytes=LIMIT))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    assert time.perf_counter() - started < 1.0
    assert isinstance(error, DatasetError)
    assert f"decompresses to {total} bytes" in str(error) and f"limit of {LIMIT} bytes" in str(
        error
    )
    assert growth < MEMORY_BOUND, f"peak RSS grew {growth / MiB:.0f} MiB"


def test_the_limit_is_the_decompressed_total_exactly(tmp_path: Path) -> None:
    path = _valid(tmp_path / "ok.npz")
    total = sum(i.file_size for i in zipfile.ZipFile(path).infolist())
    assert read_npz(path.read_bytes(), max_bytes=total).x_train.shape == (40, 3)
    assert f"decompresses to {total} bytes" in _error(path, max_bytes=total - 1)


def test_sizes_claimed_past_the_limit_are_refused_before_reading_the_stream(
    tmp_path: Path,
) -> None:
    """The zip and .npy headers both claim 1 GiB; the stream holds a few bytes: never read."""
    path = tmp_path / "claims.npz"
    header = hostile.npy_header((GiB // 4, 1))
    members = [("x_train.npy", [header, bytes(64)], len(header) + GiB)]
    members += [
        (f"{k}.npy", [hostile.npy_bytes(a)], None)
        for k, a in hostile.small_arrays().items()
        if k != "x_train"
    ]
    hostile.write_zip(path, members)
    assert "decompresses to" in _error(path)


def test_a_stream_longer_than_its_zip_sizes_is_read_only_as_far_as_they_say(
    tmp_path: Path,
) -> None:
    """x_train's zip sizes (and CRC) cover the real array; 256 MiB of zeros follow in the
    deflate stream. The reader stops where the headers say, so the zeros are never expanded."""
    arrays = hostile.small_arrays()
    real = hostile.npy_bytes(arrays["x_train"])
    members = [("x_train.npy", [real, *hostile.zeros(256 * MiB)], len(real))]
    members += [
        (f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in arrays.items() if k != "x_train"
    ]
    path = tmp_path / "longer.npz"
    hostile.write_zip(path, members)
    data = path.read_bytes()
    try:
        dataset, growth = hostile.peak_growth(lambda: read_npz(data, max_bytes=LIMIT))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    assert not isinstance(dataset, Exception), dataset
    np.testing.assert_array_equal(dataset.x_train, arrays["x_train"])
    assert growth < MEMORY_BOUND, f"peak RSS grew {growth / MiB:.0f} MiB"


def test_a_stream_shorter_than_its_sizes_say_is_refused(tmp_path: Path) -> None:
    arrays = hostile.small_arrays()
    real = hostile.npy_bytes(arrays["x_train"])
    members = [("x_train.npy", [real[:200]], len(real))]  # header + 72 of 480 data bytes
    members += [
        (f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in arrays.items() if k != "x_train"
    ]
    path = tmp_path / "short.npz"
    hostile.write_zip(path, members)
    msg = _error(path)
    assert "not a valid NPZ file: x_train" in msg and ("truncated" in msg or "corrupt" in msg)


def test_npy_header_and_zip_sizes_must_agree(tmp_path: Path) -> None:
    arrays = hostile.small_arrays()
    real = hostile.npy_bytes(arrays["x_train"])
    padded = [("x_train.npy", [real, bytes(1000)], None)]
    padded += [
        (f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in arrays.items() if k != "x_train"
    ]
    hostile.write_zip(tmp_path / "padded.npz", padded)
    msg = _error(tmp_path / "padded.npz")
    assert "x_train holds more than its header describes" in msg and "480 bytes described" in msg


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (
            ["x_train.npy", "y_train.npy", "x_val.npy", "y_val.npy", "extra.npy"],
            "unexpected member 'extra.npy'",
        ),
        (
            ["data/x_train.npy", "y_train.npy", "x_val.npy", "y_val.npy"],
            "unexpected member 'data/x_train.npy'",
        ),
        (
            ["x_train.npy", "y_train.npy", "x_val.npy", "y_val.npy", "x_train.npy"],
            "holds x_train twice",
        ),
        (
            ["x_train", "y_train.npy", "x_val.npy", "y_val.npy", "x_train.npy"],
            "holds x_train twice",
        ),
        (["x_train.npy"] * 7, "lists 7 members"),
        (["y_val.npy"] * 1000, "lists 1000 members"),
    ],
    ids=["extra", "nested", "duplicate", "duplicate-key", "seven", "a-thousand"],
)
def test_only_the_expected_members_once_each(
    tmp_path: Path, names: list[str], expected: str
) -> None:
    arrays = hostile.small_arrays()
    members = [
        (n, [hostile.npy_bytes(arrays.get(Path(n).stem, arrays["y_val"]))], None) for n in names
    ]
    hostile.write_zip(tmp_path / "m.npz", members)
    msg = _error(tmp_path / "m.npz")
    assert expected in msg and ("x_train.npy, y_train.npy" in msg or "twice" in msg), msg


def test_encrypted_and_bzip2_members_are_refused(tmp_path: Path) -> None:
    members = [
        (f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in hostile.small_arrays().items()
    ]
    hostile.write_zip(tmp_path / "enc.npz", members, flags=0x1)
    assert "x_train is encrypted" in _error(tmp_path / "enc.npz")
    with zipfile.ZipFile(tmp_path / "bz.npz", "w", zipfile.ZIP_BZIP2) as zf:
        for k, a in hostile.small_arrays().items():
            zf.writestr(f"{k}.npy", hostile.npy_bytes(a))
    assert "compression method 12" in _error(tmp_path / "bz.npz")


def test_deflated_fortran_and_big_endian_arrays_read_back_equal(tmp_path: Path) -> None:
    arrays = hostile.small_arrays()
    arrays["x_train"] = np.asfortranarray(arrays["x_train"].astype(">f8"))
    arrays["y_val"] = arrays["y_val"].astype(">i2")
    np.savez_compressed(tmp_path / "c.npz", **arrays)  # type: ignore[arg-type]
    dataset = read_npz(tmp_path / "c.npz", max_bytes=LIMIT)
    np.testing.assert_array_equal(dataset.x_train, arrays["x_train"].astype(np.float32))
    np.testing.assert_array_equal(dataset.y_val, arrays["y_val"])


# --- datasets by path: the labels' headers first, then chunks --------------------------------


def _by_path(
    path: Path, y_train: tuple[bytes, int], x_rows: int = 10
) -> tuple[Path, dict[str, tuple[tuple[int, ...], str, int]] | Exception, int]:
    """A sparse by-path NPZ with this y_train; what npz_layout made of it and the peak RSS
    growth of the whole registration read (layout, then labels as _npz would)."""
    hostile.stored_npz(
        path,
        {
            "x_train": (hostile.npy_header((x_rows, 3)), x_rows * 12),
            "y_train": y_train,
            "x_val": (hostile.npy_header((4, 3)), 48),
            "y_val": (hostile.npy_header((4,), "<i8"), 32),
        },
    )

    def read() -> tuple[Any, Any]:
        headers = npz_layout(path)
        return headers, infer_task(npz_labels(path, headers, "y_train"))

    try:
        result, growth = hostile.peak_growth(read)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return path, result, growth


def test_a_by_path_label_array_with_millions_of_outputs_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    """The red team's 1.5 GB y_train of shape (10, 37.5 M) was read whole (RSS +1.4 GB) and
    registered as a 37.5 M-output regression; its header alone refuses it now."""
    header = hostile.npy_header((10, 37_500_000))
    _, error, growth = _by_path(tmp_path / "wide.npz", (header, 10 * 37_500_000 * 4))
    assert isinstance(error, DatasetError), error
    assert "y_train has 37500000 outputs per row" in str(error)
    assert f"at most {MAX_FEATURES}" in str(error)
    assert growth < 16 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"


def test_by_path_labels_must_match_x_rows_before_they_are_read(tmp_path: Path) -> None:
    header = hostile.npy_header((37_500_000,))
    _, error, growth = _by_path(tmp_path / "long.npz", (header, 37_500_000 * 4))
    assert isinstance(error, DatasetError), error
    assert "x_train and y_train have different numbers of rows (10 vs 37500000)" in str(error)
    assert growth < 16 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"
    cube = hostile.npy_header((10, 2, 2))
    _, error, _ = _by_path(tmp_path / "cube.npz", (cube, 160))
    assert isinstance(error, DatasetError) and "y_train must be 1-D (or 2-D" in str(error)


def test_by_path_labels_are_read_in_chunks_to_infer_the_task(tmp_path: Path) -> None:
    """40 M float32 labels (160 MB, one 1.0 among zeros: classes 0 and 1), never held whole."""
    rows = 40_000_000
    first = hostile.npy_header((rows,)) + np.float32(1).tobytes()
    _, result, growth = _by_path(tmp_path / "many.npz", (first, (rows - 1) * 4), x_rows=rows)
    assert not isinstance(result, Exception), result
    headers, task = result
    assert headers["y_train"][0] == (rows,) and task == ("classification", 2)
    assert growth < 48 * MiB, f"peak RSS grew {growth / MiB:.0f} MiB"


LABELS = {
    "ids": np.arange(100) % 7,
    "one class": np.zeros(50, dtype=np.int64),
    "missing class": np.array([0, 2, 2, 0] * 20),
    "negative": np.array([0, 1, -3, 1] * 20),
    "too many": np.arange(2000, dtype=np.uint16),
    "huge uint": np.array([0, 1, 2**63] * 20, dtype=np.uint64),
    "float ids": (np.arange(90) % 3).astype(np.float32),
    "one-based floats": (np.arange(90) % 3 + 1).astype(np.float64),
    "fraction": np.array([0.0, 1.0, 0.5, 1.0] * 20),
    "nan": np.array([0.0, 1.0, np.nan, 1.0] * 20),
    "inf": np.array([0.0, 1.0, 2.0, np.inf] * 20),
    "regression": np.linspace(-3, 3, 97),
    "bools": np.array([True, False, False] * 30),
    "one column": (np.arange(60) % 4).reshape(-1, 1).astype(np.float32),
}


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except DatasetError as exc:
        return f"DatasetError: {exc}"


@pytest.mark.parametrize("name", sorted(LABELS))
def test_a_label_digest_is_judged_as_the_whole_array(name: str) -> None:
    """infer_task / class_ids / class_count give the same answer (or error) on the digest of
    labels read 7 at a time as on the labels themselves: the rules live in one place."""
    y = LABELS[name]
    chunks = [y.ravel()[i : i + 7] for i in range(0, y.size, 7)]
    digest = label_digest(chunks, y.dtype)
    digest = digest.reshape(-1, 1) if y.ndim == 2 else digest
    assert digest.size <= 2 * len(chunks) + 1000 + 2
    assert _outcome(infer_task, digest) == _outcome(infer_task, y)
    whole = _outcome(lambda a: class_count(class_ids(a, "y_train")), y)
    assert _outcome(lambda a: class_count(class_ids(a, "y_train")), digest) == whole
