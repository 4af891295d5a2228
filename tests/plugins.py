"""Task plugins made installed for tests, without pip: a folder on sys.path (and on the
PYTHONPATH of the processes a test starts) holding each plugin's code and a `.dist-info`
with its entry points, which is exactly what `importlib.metadata` reads from an installed
package. Works from a clean clone under `make test`, and leaves the venv untouched.

- `example-blobs`: examples/plugin (its entry point read from its own pyproject.toml);
- `failing-data`: a tiny plugin whose `datasets()` raises with a known message;
- `tiny-counted`: a tiny plugin that does not declare its steps (the preflight counts).
"""

from __future__ import annotations

import os
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"
DATA_DOWN = "the data server at tfrecords.example is down"

TINY = '''
"""Small plugins for the tests (see tests/plugins.py)."""
import keras
import numpy as np
import tensorflow as tf
from pydantic import BaseModel, ConfigDict


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int = 200


def _arrays(rows, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64")


class Counted:
    Args = Args

    def build_model(self, args):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8)(inputs)))

    def loss(self, args):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self, args):
        return ["accuracy"]

    def datasets(self, args, batch_size, seed):
        x, y = _arrays(args.rows, 0)
        xv, yv = _arrays(50, 1)
        # filter() hides the length from tf.data: the preflight has to count the batches
        train = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True)
        val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(batch_size)
        return train.batch(batch_size), val


class FailingData(Counted):
    def datasets(self, args, batch_size, seed):
        raise ConnectionError("{down}")
'''


def _dist_info(folder: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lrsearch.tasks]\n{lines}")


def make_plugin_dir(folder: Path) -> Path:
    """Write the plugins' code and metadata into `folder`; returns it (for sys.path)."""
    folder.mkdir(parents=True, exist_ok=True)
    example = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    package = folder / "lrsearch_example_task"
    package.mkdir(exist_ok=True)
    source = EXAMPLE / "lrsearch_example_task" / "__init__.py"
    (package / "__init__.py").write_text(source.read_text())
    _dist_info(
        folder, example["name"], example["version"], example["entry-points"]["lrsearch.tasks"]
    )
    (folder / "lrsearch_test_tasks.py").write_text(
        textwrap.dedent(TINY).replace("{down}", DATA_DOWN)
    )
    _dist_info(
        folder,
        "lrsearch-test-tasks",
        "0.0.1",
        {
            "failing-data": "lrsearch_test_tasks:FailingData",
            "tiny-counted": "lrsearch_test_tasks:Counted",
        },
    )
    return folder


@contextmanager
def plugins_on_path(folder: Path) -> Iterator[dict[str, str]]:
    """The plugins importable in this process; yields the environment for child processes."""
    sys.path.insert(0, str(folder))
    previous = os.environ.get("PYTHONPATH")
    paths = [str(folder), str(ROOT), *([previous] if previous else [])]
    try:
        yield {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    finally:
        sys.path.remove(str(folder))
