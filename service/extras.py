"""Which optional part of lrsearch is installed: `lrsearch[api]` has no TensorFlow, so the
commands that train (`lrsearch worker`, `lrsearch serve` with workers) ask first."""

from __future__ import annotations

import importlib.util

WORKER_MODULES = ("tensorflow", "keras")


def worker_extra_missing() -> str | None:
    """One line telling how to install the worker when TensorFlow or Keras is absent, else None.

    Looked up without importing them, so the check costs nothing where they are installed.
    """
    missing = [name for name in WORKER_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"error: training needs {' and '.join(missing)}, which this install lacks: "
        "pip install 'lrsearch[worker]'"
    )
