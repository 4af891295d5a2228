"""search.tuning.tune(): the service's engine in this process, with real Keras training: a
notebook's own model and data, an installed task plugin, a study shared with the API's
database (its answers are the API's), the progress line without tqdm, a failing model."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.data import load_digits
from search.errors import SpecError
from search.tuning import TuneResult, TuningFailed, tune
from search.tuning.progress import TuneProgress
from tests.conftest import ClientFactory
from tests.plugins import make_plugin_dir, plugins_on_path

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

DIGITS = load_digits()


def small_mlp() -> Any:
    return keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


LOGITS = {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = make_plugin_dir(tmp_path_factory.mktemp("plugins"))
    with plugins_on_path(folder):
        yield folder


@pytest.mark.slow
def test_tune_on_datasets_returns_the_best_schedule_ready_to_apply() -> None:
    train = tf.data.Dataset.from_tensor_slices((DIGITS.x_train, DIGITS.y_train))
    train = train.shuffle(2000, seed=0, reshuffle_each_iteration=True).batch(64)
    val = tf.data.Dataset.from_tensor_slices((DIGITS.x_val, DIGITS.y_val)).batch(256)
    result = tune(
        small_mlp,
        train,
        val,
        epochs=3,
        n_trials=4,
        strategies=["cosine", "plateau"],
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        objective="val_accuracy",
        replicate_share=0.0,  # the best is then one trial (replicates: test_a_shared_study...)
        progress=False,
        **LOGITS,
    )
    assert isinstance(result, TuneResult) and result.status == "completed"
    assert len(result.trials) == 4 and result.storage is None
    assert result.progress["complete"] + result.progress["pruned"] == 4
    best = result.best
    assert best is not None and best.strategy in ("cosine", "plateau")
    assert best.value == max(t.value for t in result.trials if t.state == "complete")
    keys = {"schedule", "callbacks", "initial_lr", "optimizer", "python", "preprocess"}
    assert set(best.export) == keys
    optimizer, callbacks = best.apply()
    assert isinstance(optimizer, keras.optimizers.Adam)
    winner = next(t for t in result.trials if t.number == best.trial_number)
    assert len(winner.lr) == 3 and winner.history["val_accuracy"][-1] == best.value
    # the schedule it found trains a fresh model of yours as in the trial
    model = small_mlp()
    model.compile(optimizer=optimizer, metrics=["accuracy"], **LOGITS)
    model.fit(train, epochs=1, verbose=0, callbacks=callbacks)


@pytest.mark.slow
def test_plateau_watches_a_custom_metric_in_the_objectives_direction() -> None:
    """Keras cannot tell whether a metric it does not know goes up or down: the export says."""

    class Spread(keras.metrics.Mean):  # a custom metric: Keras knows no direction for it
        def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
            return super().update_state(keras.ops.std(y_pred, axis=-1))

    metric = Spread(name="spread")
    result = tune(
        small_mlp,
        (DIGITS.x_train, DIGITS.y_train),
        (DIGITS.x_val, DIGITS.y_val),
        epochs=2,
        n_trials=2,
        batch_size=128,
        strategies=["plateau"],
        metrics=[metric],
        objective="val_spread",
        progress=False,
        **LOGITS,
    )
    assert [t.state for t in result.trials] == ["complete", "complete"]
    assert result.best is not None
    [callback] = result.best.export["callbacks"]
    assert callback["config"]["mode"] == "min" and callback["config"]["monitor"] == "val_spread"
    assert "mode='min'" in result.best.export["python"]


@pytest.mark.slow
def test_tune_runs_an_installed_plugin(installed: Path) -> None:
    result = tune(
        plugin="tiny-counted",
        plugin_args={"rows": 300},
        epochs=2,
        n_trials=2,
        batch_size=32,
        strategies=["constant", "exponential"],
        progress=False,
    )
    assert result.status == "completed" and result.best is not None
    assert [len(t.lr) for t in result.trials if t.state == "complete"] != []
    with pytest.raises(TuningFailed) as failed:
        tune(plugin="failing-data", epochs=1, n_trials=2, progress=False)
    assert "the data server at tfrecords.example is down" in str(failed.value)
    assert failed.value.result.status == "failed" and failed.value.result.trials == []


@pytest.mark.slow
def test_a_shared_study_is_the_apis_study(client_factory: ClientFactory, db_url: str) -> None:
    result = tune(
        small_mlp,
        (DIGITS.x_train, DIGITS.y_train),
        (DIGITS.x_val, DIGITS.y_val),
        epochs=2,
        n_trials=2,
        batch_size=128,
        strategies=["constant"],
        storage=db_url,
        name="from-a-notebook",
        progress=False,
        **LOGITS,
    )
    assert result.storage == db_url and result.best is not None
    with client_factory() as api:
        study = api.get(f"/v1/studies/{result.study_id}").json()
        best = api.get(f"/v1/studies/{result.study_id}/best").json()
        listed = [s["id"] for s in api.get("/v1/studies").json()["items"]]
    assert study["status"] == "completed" and study["name"] == "from-a-notebook"
    assert study["spec"]["task"]["plugin"] == "lrsearch.in-process"
    assert best == result.best.as_dict() and result.study_id in listed


@pytest.mark.slow
def test_a_model_function_that_fails_stops_the_study_with_its_error() -> None:
    def broken() -> Any:
        raise RuntimeError("no GPU named 'tpu9' here")

    data = (np.zeros((40, 8, 8), np.float32), np.zeros(40, np.int64))
    with pytest.raises(TuningFailed) as failed:
        tune(
            broken,
            data,
            data,
            epochs=1,
            n_trials=5,
            strategies=["constant"],
            progress=False,
            **LOGITS,
        )
    assert failed.value.result.status == "failed"
    assert "no GPU named 'tpu9' here" in str(failed.value)
    assert len(failed.value.result.trials) == 3  # three alike failures end it, not five


@pytest.mark.slow
def test_an_objective_the_model_does_not_report_fails_before_any_trial() -> None:
    """A typo (`val_acc` for `val_accuracy`) failed every trial at its first epoch; the
    preflight's first batches now show what the model reports."""
    data = (DIGITS.x_train[:64], DIGITS.y_train[:64])
    with pytest.raises(SpecError) as bad:
        tune(
            small_mlp,
            data,
            data,
            epochs=1,
            n_trials=2,
            metrics=["accuracy"],
            objective="val_acc",
            progress=False,
            **LOGITS,
        )
    [error] = bad.value.errors
    assert error.field == "objective.metric" and "val_accuracy" in error.message


