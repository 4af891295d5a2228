"""Checkpoint saves are throttled by time, but a stop always saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search.checkpoints import CheckpointHandle, CheckpointStore, TrialCheckpoint


def _checkpoint(epoch: int) -> TrialCheckpoint:
    return TrialCheckpoint(
        epoch=epoch,
        weights=[np.ones(3)],
        optimizer=[np.zeros(2)],
        lr=[0.1] * epoch,
        history={"val_loss": [1.0] * epoch},
    )


def test_saves_wait_for_the_interval_but_a_forced_save_does_not(tmp_path: Path) -> None:
    handle = CheckpointHandle(CheckpointStore(tmp_path), "study", 0, every_s=3600)
    made: list[int] = []

    def make(epoch: int) -> TrialCheckpoint:
        made.append(epoch)
        return _checkpoint(epoch)

    assert not handle.save_if_due(lambda: make(1))
    assert handle.load() is None and made == []  # not even snapshotted
    assert handle.save_if_due(lambda: make(2), force=True)
    saved = handle.load()
    assert saved is not None and saved.epoch == 2 and made == [2]


def test_every_epoch_when_the_interval_is_zero(tmp_path: Path) -> None:
    handle = CheckpointHandle(CheckpointStore(tmp_path), "study", 0, every_s=0)
    for epoch in (1, 2, 3):
        assert handle.save_if_due(lambda e=epoch: _checkpoint(e))  # type: ignore[misc]
        saved = handle.load()
        assert saved is not None and saved.epoch == epoch
