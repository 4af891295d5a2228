"""task.preprocess: statistics of the training split only, refused where they do not apply,
and named in the export and its snippet so a user's script reproduces the data exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.data import Dataset, read_csv
from search.data.preprocess import MAX_STANDARDIZED_FEATURES, problems, standardized
from search.errors import SpecError
from search.spec import parse_spec
from search.strategies import RunShape, get_strategy

WINE = Path(__file__).resolve().parents[2] / "examples" / "wine.csv"


def regression(n_features: int = 3, outputs: int = 0) -> Dataset:
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(60, n_features)) * [10.0, 0.1, 1000.0][:n_features] + 5).astype("f4")
    x[:, 0] = 7.0  # a constant column: std 0 counts as 1
    shape = (60, outputs) if outputs else (60,)
    y = (rng.normal(size=shape) * 30 + 200).astype("f4")
    return Dataset("reg", x[:50], y[:50], x[50:], y[50:], "regression", None)


def test_wine_statistics_are_numpys_on_the_training_split_only() -> None:
    raw = read_csv(WINE, "cultivar", name="wine")
    data = standardized(raw, features=True, target=False)
    stats = data.preprocess
    assert stats is not None and stats["target_mean"] is None
    np.testing.assert_allclose(stats["mean"], raw.x_train.mean(axis=0, dtype="f8"), rtol=1e-7)
    np.testing.assert_allclose(stats["std"], raw.x_train.std(axis=0, dtype="f8"), rtol=1e-7)
    assert not np.allclose(stats["mean"], raw.x_val.mean(axis=0), rtol=1e-3)  # not val's
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-5)
    assert data.x_train.dtype == np.float32 and data.y_train is raw.y_train
    mean, std = np.array(stats["mean"], "f4"), np.array(stats["std"], "f4")
    np.testing.assert_array_equal(data.x_val, (raw.x_val - mean) / std)  # as the snippet does
    assert data.fingerprint() != raw.fingerprint()  # compiled models are not shared with raw


def test_a_constant_column_and_a_regression_target() -> None:
    raw = regression()
    data = standardized(raw, features=True, target=True)
    stats = data.preprocess
    assert stats is not None
    assert stats["std"][0] == 1.0 and stats["mean"][0] == 7.0
    assert np.all(data.x_train[:, 0] == 0.0)
    assert stats["target_mean"] == pytest.approx(float(raw.y_train.mean(dtype="f8")), rel=1e-7)
    assert stats["target_std"] == pytest.approx(float(raw.y_train.std(dtype="f8")), rel=1e-7)
    restored = data.y_val * stats["target_std"] + stats["target_mean"]
    np.testing.assert_allclose(restored, raw.y_val, rtol=1e-5)
    only_target = standardized(raw, features=False, target=True)
    assert only_target.x_train is raw.x_train and only_target.preprocess["mean"] is None  # type: ignore[index]
    two = standardized(regression(outputs=2), features=False, target=True).preprocess
    assert two is not None and len(two["target_mean"]) == 2


def test_nothing_asked_is_the_data_as_given() -> None:
    raw = regression()
    assert standardized(raw, features=False, target=False) is raw


def test_what_cannot_be_standardised_is_refused() -> None:
    assert problems((13,), "classification", standardize=True, standardize_target=False) == []
    images = problems((8, 8), "classification", standardize=True, standardize_target=False)
    assert images and "tabular" in images[0]
    wide = (MAX_STANDARDIZED_FEATURES + 1,)
    assert "at most" in problems(wide, "regression", standardize=True, standardize_target=False)[0]
    target = problems((4,), "classification", standardize=False, standardize_target=True)
    assert target and "regression" in target[0]
    digits_like = Dataset(
        "img",
        np.zeros((20, 8, 8), "f4"),
        np.arange(20) % 2,
        np.zeros((4, 8, 8), "f4"),
        np.arange(4) % 2,
        "classification",
        2,
    )
    with pytest.raises(ValueError, match="tabular"):
        standardized(digits_like, features=True, target=False)


def test_the_spec_takes_preprocess_and_aggregate() -> None:
    spec = parse_spec({"task": {"preprocess": {"standardize": True}}})
    assert spec.task.preprocess is not None and spec.task.preprocess.standardize
    assert not spec.task.preprocess.standardize_target
    assert parse_spec({}).task.preprocess is None and parse_spec({}).objective.aggregate == "last"
    assert parse_spec({}).objective.best_mode is None
    best = parse_spec({"objective": {"metric": "val_accuracy", "aggregate": "best"}})
    assert best.objective.best_mode == "max"
    assert parse_spec({"objective": {"aggregate": "best"}}).objective.best_mode == "min"
    for bad in ({"objective": {"aggregate": "mean"}}, {"task": {"preprocess": {"scale": True}}}):
        with pytest.raises(SpecError):
            parse_spec(bad)


def test_the_export_and_its_snippet_name_the_statistics() -> None:
    data = standardized(regression(), features=True, target=True)
    params = {"initial_lr": 0.01}
    export = get_strategy("constant").export(params, RunShape(3, 5), preprocess=data.preprocess)
    assert export.as_dict()["preprocess"] == data.preprocess
    assert "x = (x - mean) / std" in export.python
    assert "model.predict(x) * target_std + target_mean" in export.python
    data_lines = [
        line
        for line in export.python.splitlines()
        if line.startswith(("import numpy", "mean =", "std =", "target_mean =", "target_std ="))
    ]
    scope: dict[str, object] = {}
    exec("\n".join(data_lines), scope)  # the snippet's own lines
    raw = regression()
    mean, std = scope["mean"], scope["std"]
    np.testing.assert_array_equal((raw.x_val - mean) / std, data.x_val)  # type: ignore[operator]
    plain = get_strategy("constant").export(params, RunShape(3, 5))
    assert plain.as_dict()["preprocess"] is None and "numpy" not in plain.python
