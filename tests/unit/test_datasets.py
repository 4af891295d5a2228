"""search.data: loaders, round trips and every way bad data is refused (no TensorFlow)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from search.data import (
    MAX_FEATURES,
    Dataset,
    infer_task,
    load_dataset,
    load_digits,
    read_csv,
    read_npz,
    save_npz,
)
from search.data.checks import assemble
from search.data.csv_reader import MAX_HEADER_CHARS, MAX_LABEL_CHARS
from search.data.dataset import MAX_CLASSES
from search.errors import DatasetError

ROOT = Path(__file__).resolve().parents[2]


def _arrays(n_train: int = 40, n_val: int = 10, features: int = 3, classes: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(n_train, features)),
        "y_train": np.arange(n_train) % classes,
        "x_val": rng.normal(size=(n_val, features)),
        "y_val": np.arange(n_val) % classes,
    }


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _csv(rows: list[str]) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --- digits ----------------------------------------------------------------------------------


def test_digits_shapes_types_and_split() -> None:
    d = load_digits()
    assert d.name == "digits" and d.task == "classification" and d.n_classes == 10
    assert d.input_shape == (8, 8) and d.n_outputs == 10
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert len(d.x_train) + len(d.x_val) == 1797 and len(d.x_val) == 360
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    # stratified: every class in both splits, in about the same proportion
    assert (np.bincount(d.y_val, minlength=10) >= 35).all()


def test_digits_is_deterministic_per_seed() -> None:
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert a == b and a.fingerprint() == b.fingerprint()
    assert a != c and a.fingerprint() != c.fingerprint()


def test_dataset_arrays_are_read_only_and_repr_is_short() -> None:
    d = load_digits()
    with pytest.raises(ValueError):
        d.x_train[0, 0, 0] = 1.0
    assert "1437" in repr(d) and len(repr(d)) < 200


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, search.data; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# --- NPZ -------------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path: Path) -> None:
    d = load_digits()
    save_npz(d, tmp_path / "d.npz")
    back = read_npz(tmp_path / "d.npz")
    assert back == d and back.fingerprint() == d.fingerprint()
    assert read_npz(tmp_path / "d.npz", name="other").name == "other"
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]  # no temp file left


def test_npz_round_trip_keeps_whole_number_regression(tmp_path: Path) -> None:
    a = _arrays()
    reg = assemble(
        "r", a["x_train"], a["y_train"] * 1.0, a["x_val"], a["y_val"] * 1.0, task="regression"
    )
    save_npz(reg, tmp_path / "r.npz")
    back = read_npz(tmp_path / "r.npz")
    assert back == reg and back.task == "regression" and back.n_outputs == 1


def test_npz_from_bytes_infers_classification_and_regression() -> None:
    d = read_npz(_npz_bytes(**_arrays()))
    assert (d.name, d.task, d.n_classes, d.input_shape) == ("upload", "classification", 3, (3,))
    a = _arrays()
    a["y_train"] = np.linspace(0, 1, 40)
    a["y_val"] = np.stack([np.linspace(0, 1, 10)], axis=1)[:, 0]
    r = read_npz(_npz_bytes(**a))
    assert r.task == "regression" and r.n_classes is None and r.y_train.dtype == np.float32


def test_npz_two_column_regression_targets() -> None:
    a = _arrays()
    a["y_train"], a["y_val"] = np.ones((40, 2)) * 0.5, np.ones((10, 2)) * 0.5
    assert read_npz(_npz_bytes(**a)).n_outputs == 2


def test_npz_refuses_pickled_object_array() -> None:
    a = _arrays()
    a["x_train"] = np.array([[1.0, "x", None]] * 40, dtype=object)
    msg = _error(read_npz, _npz_bytes(**a))
    assert "x_train" in msg and "pickle" in msg and "not allowed" in msg


def test_npz_refuses_truncated_and_garbage_files(tmp_path: Path) -> None:
    data = _npz_bytes(**_arrays())
    for cut in (len(data) // 2, len(data) - 10, 30):
        assert "not a valid NPZ file" in _error(read_npz, data[:cut])
    assert "not a valid NPZ file" in _error(read_npz, b"hello, I am not a zip file")
    assert "empty file" in _error(read_npz, b"")
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: len(data) // 2])
    assert "not a valid NPZ file" in _error(read_npz, path)


def test_npz_refuses_member_whose_header_claims_more_data_than_it_has() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, arr in _arrays().items():
            member = io.BytesIO()
            np.save(member, arr)
            raw = member.getvalue()
            if key == "x_train":  # header says 10**9 rows, data holds 40
                raw = raw.replace(b"(40, 3)", b"(1000000000, 3)")
            zf.writestr(f"{key}.npy", raw)
    assert "truncated" in _error(read_npz, buf.getvalue())


def test_npz_missing_key_is_named() -> None:
    a = _arrays()
    del a["y_val"]
    msg = _error(read_npz, _npz_bytes(**a))
    assert "missing" in msg and "y_val" in msg


def test_npz_length_mismatch_gives_both_lengths() -> None:
    a = _arrays()
    a["y_train"] = a["y_train"][:-3]
    msg = _error(read_npz, _npz_bytes(**a))
    assert "40" in msg and "37" in msg and "x_train" in msg


def test_npz_train_val_feature_shape_mismatch() -> None:
    a = _arrays()
    a["x_val"] = np.zeros((10, 4))
    assert "feature shape mismatch" in _error(read_npz, _npz_bytes(**a))


@pytest.mark.parametrize("key", ["x_train", "x_val", "y_train"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_npz_nan_or_inf_names_the_array(key: str, bad: float) -> None:
    a = _arrays()
    if key == "y_train":
        a[key] = np.linspace(0, 1, 40)
    a[key] = a[key].astype(np.float64)
    a[key].flat[5] = bad
    msg = _error(read_npz, _npz_bytes(**a))
    assert key in msg and "NaN or inf" in msg


def test_npz_too_few_and_zero_rows() -> None:
    assert "too few rows" in _error(read_npz, _npz_bytes(**_arrays(n_train=9)))
    assert "too few rows" in _error(read_npz, _npz_bytes(**_arrays(n_val=1)))
    a = _arrays()
    a["x_train"], a["y_train"] = np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    assert "zero rows" in _error(read_npz, _npz_bytes(**a))


def test_npz_too_many_features() -> None:
    a = _arrays(n_train=10, n_val=2, features=MAX_FEATURES + 1)
    assert "too many features" in _error(read_npz, _npz_bytes(**a))


def test_npz_label_problems() -> None:
    a = _arrays()
    a["y_train"] = np.ones(40, dtype=np.int64)
    assert "at least 2 classes" in _error(read_npz, _npz_bytes(**a))
    a["y_train"] = np.arange(40) % 3 + 1  # 1-based
    assert "0..K-1" in _error(read_npz, _npz_bytes(**a))
    a["y_train"] = np.arange(40) % 3 - 1
    assert "negative" in _error(read_npz, _npz_bytes(**a))
    a = _arrays()
    a["y_val"] = np.full(10, 7)
    assert "y_val" in _error(read_npz, _npz_bytes(**a))
    a = _arrays()
    a["x_train"] = np.array([["a", "b", "c"]] * 40)
    assert "numeric" in _error(read_npz, _npz_bytes(**a))


def test_infer_task() -> None:
    assert infer_task(np.array([0, 1, 2, 1])) == ("classification", 3)
    assert infer_task(np.array([True, False])) == ("classification", 2)
    assert infer_task(np.array([0.0, 1.0, 2.0])) == ("classification", 3)
    assert infer_task(np.array([21.0, 35.0, 60.0])) == ("regression", None)  # whole but not ids
    assert infer_task(np.array([0.5, 1.5])) == ("regression", None)
    assert infer_task(np.ones((4, 2))) == ("regression", None)
    one_hot = np.eye(3, dtype=np.float32)[[0, 2, 1, 2]]  # keras.utils.to_categorical's output
    assert "look one-hot" in _error(infer_task, one_hot) and "argmax" in _error(infer_task, one_hot)
    assert infer_task(np.array([[0.0, 1.0], [1.0, 1.0]])) == ("regression", None)  # 2 ones a row
    assert "at least 2 classes" in _error(infer_task, np.zeros(5, dtype=np.int64))
    assert "too many classes" in _error(infer_task, np.array([0, 5000]))
    huge = np.array([0, 2**64 - 1], dtype=np.uint64)  # int64 would wrap it to -1
    assert "labels go up to 18446744073709551615" in _error(infer_task, huge)
    assert "zero rows" in _error(infer_task, np.zeros(0, dtype=np.int64))


# --- CSV -------------------------------------------------------------------------------------


def _rows(n: int = 30) -> list[str]:
    return ["a,b,label"] + [f"{i},{i * 0.5},{i % 2}" for i in range(n)]


def test_csv_classification_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(_csv(_rows(50)))
    d = read_csv(path, "label", name="mine", seed=1)
    assert (d.name, d.task, d.n_classes, d.input_shape) == ("mine", "classification", 2, (2,))
    assert len(d.x_train) == 40 and len(d.x_val) == 10
    assert np.bincount(d.y_val).tolist() == [5, 5]
    assert read_csv(path, "label", name="mine", seed=1) == d
    assert read_csv(path, "label", name="mine", seed=2) != d


def test_a_pandas_row_index_is_refused_as_a_feature() -> None:
    """`df.to_csv()` writes an unnamed first column 0, 1, 2...: a feature that tells the model
    each row's position. Refused with the fix; an unnamed column of other values is kept."""
    indexed = [",a,label"] + [f"{i},{i * 0.5},{i % 2}" for i in range(30)]
    assert "index=False" in _error(read_csv, _csv(indexed), "label")
    unnamed = [",a,label"] + [f"{(i * 7) % 30},{i * 0.5},{i % 2}" for i in range(30)]
    assert read_csv(_csv(unnamed), "label").input_shape == (2,)


