"""Fused population training (issue 18): members trained together in one graph get what the
same trials trained solo get (values within float noise, recorded LR identical), and each
member ends, plateaus and checkpoints on its own."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import optuna
import pytest
import tensorflow as tf

from search.checkpoints import CheckpointHandle, CheckpointStore
from search.data import Dataset, load_digits
from search.errors import TrialDiverged, TrialStopped
from search.spec import StudySpec, parse_spec
from search.strategies import get_strategy
from search.training.population import stacked
from search.training.trainer import Trainer

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)

# measured (benchmarks/population.py): float32 sums in another order move a member's final
# value by ~1e-7..1e-3 relative after a few epochs; LRs recorded are identical
RTOL, ATOL = 1e-2, 1e-3


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    return Trainer()


def spec_for(strategies: list[str], epochs: int = 3, **task: Any) -> StudySpec:
    return parse_spec({"strategies": strategies, "task": {"epochs": epochs, **task}})


def asked(plan: list[dict[str, Any]], pruner: Any = None) -> tuple[optuna.Study, list[Any]]:
    study = optuna.create_study(pruner=pruner or optuna.pruners.NopPruner())
    for params in plan:
        study.enqueue_trial(params)
    return study, [study.ask() for _ in plan]


def attrs(study: optuna.Study, trial: Any) -> dict[str, Any]:
    return study._storage.get_trial(trial._trial_id).user_attrs


def solo(trainer: Trainer, spec: StudySpec, data: Dataset, params: dict[str, Any]) -> Any:
    study, [trial] = asked([params])
    try:
        value: Any = trainer.run(trial, spec, data)
    except Exception as exc:
        value = exc
    return value, attrs(study, trial)


def fused_epochs(trainer: Trainer) -> dict[Any, int]:
    """Epochs trained so far by each population graph the trainer keeps."""
    return {loop: loop.epochs_run for loop in (trainer.populations or {}).values() if loop}


def epochs_since(trainer: Trainer, before: dict[Any, int]) -> int:
    """Fused epochs trained since `before` (0 when every trial trained solo)."""
    return sum(n - before.get(loop, 0) for loop, n in fused_epochs(trainer).items())


def close(a: float, b: float) -> bool:
    return abs(a - b) <= max(ATOL, RTOL * abs(a))


PLAN = [
    {"strategy": "exponential", "exponential.initial_lr": 0.01, "exponential.decay_steps": 30,
     "exponential.decay_rate": 0.5, "exponential.staircase": False},
    {"strategy": "cosine", "cosine.initial_lr": 0.003, "cosine.decay_steps": 50,
     "cosine.alpha": 0.0, "cosine.warmup_steps": 10},
    {"strategy": "step", "step.initial_lr": 0.02, "step.drop": 0.5, "step.every": 1},
    {"strategy": "constant", "constant.initial_lr": 0.001},
]  # fmt: skip


def members_match_solo(trainer: Trainer, digits: Dataset, kind: str, fused: bool) -> None:
    spec = spec_for(["exponential", "cosine", "step", "constant"], model={"kind": kind})
    plan = [dict(p) for p in PLAN]
    study, trials = asked(plan)
    before = fused_epochs(trainer)
    results = trainer.run_many(trials, spec, digits)
    assert epochs_since(trainer, before) == (3 if fused else 0), "fused or not, as expected"
    for params, trial, result in zip(plan, trials, results, strict=True):
        value, expected = solo(trainer, spec, digits, params)
        got = attrs(study, trial)
        assert isinstance(result, float) and close(value, result), (params, value, result)
        assert got["lr"] == pytest.approx(expected["lr"], rel=1e-7, abs=0)
        for name, curve in expected["history"].items():
            assert all(close(a, b) for a, b in zip(curve, got["history"][name], strict=True))
        assert got["epochs_run"] == 3


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_fused_members_match_the_same_trials_trained_solo(trainer, digits, kind) -> None:
    members_match_solo(trainer, digits, kind, fused=True)


def test_cnn_members_fuse_and_match_solo_where_grouped_convolutions_do_not_train(
    digits, monkeypatch
) -> None:
    """Where TensorFlow cannot train a grouped convolution (no oneDNN: CPUs without
    AVX-512), the stacked convolutions are a batched matmul and still match solo training.
    Forced here, with a trainer of its own, so a graph traced earlier is not reused."""
    monkeypatch.setattr(stacked, "grouped_conv_trains", lambda: False)
    members_match_solo(Trainer(), digits, "cnn", fused=True)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stacked_input", [False, True])
def test_the_matmul_convolution_is_each_members_own_convolution(
    padding: str, stacked_input: bool
) -> None:
    """Forward and kernel gradient of the im2col path equal K separate convolutions, on the
    shared input or each on its member's channels (an even kernel too: SAME puts the odd
    pixel after)."""
    k, c_in, c_out = 3, 4, 5
    rng = np.random.default_rng(7)
    h = tf.constant(rng.normal(size=(2, 7, 6, k * c_in if stacked_input else c_in)), tf.float32)
    for kh, kw in ((3, 3), (2, 4)):
        kernel = tf.Variable(rng.normal(size=(k, kh, kw, c_in, c_out)).astype("float32"))
        with tf.GradientTape(persistent=True) as tape:
            got = stacked._conv_as_matmul(h, kernel, k if stacked_input else 1, padding)
            parts = [h[..., m * c_in : (m + 1) * c_in] if stacked_input else h for m in range(k)]
            want = tf.concat(
                [tf.nn.conv2d(x, kernel[m], 1, padding) for m, x in enumerate(parts)], -1
            )
            got_loss, want_loss = tf.reduce_sum(got**2), tf.reduce_sum(want**2)
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            tape.gradient(got_loss, kernel).numpy(),
            tape.gradient(want_loss, kernel).numpy(),
            rtol=1e-4,
            atol=1e-4,
        )


class PruneNumber(optuna.pruners.BasePruner):
    """Prunes one trial (by number) from its second epoch on; a real pruner, no mock."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == self.number and (trial.last_step or 0) >= 1


