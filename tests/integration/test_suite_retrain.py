"""benchmarks/suite/retrain.py, the task suite's measuring instrument: a retrain that reuses
the compiled model of the same export's earlier seed gives exactly what a new model gives."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("keras")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from suite import peers, retrain, tasks, units

from search.space import run_shape
from search.training.keras_export import apply

pytestmark = pytest.mark.slow

SEEDS = (1001, 1002, 1003)


def _fresh_each_seed(spec: Any, data: Any, export: dict[str, Any]) -> list[list[float]]:
    """The plain way: a new model built, compiled and traced for every seed."""
    out = []
    for seed in SEEDS:
        optimizer, callbacks = apply(export)
        model, train = retrain.compiled(spec, data, seed, optimizer)
        out.append(retrain._fit(spec, data, model, train, callbacks))
    return out


@pytest.mark.parametrize("strategy", ["cosine", "plateau"])
def test_reused_model_retrains_exactly_as_new_models(strategy: str) -> None:
    # sparsereg-mlp has dropout (its seed state must follow the seed too); plateau's callback
    # changes the optimizer's rate, which must not leak into the next seed's fit.
    task = dataclasses.replace(tasks.by_name(["sparsereg-mlp"])[0], epochs=4)
    data = task.data()
    spec = units.spec_for(task, data, 16, 0)
    run = run_shape(spec, len(data.x_train))
    if strategy == "cosine":
        export = units.baseline_export(units.COSINE, spec, data)
    else:
        params = {"initial_lr": 3e-3, "factor": 0.5, "patience": 1, "min_lr": 1e-5, "cooldown": 0}
        export = peers.export_of(spec, "plateau", params, run)

    reused = retrain.curves(spec, data, export, SEEDS)
    fresh = _fresh_each_seed(spec, data, export)

    assert all(math.isfinite(v) for curve in reused for v in curve)
    assert reused == fresh
    assert len({curve[-1] for curve in reused}) == len(SEEDS)  # the seeds did differ


def test_schedule_free_starts_its_z_sequence_at_the_weights() -> None:
    # Built lazily inside fit's traced train step, ScheduleFreeAdamW copies the weights into
    # z within the step itself and trains far worse; every retrain's model is compiled with
    # its optimizer built eagerly first.
    import keras
    import numpy as np

    task = dataclasses.replace(tasks.by_name(["wine-mlp"])[0], epochs=8)
    data = task.data()
    spec = units.spec_for(task, data, 16, 0)
    optimizer = keras.optimizers.ScheduleFreeAdamW()
    model, _ = retrain.compiled(spec, data, 1001, optimizer)

    weights = [v.numpy() for v in model.trainable_variables]
    z = [
        optimizer._momentums[optimizer._get_variable_index(v)].numpy()
        for v in model.trainable_variables
    ]
    assert all(np.array_equal(a, b) for a, b in zip(weights, z, strict=True))

    curve = retrain.schedule_free_curves(spec, data, seeds=(1001,))[0]
    assert curve[-1] < 0.25 * curve[0]  # built lazily: 1.10 -> 1.08 over these epochs