def test_csv_regression_text_labels_and_bom() -> None:
    rows = ["x,y"] + [f"{i},{i * 1.5}" for i in range(20)]
    assert read_csv(_csv(rows), "y").task == "regression"
    rows = ["x,kind"] + [f"{i},{'cat' if i % 2 else 'dog'}" for i in range(20)]
    d = read_csv(b"\xef\xbb\xbf" + _csv(rows), "kind")
    assert d.task == "classification" and d.n_classes == 2


def test_csv_non_numeric_columns_are_named() -> None:
    rows = ["a,city,label", *[f"{i},Paris,{i % 2}" for i in range(20)]]
    msg = _error(read_csv, _csv(rows), "label")
    assert "non-numeric" in msg and "city" in msg and "a'" not in msg


def test_csv_missing_value_is_named() -> None:
    rows = _rows()
    rows[3] = "2,,0"
    msg = _error(read_csv, _csv(rows), "label")
    assert "'b'" in msg and "missing" in msg and "line 4" in msg


def test_csv_missing_target_column() -> None:
    msg = _error(read_csv, _csv(_rows()), "target")
    assert "target" in msg and "not found" in msg and "'label'" in msg


def test_csv_too_few_rows_zero_rows_and_empty_file() -> None:
    assert "too few rows" in _error(read_csv, _csv(_rows(11)), "label")
    assert "zero data rows" in _error(read_csv, _csv(["a,b,label"]), "label")
    assert "empty file" in _error(read_csv, b"", "label")
    assert "empty file" in _error(read_csv, b"\n\n", "label")


