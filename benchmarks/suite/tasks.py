"""The task suite: small training jobs built offline, split once into dev and test tasks.

Dev tasks are where lrsearch's defaults and methods may be chosen; test tasks are only ever
reported (never used to choose anything). The split is fixed here, in code, before any
method was measured on a test task; `benchmarks/RESULTS.md` says which decision was made on
which tasks.

Every dataset is generated or shipped by scikit-learn (nothing is downloaded) and is the same
on every run; the seeds of a comparison vary the search and the weights, never the data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from search.data import Dataset, infer_task

Split = Literal["dev", "test"]


@dataclass(frozen=True)
class Task:
    """One training job a user could bring: data, model, epochs, batch size, optimizer."""

    name: str
    split: Split
    data: Callable[[], Dataset]
    model: Callable[[Dataset], dict[str, Any]]  # a StudySpec `task.model`
    epochs: int
    batch_size: int
    optimizer: str
    about: str

    def spec_task(self, dataset_id: str, data: Dataset) -> dict[str, Any]:
        """The StudySpec `task` for this job (the dataset by its uploaded id)."""
        return {
            "dataset": dataset_id,
            "model": self.model(data),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
        }


# --- data -------------------------------------------------------------------------------------


def _dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    val: float = 0.25,
    standardize: bool = True,
    target_z: bool = False,
) -> Dataset:
    """A stratified (classification) or plain split; features standardised on the train part."""
    from sklearn.model_selection import train_test_split

    task, n_classes = infer_task(y)
    stratify = y if task == "classification" else None
    x_tr, x_va, y_tr, y_va = train_test_split(
        x, y, test_size=val, random_state=seed, stratify=stratify
    )
    if standardize:
        axes = tuple(range(x_tr.ndim - 1)) if x_tr.ndim > 2 else 0
        mean, std = x_tr.mean(axis=axes), x_tr.std(axis=axes) + 1e-8
        x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    if target_z:
        mu, sd = y_tr.mean(), y_tr.std() + 1e-8
        y_tr, y_va = (y_tr - mu) / sd, (y_va - mu) / sd
    y_type = np.int64 if task == "classification" else np.float32
    return Dataset(
        name,
        x_tr.astype(np.float32),
        y_tr.astype(y_type),
        x_va.astype(np.float32),
        y_va.astype(y_type),
        task,
        n_classes,
    )


def digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _dataset("digits", bunch.data / 16.0, bunch.target, standardize=False)


def breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return _dataset("breast-cancer", bunch.data, bunch.target)


def wine() -> Dataset:
    from sklearn.datasets import load_wine

    bunch = load_wine()
    return _dataset("wine", bunch.data, bunch.target)


def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return _dataset("diabetes", bunch.data, bunch.target.astype(np.float64), target_z=True)


def noisy_four_classes() -> Dataset:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=3000,
        n_features=40,
        n_informative=12,
        n_redundant=8,
        n_classes=4,
        n_clusters_per_class=2,
        flip_y=0.1,
        class_sep=0.9,
        random_state=11,
    )
    return _dataset("noisy-4", x, y)


def imbalanced_binary() -> Dataset:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2500,
        n_features=20,
        n_informative=6,
        n_redundant=4,
        weights=[0.85, 0.15],
        flip_y=0.05,
        class_sep=0.8,
        random_state=23,
    )
    return _dataset("imbalanced", x, y)


def friedman() -> Dataset:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state=5)
    return _dataset("friedman1", x, y.astype(np.float64))


def sparse_regression() -> Dataset:
    from sklearn.datasets import make_regression

    x, y = make_regression(
        n_samples=1500, n_features=30, n_informative=8, noise=25.0, random_state=31
    )
    y = y + 0.002 * y**2  # a mild non-linearity
    return _dataset("sparse-reg", x, y.astype(np.float64), target_z=True)


def moons() -> Dataset:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1500, noise=0.3, random_state=7)
    return _dataset("moons", x, y)


def bump_sequences() -> Dataset:
    """Series of 32 steps with a bump early, late or nowhere, in noise: 3 classes (Conv1D)."""
    rng = np.random.default_rng(41)
    n, length = 2000, 32
    x = rng.normal(0.0, 1.0, (n, length, 1))
    y = rng.integers(0, 3, n)
    bump = np.exp(-0.5 * ((np.arange(length) - 4.0) / 1.5) ** 2)
    for i in range(n):
        if y[i] < 2:
            start = rng.integers(0, 10) + (0 if y[i] == 0 else 16)
            x[i, :, 0] += 1.6 * np.roll(bump, start)
    return _dataset("bumps", x, y, standardize=False)


def sum_sign_sequences() -> Dataset:
    """Two-channel series of 20 steps; the label is the sign of a lagged weighted sum (LSTM)."""
    rng = np.random.default_rng(43)
    n, length = 1600, 20
    x = rng.normal(0.0, 1.0, (n, length, 2))
    score = x[:, -5:, 0].sum(axis=1) - 0.7 * x[:, :5, 1].sum(axis=1)
    y = (score + rng.normal(0.0, 1.0, n) > 0).astype(np.int64)
    return _dataset("sum-sign", x, y, standardize=False)


def line_images() -> Dataset:
    """12x12 noisy images of a horizontal, vertical or diagonal line: 3 classes (CNN)."""
    rng = np.random.default_rng(47)
    n, side = 1800, 12
    x = rng.normal(0.0, 0.6, (n, side, side, 1))
    y = rng.integers(0, 3, n)
    for i in range(n):
        k = rng.integers(2, side - 2)
        if y[i] == 0:
            x[i, k, :, 0] += 1.0
        elif y[i] == 1:
            x[i, :, k, 0] += 1.0
        else:
            idx = np.arange(side)
            x[i, idx, (idx + k) % side, 0] += 1.0
    return _dataset("lines", x, y, standardize=False)


def texture_images() -> Dataset:
    """16x16 noisy stripes of four spatial frequencies: 4 classes (CNN)."""
    rng = np.random.default_rng(53)
    n, side = 1600, 16
    y = rng.integers(0, 4, n)
    grid = np.arange(side)
    x = rng.normal(0.0, 0.8, (n, side, side, 1))
    for i in range(n):
        freq = (y[i] + 1) * np.pi / 8
        phase = rng.uniform(0, 2 * np.pi)
        angle = rng.uniform(0, np.pi)
        proj = np.cos(angle) * grid[:, None] + np.sin(angle) * grid[None, :]
        x[i, :, :, 0] += np.sin(freq * proj + phase)
    return _dataset("textures", x, y, standardize=False)


def gaussian_quantiles() -> Dataset:
    from sklearn.datasets import make_gaussian_quantiles

    x, y = make_gaussian_quantiles(n_samples=2400, n_features=6, n_classes=3, random_state=61)
    return _dataset("quantiles", x, y)


def friedman_three() -> Dataset:
    from sklearn.datasets import make_friedman3

    x, y = make_friedman3(n_samples=1200, noise=0.1, random_state=67)
    return _dataset("friedman3", x, y.astype(np.float64), target_z=True)


def hastie() -> Dataset:
    from sklearn.datasets import make_hastie_10_2

    x, y = make_hastie_10_2(n_samples=4000, random_state=71)
    return _dataset("hastie", x, (y > 0).astype(np.int64))


def iris() -> Dataset:
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return _dataset("iris", bunch.data, bunch.target)


def shape_images() -> Dataset:
    """10x10 noisy images holding a small square, plus or ring somewhere: 3 classes (CNN)."""
    rng = np.random.default_rng(73)
    n, side = 1800, 10
    shapes = [
        np.ones((3, 3)),
        np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=float),
        np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float),
    ]
    x = rng.normal(0.0, 0.7, (n, side, side, 1))
    y = rng.integers(0, 3, n)
    for i in range(n):
        r, c = rng.integers(0, side - 3, 2)
        x[i, r : r + 3, c : c + 3, 0] += 1.2 * shapes[y[i]]
    return _dataset("shapes", x, y, standardize=False)


def trend_sequences() -> Dataset:
    """Series of 24 steps: a weak rising or falling trend under an oscillation and noise (GRU)."""
    rng = np.random.default_rng(79)
    n, length = 1600, 24
    t = np.linspace(-1.0, 1.0, length)
    y = rng.integers(0, 2, n)
    slope = np.where(y == 1, 1.0, -1.0) * rng.uniform(0.2, 0.8, n)
    wave = np.sin(rng.uniform(2, 6, (n, 1)) * np.pi * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    x = slope[:, None] * t + wave + rng.normal(0.0, 0.6, (n, length))
    return _dataset("trend", x[..., None], y, standardize=False)


# --- models -----------------------------------------------------------------------------------


def mlp(*hidden: int, dropout: float = 0.0) -> Callable[[Dataset], dict[str, Any]]:
    return lambda _data: {"kind": "mlp", "hidden": list(hidden), "dropout": dropout}


def cnn(*filters: int, dense: int = 32) -> Callable[[Dataset], dict[str, Any]]:
    return lambda _data: {"kind": "cnn", "filters": list(filters), "dense": dense}


def conv1d_json(data: Dataset) -> dict[str, Any]:
    """A user's Conv1D model as `model.to_json()` (built here, so Keras writes the JSON)."""
    import keras

    inputs = keras.Input(shape=data.input_shape)
    x = keras.layers.Conv1D(16, 5, activation="relu")(inputs)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Conv1D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(data.n_outputs)(x)
    return {"kind": "keras_json", "config": keras.Model(inputs, outputs).to_json()}


