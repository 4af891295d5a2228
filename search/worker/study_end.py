"""How a study ends: the rules that fail it early, and the verdict once its budget is spent.

Pure functions over Optuna's finished trials, applied by the sweep (search.worker.sweep):

- the same failure `SAME_FAILURES_TO_GIVE_UP` times in a row (not from outside the trial);
- `LOSSES_TO_GIVE_UP` lost workers in a row with a retried trial among them: a trial that
  kills its worker (out of memory) would otherwise cost two workers per slot, forever. A
  retry is required so that one node going away, which loses each of its trials once and
  whose retries then run elsewhere, does not fail a healthy study;
- at the end, a study with no COMPLETE trial is failed, not completed: it has no best trial
  (pruned trials never count as best), so "completed" would say it succeeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from search.outcome import FailureKind, TrialOutcome
from search.worker.config import LOSSES_TO_GIVE_UP, SAME_FAILURES_TO_GIVE_UP

#: The study's error lists at most this many distinct reasons, each cut to REASON_CHARS.
REASONS_LISTED = 5
REASON_CHARS = 300
ERROR_CHARS = 2000


def repeated_failure(failed: Sequence[FrozenTrial]) -> str | None:
    """The last `SAME_FAILURES_TO_GIVE_UP` failed trials (by number) failed the same way,
    none stopped from outside (`FailureKind.interrupted`): why the study should fail."""
    last = [TrialOutcome.from_attrs(t.user_attrs) for t in failed[-SAME_FAILURES_TO_GIVE_UP:]]
    if len(last) < SAME_FAILURES_TO_GIVE_UP:
        return None
    ways = {_way(outcome) for outcome in last}
    if len(ways) == 1 and not any(o.fail_kind and o.fail_kind.interrupted for o in last):
        return f"{SAME_FAILURES_TO_GIVE_UP} trials failed in a row: {last[-1].fail_reason or ''}"
    return None


def _way(outcome: TrialOutcome) -> str:
    """How a trial failed, for `repeated_failure`: its reason; out of memory is one way
    whatever the memory measured (each reason names its own)."""
    if outcome.fail_kind is FailureKind.OUT_OF_MEMORY:
        return FailureKind.OUT_OF_MEMORY.value
    return outcome.fail_reason or ""


def repeated_losses(failed: Sequence[FrozenTrial]) -> str | None:
    """The last `LOSSES_TO_GIVE_UP` failed trials (by number) all lost their worker, and one
    of them was a retry (the same trial killed two workers): why the study should fail."""
    last = failed[-LOSSES_TO_GIVE_UP:]
    if len(last) < LOSSES_TO_GIVE_UP:
        return None
    outcomes = [TrialOutcome.from_attrs(t.user_attrs) for t in last]
    if any(o.fail_kind is not FailureKind.WORKER_LOST for o in outcomes):
        return None
    if not any(t.system_attrs.get("retry_history") for t in last):
        return None
    return (
        f"{LOSSES_TO_GIVE_UP} workers lost in a row on this study's trials, a retried trial"
        " among them: its trials kill their worker (e.g. out of memory); last:"
        f" {outcomes[-1].fail_reason}"
    )


def no_success_reason(trials: Sequence[FrozenTrial]) -> str | None:
    """Why a study whose budget is spent failed: none of its trials completed. Lists the
    distinct reasons of its final failures (a failed attempt that was retried is left out:
    its retry's end stands for it), most frequent first. None when a trial completed."""
    if any(t.state == TrialState.COMPLETE for t in trials):
        return None
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    final = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    counts = [f"{len(final)} failed"] if final else []
    counts += [f"{pruned} pruned"] if pruned else []
    head = f"no trial completed ({', '.join(counts) or 'none ran'})"
    if not final:
        return f"{head}: every trial was pruned" if pruned else head
    reasons = Counter(
        (TrialOutcome.from_attrs(t.user_attrs).fail_reason or "no reason recorded")[:REASON_CHARS]
        for t in final
    )
    listed = [
        f"{reason} ({n} trial{'s' if n > 1 else ''})"
        for reason, n in reasons.most_common(REASONS_LISTED)
    ]
    more = len(reasons) - len(listed)
    tail = f"; and {more} other reason{'s' if more > 1 else ''}" if more else ""
    return f"{head}: {'; '.join(listed)}{tail}"[:ERROR_CHARS]


__all__ = ["no_success_reason", "repeated_failure", "repeated_losses"]