def test_csv_one_class() -> None:
    rows = ["a,label"] + [f"{i},only" for i in range(30)]
    assert "at least 2 classes" in _error(read_csv, _csv(rows), "label")


def test_csv_too_many_columns_checked_from_header() -> None:
    header = ",".join(f"c{i}" for i in range(MAX_FEATURES + 1)) + ",label"
    data = (header + "\n" + "oops\n").encode()  # rows would fail, the header fails first
    assert "too many feature columns" in _error(read_csv, data, "label")


def test_csv_ragged_row_and_nan() -> None:
    rows = _rows()
    rows[5] = "1,2"
    assert "line 6 has 2 fields" in _error(read_csv, _csv(rows), "label")
    rows = _rows()
    rows[5] = "1,nan,0"
    msg = _error(read_csv, _csv(rows), "label")
    assert "NaN or inf" in msg and "'b'" in msg


# --- load_dataset ----------------------------------------------------------------------------


def test_load_dataset_builtin_and_upload(tmp_path: Path) -> None:
    assert load_dataset("digits", tmp_path) == load_digits()
    (tmp_path / "datasets").mkdir()
    up = read_npz(_npz_bytes(**_arrays()), name="abc_1")
    save_npz(up, tmp_path / "datasets" / "abc_1.npz")
    assert load_dataset("abc_1", tmp_path) == up


@pytest.mark.parametrize("ref", ["../x", "a/b", "..", "", "x" * 65, "a\\b", "ok\n", "a.npz"])
def test_load_dataset_refuses_unsafe_refs(tmp_path: Path, ref: str) -> None:
    assert "invalid dataset id" in _error(load_dataset, ref, tmp_path)


