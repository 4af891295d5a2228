"""Per-epoch checkpoints of a running trial, so a retried trial resumes instead of restarting.

Why: a worker killed at epoch 90 of 100 should not cost 90 epochs again. At an epoch end
the trainer writes weights, optimizer variables, the LR state and the record so far as one
NPZ (no pickle), written to a temporary file and renamed, so a reader never sees half a file.
It does so at most every `every_s` seconds (the worker's default is 30 s: a save costs ~10 ms,
too much for every 20 ms epoch of a small model), and always when the trial is stopped.

Layout: `data_dir/checkpoints/<study id>/<trial number>.npz`, keyed by the *original* trial
number: a retry carries it as its `failed_trial` system attr. Ids are checked against a strict
pattern before they touch a path, and the file is removed when the trial ends for good.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("lrsearch.checkpoints")

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
FORMAT_VERSION = 1


@dataclass
class TrialCheckpoint:
    """Everything needed to continue a trial after `epoch` finished epochs."""

    epoch: int
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    base_lr: float | None = None
    callbacks: list[dict[str, float]] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """The JSON part (everything but the arrays)."""
        return {
            "version": FORMAT_VERSION,
            "epoch": self.epoch,
            "n_weights": len(self.weights),
            "n_optimizer": len(self.optimizer),
            "base_lr": self.base_lr,
            "callbacks": self.callbacks,
            "lr": self.lr,
            "history": self.history,
        }


class CheckpointStore:
    """Checkpoint files under one root directory (`data_dir / "checkpoints"`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, study_id: str, number: int) -> Path:
        """Where the checkpoint of (study, original trial number) lives; ids are validated."""
        return self.study_dir(study_id) / f"{_number(number)}.npz"

    def study_dir(self, study_id: str) -> Path:
        """The study's folder; refuses anything that is not a plain id."""
        if not isinstance(study_id, str) or not _ID.fullmatch(study_id):
            raise ValueError(f"invalid study id for a checkpoint path: {str(study_id)[:80]!r}")
        return self.root / study_id

    def save(self, study_id: str, number: int, checkpoint: TrialCheckpoint) -> None:
        """Write atomically: a temporary file in the same folder, then rename over the old."""
        target = self.path(study_id, number)
        target.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"w{i}": np.asarray(a) for i, a in enumerate(checkpoint.weights)}
        arrays.update({f"o{i}": np.asarray(a) for i, a in enumerate(checkpoint.optimizer)})
        arrays["meta"] = np.array(json.dumps(checkpoint.meta()))
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, study_id: str, number: int) -> TrialCheckpoint | None:
        """The checkpoint, or None when there is none or it cannot be read (then start over)."""
        path = self.path(study_id, number)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                if meta.get("version") != FORMAT_VERSION:
                    return None
                return TrialCheckpoint(
                    epoch=int(meta["epoch"]),
                    weights=[npz[f"w{i}"] for i in range(int(meta["n_weights"]))],
                    optimizer=[npz[f"o{i}"] for i in range(int(meta["n_optimizer"]))],
                    base_lr=meta.get("base_lr"),
                    callbacks=list(meta.get("callbacks") or []),
                    lr=[float(v) for v in meta.get("lr") or []],
                    history={k: [float(v) for v in vs] for k, vs in meta["history"].items()},
                )
        except Exception as exc:  # a damaged checkpoint costs a restart, never the trial
            log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
            return None

    def remove(self, study_id: str, number: int) -> None:
        """Delete one trial's checkpoint (absent is fine)."""
        self.path(study_id, number).unlink(missing_ok=True)

    def remove_study(self, study_id: str) -> None:
        """Delete every checkpoint of a study (it finished or was deleted)."""
        shutil.rmtree(self.study_dir(study_id), ignore_errors=True)


@dataclass
class CheckpointHandle:
    """The checkpoint file of one trial: what the trainer saves to and resumes from."""

    store: CheckpointStore
    study_id: str
    number: int
    every_s: float = 0.0
    _last_save: float = field(default_factory=time.monotonic, repr=False)

    def save(self, checkpoint: TrialCheckpoint) -> None:
        self.store.save(self.study_id, self.number, checkpoint)
        self._last_save = time.monotonic()

    def save_if_due(self, make: Callable[[], TrialCheckpoint], force: bool = False) -> bool:
        """Save `make()` when `every_s` has passed since the last save (or the trial's start),
        or when forced; the snapshot is only taken when it will be written."""
        if not force and time.monotonic() - self._last_save < self.every_s:
            return False
        self.save(make())
        return True

    def load(self) -> TrialCheckpoint | None:
        return self.store.load(self.study_id, self.number)

    def remove(self) -> None:
        self.store.remove(self.study_id, self.number)


def checkpoint_number(number: int, system_attrs: dict[str, Any]) -> int:
    """The key of a trial's checkpoint: its original trial's number when it is a retry."""
    original = system_attrs.get("failed_trial")
    return int(original) if isinstance(original, int) else int(number)


def _number(number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise ValueError(f"invalid trial number for a checkpoint path: {number!r}")
    return number


__all__ = ["CheckpointHandle", "CheckpointStore", "TrialCheckpoint", "checkpoint_number"]