def test_bad_arguments_fail_before_any_training() -> None:
    with pytest.raises(SpecError) as bad:
        tune(small_mlp, (1, 2), (1, 2), epochs=0, strategies=["nope"], **LOGITS)
    assert {e.field for e in bad.value.errors} == {"task.epochs", "strategies.0"}
    with pytest.raises(TypeError):
        tune(plugin="tiny-counted", build_model=small_mlp, epochs=1)
    with pytest.raises(TypeError):
        tune(small_mlp, epochs=1)


def test_progress_is_a_plain_line_per_trial_without_tqdm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    out = io.StringIO()
    bar = TuneProgress(3, stream=out)
    bar.update(1, None)
    bar.update(1, None)  # unchanged: not printed again
    bar.update(3, 0.25)
    bar.close()
    assert not bar.uses_tqdm
    assert out.getvalue() == "lrsearch: 1/3 trials, best -\nlrsearch: 3/3 trials, best 0.25\n"


def test_progress_uses_tqdm_when_installed() -> None:
    pytest.importorskip("tqdm")
    out = io.StringIO()
    bar = TuneProgress(2, stream=out)
    bar.update(2, 0.5)
    bar.close()
    assert bar.uses_tqdm and "2/2" in out.getvalue() and "best 0.5" in out.getvalue()