def lstm_json(data: Dataset) -> dict[str, Any]:
    """A user's small LSTM classifier as `model.to_json()`."""
    import keras

    inputs = keras.Input(shape=data.input_shape)
    x = keras.layers.LSTM(16)(inputs)
    outputs = keras.layers.Dense(data.n_outputs)(x)
    return {"kind": "keras_json", "config": keras.Model(inputs, outputs).to_json()}


def gru_json(data: Dataset) -> dict[str, Any]:
    """A user's small GRU classifier as `model.to_json()`."""
    import keras

    inputs = keras.Input(shape=data.input_shape)
    x = keras.layers.GRU(12)(inputs)
    outputs = keras.layers.Dense(data.n_outputs)(x)
    return {"kind": "keras_json", "config": keras.Model(inputs, outputs).to_json()}


# --- the suite --------------------------------------------------------------------------------

TASKS: tuple[Task, ...] = (
    # dev: defaults and methods may be chosen here
    Task(
        "digits-mlp",
        "dev",
        digits,
        mlp(64, 32),
        15,
        32,
        "adam",
        "sklearn digits, 10 classes, MLP 64-32",
    ),
    Task(
        "cancer-mlp",
        "dev",
        breast_cancer,
        mlp(32, 16),
        20,
        16,
        "adam",
        "sklearn breast cancer, binary, 426 train rows",
    ),
    Task(
        "noisy4-sgd",
        "dev",
        noisy_four_classes,
        mlp(64, 32),
        15,
        64,
        "sgd",
        "make_classification 4 noisy classes, 40 features, SGD momentum 0.9",
    ),
    Task(
        "friedman-adamw",
        "dev",
        friedman,
        mlp(64, 64),
        20,
        32,
        "adamw",
        "make_friedman1 regression (raw target), AdamW",
    ),
    Task(
        "bumps-conv1d",
        "dev",
        bump_sequences,
        conv1d_json,
        12,
        64,
        "adam",
        "synthetic series, 3 classes, user Conv1D (keras_json)",
    ),
    Task(
        "lines-cnn",
        "dev",
        line_images,
        cnn(8, 16),
        10,
        32,
        "rmsprop",
        "synthetic 12x12 line images, 3 classes, CNN, RMSprop",
    ),
    # test: only ever reported
    Task(
        "wine-mlp",
        "test",
        wine,
        mlp(64, 32),
        30,
        16,
        "adam",
        "sklearn wine, 3 classes, 133 train rows",
    ),
    Task(
        "imbalanced-rmsprop",
        "test",
        imbalanced_binary,
        mlp(64, 32),
        20,
        32,
        "rmsprop",
        "make_classification binary 85/15, label noise, RMSprop",
    ),
    Task(
        "diabetes-adam",
        "test",
        diabetes,
        mlp(32, 16),
        40,
        16,
        "adam",
        "sklearn diabetes regression (z-scored target), 331 train rows",
    ),
    Task(
        "moons-adamw",
        "test",
        moons,
        mlp(32, 32),
        25,
        32,
        "adamw",
        "make_moons noise 0.3, binary, AdamW",
    ),
    Task(
        "sumsign-lstm",
        "test",
        sum_sign_sequences,
        lstm_json,
        15,
        64,
        "adam",
        "synthetic 2-channel series, binary, user LSTM (keras_json)",
    ),
    Task(
        "textures-cnn-sgd",
        "test",
        texture_images,
        cnn(8, 16),
        12,
        32,
        "sgd",
        "synthetic 16x16 stripe images, 4 classes, CNN, SGD momentum 0.9",
    ),
    Task(
        "sparsereg-mlp",
        "test",
        sparse_regression,
        mlp(64, 32, dropout=0.1),
        25,
        32,
        "adam",
        "make_regression 30 features (8 informative), z-scored target, dropout 0.1",
    ),
    # test, added in the twelfth session after every default had been chosen (kinds of job
    # the first seven lack: tiny data over many epochs, large batches, a GRU, friedman3);
    # only ever reported, like the seven above
    Task(
        "quantiles-adam",
        "test",
        gaussian_quantiles,
        mlp(64, 64),
        30,
        64,
        "adam",
        "make_gaussian_quantiles 3 classes, 6 features, MLP 64-64",
    ),
    Task(
        "friedman3-rmsprop",
        "test",
        friedman_three,
        mlp(32, 32),
        40,
        16,
        "rmsprop",
        "make_friedman3 regression (z-scored target), RMSprop",
    ),
    Task(
        "hastie-sgd",
        "test",
        hastie,
        mlp(32, 16),
        20,
        128,
        "sgd",
        "make_hastie_10_2 binary, batch 128, SGD momentum 0.9",
    ),
    Task(
        "iris-adamw",
        "test",
        iris,
        mlp(16, 16),
        50,
        8,
        "adamw",
        "sklearn iris, 3 classes, 112 train rows, 50 epochs, AdamW",
    ),
    Task(
        "shapes-cnn",
        "test",
        shape_images,
        cnn(8, 16),
        15,
        64,
        "adam",
        "synthetic 10x10 images of a square, plus or ring, 3 classes, CNN",
    ),
    Task(
        "trend-gru",
        "test",
        trend_sequences,
        gru_json,
        20,
        32,
        "rmsprop",
        "synthetic series, rising or falling trend, binary, user GRU (keras_json), RMSprop",
    ),
)

#: The --quick subset: two dev and two test tasks, one search seed.
QUICK: tuple[str, ...] = ("cancer-mlp", "friedman-adamw", "wine-mlp", "moons-adamw")


def by_name(names: list[str] | None = None, split: Split | None = None) -> list[Task]:
    """The tasks asked for (all by default), in suite order."""
    out = [t for t in TASKS if (names is None or t.name in names)]
    if split is not None:
        out = [t for t in out if t.split == split]
    unknown = set(names or ()) - {t.name for t in TASKS}
    if unknown:
        raise SystemExit(f"unknown tasks: {', '.join(sorted(unknown))}")
    return out


def describe() -> str:
    """The suite as JSON lines (for RESULTS.md and --list)."""
    return "\n".join(
        json.dumps(
            {
                "task": t.name,
                "split": t.split,
                "epochs": t.epochs,
                "batch": t.batch_size,
                "optimizer": t.optimizer,
                "about": t.about,
            }
        )
        for t in TASKS
    )
