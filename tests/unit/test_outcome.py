"""The typed trial outcome: stored under the keys the worker always wrote, read back from
old and odd attributes alike, and failures classified by kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from search.errors import DatasetError, ModelError, TrialDiverged
from search.outcome import FailureKind, TrialOutcome, failure_attrs, failure_reason

STORED = {
    "strategy": "cosine",
    "params": {"initial_lr": 0.1},
    "lr": [0.1, 0.05],
    "history": {"val_loss": [0.9, 0.7]},
    "epochs_run": 2,
    "seconds": 1.25,
    "export": {"initial_lr": 0.1},
}


def test_attrs_round_trip_under_the_keys_the_worker_always_wrote() -> None:
    outcome = TrialOutcome.from_attrs(STORED)
    assert outcome.to_attrs() == STORED  # no failure, no resume: those keys stay absent
    resumed = TrialOutcome.from_attrs({**STORED, "resumed_from_epoch": 1})
    assert resumed.to_attrs() == {**STORED, "resumed_from_epoch": 1}


def test_failures_are_stored_as_kind_and_reason() -> None:
    attrs = failure_attrs(FailureKind.WORKER_LOST, "worker lost: ...; retried")
    assert attrs == {"fail_reason": "worker lost: ...; retried", "fail_kind": "worker_lost"}
    outcome = TrialOutcome.from_attrs(attrs)
    assert outcome.fail_kind is FailureKind.WORKER_LOST and outcome.fail_kind.interrupted
    assert outcome.lr == [] and outcome.epochs_run is None and outcome.strategy is None


def test_missing_unknown_and_ill_typed_keys_are_tolerated() -> None:
    odd = TrialOutcome.from_attrs(
        {"lr": None, "history": [1], "epochs_run": True, "fail_kind": "martian", "extra": 1}
    )
    assert odd == TrialOutcome(fail_kind=None)
    assert TrialOutcome.from_attrs({}) == TrialOutcome()


def test_reasons_stored_before_fail_kind_read_back_with_their_kind() -> None:
    legacy = {
        "worker lost: no heartbeat within the grace period; retried": FailureKind.WORKER_LOST,
        "worker shut down (stopped at epoch 3); retried": FailureKind.SHUT_DOWN,
        "study cancelled (stopped at epoch 1)": FailureKind.CANCELLED,
        "not run: the study's timeout passed": FailureKind.TIMED_OUT,
        "diverged at epoch 2: loss is nan": FailureKind.DIVERGED,
        "ValueError: boom": FailureKind.ERROR,
    }
    for reason, kind in legacy.items():
        assert TrialOutcome.from_attrs({"fail_reason": reason}).fail_kind is kind, reason


def test_kinds_of_exceptions_and_which_kinds_are_interruptions() -> None:
    assert FailureKind.of_exception(DatasetError("gone")) is FailureKind.BAD_INPUT
    assert FailureKind.of_exception(ModelError("no metric")) is FailureKind.BAD_INPUT
    assert FailureKind.of_exception(RuntimeError("OOM")) is FailureKind.ERROR
    assert FailureKind.of_exception(TrialDiverged("nan")) is FailureKind.ERROR
    interrupted = {kind for kind in FailureKind if kind.interrupted}
    assert interrupted == {FailureKind.WORKER_LOST, FailureKind.SHUT_DOWN, FailureKind.CANCELLED}


def test_a_tensorflow_op_error_is_reported_by_its_cause_not_its_trace(tmp_path: Path) -> None:
    """A graph error opens with ~2 KB of "Detected at node ... File ..." (the server's paths)
    and ends with the cause, which the cut and the listings lost: the cause comes first."""
    import tensorflow as tf

    zeros = tmp_path / "zeros.tfrecord"
    zeros.write_bytes(bytes(4096))

    @tf.function
    def first_record() -> Any:
        return next(iter(tf.data.TFRecordDataset(str(zeros))))

    with pytest.raises(tf.errors.DataLossError) as caught:
        first_record()
    assert "Detected at node" in str(caught.value) and 'File "' in str(caught.value)
    reason = failure_reason(caught.value)
    assert reason.startswith("DataLossError: corrupted record at 0"), reason
    assert "File" not in reason and "[[" not in reason and "[Op:" not in reason
    assert failure_reason(ValueError("plain\nmessage")) == "ValueError: plain\nmessage"
    assert len(failure_reason(ValueError("x" * 5000))) == 2000
