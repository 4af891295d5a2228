"""The rules that end a study (search.worker.study_end), over Optuna trials built in memory."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState, create_trial

from search.outcome import FailureKind, failure_attrs
from search.worker.study_end import (
    REASONS_LISTED,
    no_success_reason,
    repeated_failure,
    repeated_losses,
)

LOST = "worker lost: no heartbeat within the grace period; retried"


def numbered(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    for number, trial in enumerate(trials):
        trial.number = number
    return trials


def failed(kind: FailureKind, reason: str, **system_attrs: Any) -> FrozenTrial:
    return create_trial(
        state=TrialState.FAIL, user_attrs=failure_attrs(kind, reason), system_attrs=system_attrs
    )


def lost(retry_of: int | None = None) -> FrozenTrial:
    history = {} if retry_of is None else {"retry_history": [retry_of], "failed_trial": retry_of}
    return failed(FailureKind.WORKER_LOST, LOST, **history)


def test_a_study_where_every_trial_failed_is_failed_with_the_distinct_reasons() -> None:
    trials = numbered(
        [
            failed(FailureKind.BAD_INPUT, "FileNotFoundError: gone"),
            failed(FailureKind.DIVERGED, "diverged at epoch 1: loss is nan"),
            failed(FailureKind.BAD_INPUT, "FileNotFoundError: gone"),
        ]
    )
    assert no_success_reason(trials) == (
        "no trial completed (3 failed): FileNotFoundError: gone (2 trials);"
        " diverged at epoch 1: loss is nan (1 trial)"
    )


def test_one_complete_trial_is_success_and_pruned_ones_are_not() -> None:
    done = create_trial(state=TrialState.COMPLETE, value=0.3)
    pruned = create_trial(state=TrialState.PRUNED, intermediate_values={0: 0.9})
    assert no_success_reason(numbered([failed(FailureKind.ERROR, "x"), done])) is None
    assert no_success_reason(numbered([pruned, pruned])) == (
        "no trial completed (2 pruned): every trial was pruned"
    )
    mixed = numbered([pruned, failed(FailureKind.ERROR, "ValueError: x")])
    assert no_success_reason(mixed) == (
        "no trial completed (1 failed, 1 pruned): ValueError: x (1 trial)"
    )


def test_a_retried_attempt_is_left_out_for_its_retry() -> None:
    """Trial 0 lost its worker and was retried as #1, which failed on its own: the study
    failed once, for #1's reason."""
    trials = numbered([lost(), failed(FailureKind.ERROR, "MemoryError: ", retry_history=[0])])
    assert no_success_reason(trials) == "no trial completed (1 failed): MemoryError:  (1 trial)"


def test_the_reasons_listed_are_bounded() -> None:
    trials = numbered([failed(FailureKind.ERROR, f"E{i}: " + "x" * 5000) for i in range(40)])
    reason = no_success_reason(trials)
    assert reason is not None and len(reason) <= 2000
    assert reason.count("(1 trial)") == REASONS_LISTED
    assert reason.endswith(f"and {40 - REASONS_LISTED} other reasons")


def test_three_lost_workers_with_a_retry_among_them_fail_the_study() -> None:
    trials = numbered([lost(), lost(retry_of=0), lost()])
    reason = repeated_losses(trials)
    assert reason is not None and reason.startswith("3 workers lost in a row")
    assert repeated_failure(trials) is None  # losses never count as "the same failure"


def test_lost_workers_without_a_retry_among_them_are_a_node_going_away() -> None:
    assert repeated_losses(numbered([lost(), lost(), lost()])) is None
    assert repeated_losses(numbered([lost(), lost(retry_of=0)])) is None  # only two
    other = failed(FailureKind.ERROR, "ValueError: x")
    assert repeated_losses(numbered([lost(), lost(retry_of=0), other])) is None


def test_the_same_failure_three_times_still_fails_the_study() -> None:
    same = [failed(FailureKind.BAD_INPUT, "ModelError: shape") for _ in range(3)]
    assert repeated_failure(numbered(same)) == "3 trials failed in a row: ModelError: shape"
    shut = [failed(FailureKind.SHUT_DOWN, "worker shut down; retried") for _ in range(3)]
    assert repeated_failure(numbered(shut)) is None


def test_out_of_memory_trials_in_a_row_fail_the_study_whatever_memory_each_measured() -> None:
    def oom(mib: int) -> FrozenTrial:
        reason = f"out of memory: worker RSS {mib} MiB over the limit 1000 MiB (X)"
        return failed(FailureKind.OUT_OF_MEMORY, reason)

    assert repeated_failure(numbered([oom(1201), oom(1433), oom(1090)])) == (
        "3 trials failed in a row: out of memory: worker RSS 1090 MiB over the limit 1000 MiB (X)"
    )
    other = failed(FailureKind.ERROR, "out of memory: worker RSS 1090 MiB over the limit 1000 MiB")
    assert repeated_failure(numbered([oom(1201), oom(1433), other])) is None
