"""What one trial leaves behind, typed: its strategy, curves, timing, export and, when it
failed, why (a `FailureKind` for the code, a `fail_reason` for people).

Stored as Optuna user attributes under the keys the worker has always written, so databases
written before this module read back; every reader (the worker's rules, the API, the plots)
goes through `TrialOutcome.from_attrs` instead of picking keys by hand. Pure Python.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from search.errors import DatasetError, ModelError, PluginError, SpecError, StrategyError

#: Errors that say the study's inputs are unusable (data, model, plugin, objective, params).
_BAD_INPUT: tuple[type[Exception], ...] = (
    DatasetError,
    ModelError,
    PluginError,
    SpecError,
    StrategyError,
)


class FailureKind(enum.StrEnum):
    """Why a trial failed, as the worker's rules need it (stored as `fail_kind`)."""

    DIVERGED = "diverged"  # the loss or the objective became NaN or infinite
    BAD_INPUT = "bad_input"  # the dataset, the model or the objective cannot be used
    ERROR = "error"  # any other exception while training
    WORKER_LOST = "worker_lost"  # no heartbeat within the grace period: failed by a sweep
    SHUT_DOWN = "shut_down"  # its worker was told to stop; released for a retry
    CANCELLED = "cancelled"  # the study was cancelled while it trained
    TIMED_OUT = "timed_out"  # queued, then dropped: the study's timeout passed
    NOT_RUN = "not_run"  # queued, then dropped: the study failed first
    OUT_OF_MEMORY = "out_of_memory"  # past the worker's memory limit, or an allocation failed

    @property
    def interrupted(self) -> bool:
        """Stopped from outside the trial (lost worker, shutdown, cancel): such failures say
        nothing about the study, so they never count towards giving it up."""
        return self in _INTERRUPTIONS

    @classmethod
    def of_exception(cls, exc: BaseException) -> FailureKind:
        """The kind of an exception raised while a trial trained."""
        if isinstance(exc, _BAD_INPUT):
            return cls.BAD_INPUT
        if isinstance(exc, MemoryError) or any(
            c.__name__ == "ResourceExhaustedError" for c in type(exc).__mro__
        ):  # TensorFlow's OOM, matched by name: this module never imports TensorFlow
            return cls.OUT_OF_MEMORY
        return cls.ERROR


#: Most characters of a failure reason kept (the start says what went wrong).
MAX_REASON_CHARS = 2000
#: TensorFlow's `[[{{node X}}]]` and `[Op:__inference_...]` tails of an op error's message.
_OP_TAIL = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]")


def failure_reason(exc: BaseException) -> str:
    """`Type: message` for people. A TensorFlow op error opens with the graph's Python trace
    ("Detected at node ... defined at", then `File` lines naming the server's paths) and ends
    with its cause, which a cut at MAX_REASON_CHARS or a listing's 300 lost; keep the cause."""
    text = str(exc)
    if "Detected at node" in text:
        kept = [
            line.strip()
            for line in _OP_TAIL.sub("", text).splitlines()
            if line.strip()
            and not line.lstrip().startswith('File "')  # the trace's lines
            and not line.startswith(("Graph execution error", "Detected at node"))
        ]
        text = " ".join(kept) or text
    return f"{type(exc).__name__}: {text}"[:MAX_REASON_CHARS]


_INTERRUPTIONS = frozenset({FailureKind.WORKER_LOST, FailureKind.SHUT_DOWN, FailureKind.CANCELLED})

#: Reasons written before `fail_kind` existed, by how they began.
_LEGACY_PREFIXES: tuple[tuple[str, FailureKind], ...] = (
    ("worker lost", FailureKind.WORKER_LOST),
    ("worker shut down", FailureKind.SHUT_DOWN),
    ("study cancelled", FailureKind.CANCELLED),
    ("not run: the study's timeout passed", FailureKind.TIMED_OUT),
    ("diverged at epoch", FailureKind.DIVERGED),
)


@dataclass
class TrialOutcome:
    """One trial's user attributes; None (or empty) where nothing was stored.

    The trainer fills it epoch by epoch and stores it once (`to_attrs`); a failure is stored
    on its own with `failure_attrs`, since a trial may fail before or without training.
    Curves are kept as stored: a value written as JSON null reads back as None.
    """

    strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    lr: list[float] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int | None = None
    seconds: float | None = None
    export: dict[str, Any] = field(default_factory=dict)
    resumed_from_epoch: int | None = None
    fail_reason: str | None = None
    fail_kind: FailureKind | None = None
    seed: int | None = None  # a replicate's own seed of weights and batch order (else the study's)

    def to_attrs(self) -> dict[str, Any]:
        """The user attributes to store: every field that has a value (None is left out)."""
        attrs = {
            "strategy": self.strategy,
            "params": self.params,
            "lr": self.lr,
            "history": self.history,
            "epochs_run": self.epochs_run,
            "seconds": self.seconds,
            "export": self.export,
            "resumed_from_epoch": self.resumed_from_epoch,
            "fail_reason": self.fail_reason,
            "fail_kind": None if self.fail_kind is None else self.fail_kind.value,
            "seed": self.seed,
        }
        return {key: value for key, value in attrs.items() if value is not None}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialOutcome:
        """Read stored attributes; missing, unknown or ill-typed keys are tolerated."""
        reason = _typed(attrs.get("fail_reason"), str)
        return cls(
            strategy=None if attrs.get("strategy") is None else str(attrs["strategy"]),
            params=dict(_typed(attrs.get("params"), dict) or {}),
            lr=list(_typed(attrs.get("lr"), list) or []),
            history=dict(_typed(attrs.get("history"), dict) or {}),
            epochs_run=_int(attrs.get("epochs_run")),
            seconds=_number(attrs.get("seconds")),
            export=dict(_typed(attrs.get("export"), dict) or {}),
            resumed_from_epoch=_int(attrs.get("resumed_from_epoch")),
            fail_reason=reason,
            fail_kind=_kind(attrs, reason),
            seed=_int(attrs.get("seed")),
        )


def failure_attrs(kind: FailureKind, reason: str) -> dict[str, Any]:
    """The attributes that record a failure (written together, before the trial is failed)."""
    return {"fail_reason": reason, "fail_kind": kind.value}


def _kind(attrs: Mapping[str, Any], reason: str | None) -> FailureKind | None:
    """The stored kind; for trials stored before `fail_kind` existed, read from the reason
    (a study running across an upgrade keeps its rules)."""
    stored = attrs.get("fail_kind")
    if stored is not None:
        try:
            return FailureKind(stored)
        except ValueError:
            return None
    if not reason:
        return None
    for prefix, kind in _LEGACY_PREFIXES:
        if reason.startswith(prefix):
            return kind
    return FailureKind.ERROR


def _typed(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


__all__ = ["FailureKind", "TrialOutcome", "failure_attrs"]
