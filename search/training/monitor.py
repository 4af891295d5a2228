"""What happens at the end of every epoch of a trial: record its rate and metrics, detect
divergence, report to Optuna, prune or stop, and save a checkpoint when one is due."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import optuna

from search.errors import ModelError, TrialDiverged, TrialStopped
from search.outcome import TrialOutcome
from search.spec import StudySpec
from search.training.report_writer import Persist

StopCheck = Callable[[], bool]
T = TypeVar("T")


def direct(fn: Callable[[], T]) -> T:
    """A `Persist` that just calls (no retries): in-memory studies, tests, benchmarks."""
    return fn()


class EpochMonitor:
    """Per epoch: record LR and metrics, detect divergence, report to Optuna, prune or stop."""

    def __init__(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        outcome: TrialOutcome,
        should_stop: StopCheck | None,
        persist: Persist[Any] = direct,
        report: Callable[[float, int], None] | None = None,
    ) -> None:
        self.trial, self.spec, self.outcome = trial, spec, outcome
        self.report = report or trial.report
        self.should_stop = should_stop or (lambda: False)
        self.persist = persist
        self.pruned = self.stopped = False
        self.diverged: str | None = None
        self.value: float | None = None
        self.on_saved_epoch: Callable[[int, bool], object] | None = None

    def replay(self, epochs: int) -> None:
        """Report a resumed trial's earlier epochs again (pruners compare whole curves)."""
        values = self.outcome.history.get(self.spec.objective.metric, [])
        for epoch, value in enumerate(values[:epochs]):
            if math.isfinite(value):
                self.report(value, epoch)
                self._aggregate(value)

    def keras_callback(self, epoch_rate: Callable[[], float] | None = None) -> Any:
        """The Keras callback that records each epoch's rate and ends epochs. `epoch_rate`
        gives the rate the epoch started with once it ended (the epoch loop reads it in its
        graph); without it the optimizer's rate is read when the epoch begins."""
        import keras

        monitor = self

        class _Hook(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if epoch_rate is None:
                    lr = self.model.optimizer.learning_rate
                    monitor.outcome.lr.append(float(keras.ops.convert_to_numpy(lr)))

            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if epoch_rate is not None:
                    monitor.outcome.lr.append(epoch_rate())
                if monitor.epoch_end(epoch, logs or {}):
                    self.model.stop_training = True

        return _Hook()

    def epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool:
        """Handle one finished epoch; True when training must stop now."""
        for name, value in logs.items():
            if name != "learning_rate":
                self.outcome.history.setdefault(name, []).append(float(value))
        metric = self.spec.objective.metric
        if metric not in logs:
            raise ModelError(
                f"objective metric {metric!r} is not produced by this model;"
                f" available: {', '.join(sorted(logs))}"
            )
        value = float(logs[metric])
        if not (math.isfinite(float(logs.get("loss", 0.0))) and math.isfinite(value)):
            self.diverged = f"diverged at epoch {epoch + 1}: loss is {logs.get('loss')}"
            return True
        self._aggregate(value)
        self.report(value, epoch)  # the pruner sees every epoch's own value
        self.pruned = bool(self.persist(self.trial.should_prune))
        self.stopped = not self.pruned and self.should_stop()
        if not self.pruned and self.on_saved_epoch is not None:
            self.on_saved_epoch(epoch + 1, self.stopped)  # a stop always saves: the retry
        return self.pruned or self.stopped  # resumes from here

    def _aggregate(self, value: float) -> None:
        """The trial's value so far: the last epoch's, or with `objective.aggregate` = best
        the best epoch's (the first of equals, as Keras's EarlyStopping keeps it)."""
        mode = self.spec.objective.best_mode
        if mode is not None and self.value is not None:
            better = value > self.value if mode == "max" else value < self.value
            if not better:
                return
        self.value = value

    def finish(self) -> float:
        """The trial's value, or the exception that says why it ended early."""
        epochs = len(self.outcome.lr)
        if self.diverged:
            raise TrialDiverged(self.diverged)
        if self.pruned:
            raise optuna.TrialPruned(f"pruned at epoch {epochs}")
        if self.stopped:
            raise TrialStopped(f"stopped at epoch {epochs}")
        assert self.value is not None
        return self.value


__all__ = ["EpochMonitor", "StopCheck", "direct"]
