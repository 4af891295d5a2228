"""Background per-epoch reports: seen by the pruner at once, stored in order by `flush`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from search.training.report_writer import ReportWriter


def _direct(fn: Any) -> Any:
    return fn()


def test_reports_are_visible_at_once_and_stored_after_flush(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/reports.db"
    study = optuna.create_study(storage=url)
    trial = study.ask()
    writer = ReportWriter(trial, _direct)
    for step, value in enumerate([0.9, 0.5, 0.4]):
        writer.report(value, step)
        # what should_prune hands the pruner, before any write has to be done
        assert trial._get_latest_trial().intermediate_values[step] == value
    writer.report(7.0, 1)  # a repeated step is ignored, as Trial.report does
    writer.flush()
    writer.close()
    stored = optuna.load_study(study_name=study.study_name, storage=url).trials[0]
    assert stored.intermediate_values == {0: 0.9, 1: 0.5, 2: 0.4}


def test_a_failed_write_is_raised_by_flush(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/reports.db"
    study = optuna.create_study(storage=url)
    trial = study.ask()
    writer = ReportWriter(trial, _direct)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # storage now refuses reports
    writer.report(0.5, 0)
    writer.report(0.4, 1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        writer.flush()
    writer.close()
    assert (
        optuna.load_study(study_name=study.study_name, storage=url).trials[0].intermediate_values
        == {}
    )