def test_load_dataset_unknown(tmp_path: Path) -> None:
    assert "unknown dataset" in _error(load_dataset, "nope", tmp_path)


def test_dataset_equality_needs_identical_arrays() -> None:
    d = load_digits()
    other = Dataset(d.name, d.x_train, d.y_train, d.x_val, d.y_val.copy(), d.task, d.n_classes)
    assert other == d
    changed = d.y_val.copy()
    changed[0] = (changed[0] + 1) % 10
    assert Dataset(d.name, d.x_train, d.y_train, d.x_val, changed, d.task, 10) != d


def test_csv_overlong_header_and_mixed_target_and_missing_file(tmp_path: Path) -> None:
    assert "header row is too long" in _error(read_csv, b"a" * (MAX_HEADER_CHARS + 5), "a")
    rows = ["x,y"] + [f"{i},{i if i % 2 else 'text'}" for i in range(20)]
    assert "mixes numbers and text" in _error(read_csv, _csv(rows), "y")
    assert "no such file" in _error(read_npz, tmp_path / "absent.npz")
    assert "cannot read" in _error(read_csv, tmp_path / "absent.csv", "y")


# --- CSV targets: bounded labels ---------------------------------------------------------------


def _peak_mib_reading(data_expr: str) -> tuple[float, str]:
    """Peak RSS growth (MiB) of read_csv in a fresh interpreter, and the error it raised."""
    code = (
        "import resource\n"
        "from search.data import read_csv\n"
        f"data = {data_expr}\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_csv(data, 'y'); error = 'accepted'\n"
        "except Exception as exc:\n"
        "    error = f'{type(exc).__name__}: {exc}'\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) / 1024); print(error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    growth, error = out.stdout.splitlines()
    return float(growth), error


def test_csv_one_long_label_is_refused_on_target_without_widening_every_label() -> None:
    """60 KB of CSV once took 2.3 GB: numpy made all 10,001 labels 20,000 characters wide."""
    growth, error = _peak_mib_reading(
        "b'a,y\\n' + b'1,a\\n1,b\\n' * 5000 + b'1,' + b'z' * 20000 + b'\\n'"
    )
    assert error.startswith("DatasetError") and "20000 characters" in error, error
    assert "line 10002" in error and f"at most {MAX_LABEL_CHARS}" in error
    assert growth < 64, f"peak RSS grew {growth:.0f} MiB"
    rows = ["a,y"] + [f"{i},{'ab' if i % 2 else 'cd'}" for i in range(30)]
    rows[7] = "6," + "x" * (MAX_LABEL_CHARS + 1)
    with pytest.raises(DatasetError) as info:
        read_csv(_csv(rows), "y")
    assert info.value.field == "target" and "line 8" in str(info.value)
    rows[7] = "6," + "x" * MAX_LABEL_CHARS
    assert read_csv(_csv(rows), "y").n_classes == 3


def test_csv_too_many_text_labels_are_refused_as_they_stream() -> None:
    rows = ["a,y"] + [f"{i},c{i}" for i in range(MAX_CLASSES + 50)]
    with pytest.raises(DatasetError) as info:
        read_csv(_csv(rows), "y")
    message = str(info.value)
    assert info.value.field == "target" and "too many classes in 'y'" in message
    assert f"line {MAX_CLASSES + 2}" in message and f"at most {MAX_CLASSES}" in message


def test_csv_text_labels_are_ids_of_the_sorted_labels() -> None:
    names = ["zebra", "ant", "mole"]
    rows = ["a,y"] + [f"{i},{names[i % 3]}" for i in range(60)]
    d = read_csv(_csv(rows), "y", seed=3)
    by_feature = {int(x[0]): int(y) for x, y in zip(d.x_train, d.y_train, strict=True)}
    assert all(by_feature[i] == sorted(names).index(names[i % 3]) for i in by_feature)
    assert d.y_train.dtype == np.int64


def test_csv_header_with_a_newline_inside_quotes_is_refused_clearly() -> None:
    data = b'"f\nx",y\n' + b"1,2\n" * 20
    msg = _error(read_csv, data, "y")
    assert "newline inside quotes" in msg and "not found" not in msg
    quoted = b'"f, g",y\n' + b"".join(b"%d,%d\n" % (i, i % 2) for i in range(20))
    assert read_csv(quoted, "y").input_shape == (1,)