def test_a_pruned_member_does_not_stop_the_others(trainer, digits) -> None:
    spec = spec_for(["constant"], epochs=4)
    plan = [{"strategy": "constant", "constant.initial_lr": lr} for lr in (1e-3, 2e-3, 3e-3)]
    study, trials = asked(plan, PruneNumber(1))
    before = fused_epochs(trainer)
    results = trainer.run_many(trials, spec, digits)
    assert epochs_since(trainer, before) == 4
    assert isinstance(results[1], optuna.TrialPruned)
    assert attrs(study, trials[1])["epochs_run"] == 2
    for i in (0, 2):
        value, _ = solo(trainer, spec, digits, plan[i])
        assert isinstance(results[i], float) and close(value, results[i])
        assert attrs(study, trials[i])["epochs_run"] == 4


def test_a_diverging_member_fails_alone(trainer) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype("float32")
    y = (x @ rng.normal(size=6) * 10).astype("float32")
    data = Dataset("linear", x[:200], y[:200], x[200:], y[200:], "regression", None)
    spec = parse_spec(
        {
            "strategies": ["constant"],
            "objective": {"metric": "val_mae"},
            "ranges": {"initial_lr": {"low": 1e-4, "high": 10, "log": True}},
            "task": {"epochs": 4, "optimizer": "sgd", "batch_size": 20},
        }
    )
    plan = [{"strategy": "constant", "constant.initial_lr": lr} for lr in (1e-3, 10.0, 3e-3)]
    study, trials = asked(plan)
    before = fused_epochs(trainer)
    results = trainer.run_many(trials, spec, data)
    assert epochs_since(trainer, before) == 4
    assert isinstance(results[1], TrialDiverged)
    assert attrs(study, trials[1])["fail_reason"].startswith("diverged at epoch")
    for i in (0, 2):
        value, expected = solo(trainer, spec, data, plan[i])
        assert isinstance(results[i], float) and close(value, results[i])
        assert attrs(study, trials[i])["lr"] == expected["lr"]


def test_a_plateau_member_follows_its_own_metric(trainer, digits) -> None:
    spec = spec_for(["plateau", "constant"], epochs=6)
    plateau = {"strategy": "plateau", "plateau.initial_lr": 0.5, "plateau.factor": 0.5,
               "plateau.patience": 0, "plateau.min_lr": 1e-6, "plateau.cooldown": 0}  # fmt: skip
    gentle = {**plateau, "plateau.initial_lr": 0.001, "plateau.factor": 0.2}
    plan = [plateau, {"strategy": "constant", "constant.initial_lr": 0.5}, gentle]
    study, trials = asked(plan)
    before = fused_epochs(trainer)
    trainer.run_many(trials, spec, digits)
    assert epochs_since(trainer, before) == 6
    for params, trial in zip(plan, trials, strict=True):
        got = attrs(study, trial)
        if params["strategy"] != "plateau":
            continue
        replay = get_strategy("plateau").lr_curve_from_history(
            got["params"], got["history"]["val_loss"], maximize=False
        )
        assert got["lr"] == pytest.approx(replay, rel=1e-6)
        _, expected = solo(trainer, spec, digits, params)
        assert got["lr"] == pytest.approx(expected["lr"], rel=1e-6)
    first = attrs(study, trials[0])["lr"]
    assert first[0] == pytest.approx(0.5) and min(first) < 0.5  # it did plateau


def test_a_members_checkpoint_resumes_solo(trainer, digits, tmp_path) -> None:
    spec = spec_for(["exponential", "cosine", "step", "constant"], epochs=4)
    plan = [dict(p) for p in PLAN[:3]]
    store = CheckpointStore(tmp_path)
    handles = [CheckpointHandle(store, "s", i) for i in range(len(plan))]
    calls = itertools.count()
    stop_after_two = lambda: next(calls) >= len(plan)  # noqa: E731 - every member, epoch 2
    _, trials = asked(plan)
    before = fused_epochs(trainer)
    results = trainer.run_many(trials, spec, digits, stop_after_two, handles)
    assert epochs_since(trainer, before) == 2
    assert all(isinstance(r, TrialStopped) for r in results)
    for params, handle in zip(plan, handles, strict=True):
        saved = handle.load()
        assert saved is not None and saved.epoch == 2
        study, [retry] = asked([params])
        resumed = trainer.run(retry, spec, digits, None, handle)
        assert attrs(study, retry)["resumed_from_epoch"] == 2
        value, expected = solo(trainer, spec, digits, params)
        assert close(value, resumed)
        assert attrs(study, retry)["lr"] == pytest.approx(expected["lr"], rel=1e-7, abs=0)


def test_members_that_cannot_be_fused_train_one_after_another(digits) -> None:
    trainer = Trainer()
    spec = parse_spec(
        {"strategies": ["constant"], "task": {"epochs": 2, "model": {"kind": "mlp",
         "dropout": 0.2}}}
    )  # fmt: skip
    plan = [{"strategy": "constant", "constant.initial_lr": lr} for lr in (1e-3, 2e-3)]
    _, trials = asked(plan)
    results = trainer.run_many(trials, spec, digits)
    assert all(isinstance(r, float) for r in results)
    assert epochs_since(trainer, {}) == 0  # dropout: solo trials, not a population
