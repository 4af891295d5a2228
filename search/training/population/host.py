"""What a population needs from the trainer that runs it (a Protocol: the population
package never imports `search.training.trainer`, which calls into it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import optuna

from search.checkpoints import CheckpointHandle
from search.spec import StudySpec
from search.training.monitor import StopCheck
from search.training.report_writer import Persist
from search.training.trial_start import Begun


class Host(Protocol):
    """`search.training.trainer.Trainer`, as a population uses it."""

    persist: Persist[Any]
    populations: Any  # the population loops it keeps (search.training.population.members)

    def run(
        self,
        trial: optuna.Trial,
        spec: StudySpec,
        dataset: Any,
        should_stop: StopCheck | None = None,
        checkpoint: CheckpointHandle | None = None,
    ) -> float: ...

    def begin_trial(self, trial: optuna.Trial, spec: StudySpec, dataset: Any) -> Begun: ...

    def end_trial(self, trial: optuna.Trial, begun: Begun, fit: Callable[[], float]) -> float: ...

    def solo_start(self, spec: StudySpec, dataset: Any, seed: int) -> tuple[Any, list[Any]]: ...


__all__ = ["Host"]
