"""A best that holds up: re-run the top candidates on fresh seeds, choose by their mean.

Every exploring trial of a study starts from the same seeded weights and batch order, so
schedules are compared on equal terms; but the best single run is then partly a lucky draw
for that one initialisation, and a user who retrains the schedule gets less than it promised.
So the last trial slots of a study (REPLICATE_SHARE of them) re-run its best candidates, each
from a new initialisation and batch order, and `/best` is the candidate with the best mean
over its seeds, reported with their spread and number.

Pure Python: the worker plans the replicates, the store and the API choose the best with it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Share of a study's trial slots spent re-running its best candidates on fresh seeds.
REPLICATE_SHARE = 0.25
#: Studies smaller than this spend every slot exploring (a replicate of too little is noise).
MIN_TRIALS_FOR_REPLICATES = 8
#: System attributes of a replicate trial: the number of the trial it re-runs, and its seed.
REPLICATE_OF = "lrsearch:replicate_of"
INIT_SEED = "lrsearch:init_seed"
#: User attribute of the reference trial: the optimizer's default rate, held constant.
REFERENCE = "lrsearch:reference"
#: Without known seeds, a candidate replaces the reference only when its mean is better by
#: more than this many standard errors of the difference (the one-standard-error rule: keep
#: the simpler, known choice when the evidence against it is within the noise of re-runs).
STANDARD_ERRORS = 1.0
#: Paired differences (same seeds) must favour a challenger at 90% one-sided confidence
#: (Student's t on the differences) for it to replace the reference: the t quantiles at 0.90
#: by degrees of freedom (above 30: the normal's 1.282, the last entry); a table, not scipy,
#: so the API's selection needs nothing beyond the stdlib.
T_QUANTILES_90: dict[int, float] = {
    1: 3.078, 2: 1.886, 3: 1.638, 4: 1.533, 5: 1.476, 6: 1.440, 7: 1.415, 8: 1.397,
    9: 1.383, 10: 1.372, 12: 1.356, 15: 1.341, 20: 1.325, 30: 1.310, 1000: 1.282,
}  # fmt: skip
#: A run this many times worse (as an error) than the best is hopeless: the pruner stops
#: such trials early (search.study_policy), and a reference this far behind the best
#: challenger gets no re-runs (its slots re-run the next challenger instead). Good trials'
#: noisy early epochs reach 2-3.5x the best (digits CNN), a rate far off 5-10x.
HOPELESS_FACTOR = 4.0
#: Added to the study's seed for a replicate's weights and batch order (k = 1, 2, ...).
SEED_STRIDE = 7919


def replicate_slots(n_trials: int, share: float = REPLICATE_SHARE) -> int:
    """How many of a study's slots re-run candidates (0 for small studies or share 0)."""
    if n_trials < MIN_TRIALS_FOR_REPLICATES or share <= 0:
        return 0
    return max(1, round(n_trials * share))


def candidates_to_rerun(n_replicates: int) -> int:
    """The candidates the replicates go to (the reference among them): two extra seeds
    each, where the budget allows (three seeds are the fewest with a spread worth
    reporting, and the reference needs one challenger)."""
    return max(1, n_replicates // 2)


def replicate_seed(study_seed: int | None, k: int) -> int:
    """The seed of a candidate's k-th replicate (k >= 1): never the study's own seed."""
    return (study_seed or 0) + SEED_STRIDE * k


@dataclass(frozen=True)
class Run:
    """One finished trial as selection sees it; `seed` is a replicate's own seed (None: the
    study's seed, which every original trial starts from)."""

    number: int
    value: float
    replicate_of: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Candidate:
    """A configuration and the runs behind it (the original first), with each run's seed."""

    number: int
    values: tuple[float, ...]
    seeds_used: tuple[int | None, ...] = ()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def seeds(self) -> int:
        return len(self.values)


def candidates(runs: Iterable[Run]) -> list[Candidate]:
    """Group replicates with the trial they re-run (finite values only)."""
    groups: dict[int, list[Run]] = {}
    order: list[int] = []
    for run in sorted(runs, key=lambda r: (r.replicate_of is not None, r.number)):
        if not math.isfinite(run.value):
            continue
        key = run.number if run.replicate_of is None else run.replicate_of
        if key not in groups:
            if run.replicate_of is not None:
                continue  # its original did not complete: not comparable
            groups[key], order = [], [*order, key]
        groups[key].append(run)
    return [
        Candidate(n, tuple(r.value for r in groups[n]), tuple(r.seed for r in groups[n]))
        for n in order
    ]


def choose(runs: Iterable[Run], maximize: bool, reference: int | None = None) -> Candidate | None:
    """The best candidate: among those re-run on several seeds, the best mean, unless the
    re-run reference is within the noise of it (`_noise`: paired by seed where the seeds are
    known); when none was re-run, the best run."""
    pool = candidates(runs)
    replicated = [c for c in pool if c.seeds > 1]
    pick = replicated or pool
    if not pick:
        return None
    sign = -1.0 if maximize else 1.0
    best = min(pick, key=lambda c: (sign * c.mean, c.number))
    ref = next((c for c in replicated if c.number == reference), None)
    if ref is not None and ref is not best and sign * (ref.mean - best.mean) <= _noise(ref, best):
        return ref
    return best


def _noise(a: Candidate, b: Candidate) -> float:
    """STANDARD_ERRORS standard errors of the difference of two candidates' means.

    Runs on the same seed start from the same weights and see the same batches (common
    random numbers), so where both candidates ran on two or more common seeds the error is
    that of their paired differences: the luck of an initialisation, shared by both, cancels
    (unpaired, it dwarfed real differences between schedules)."""
    paired = _paired_differences(a, b)
    if len(paired) >= 2:
        return _t_quantile(len(paired) - 1) * statistics.stdev(paired) / math.sqrt(len(paired))
    var = sum((c.sd or 0.0) ** 2 / c.seeds for c in (a, b))
    return STANDARD_ERRORS * math.sqrt(var)


def _t_quantile(df: int) -> float:
    """Student's t at 0.90 (one-sided) for `df` degrees of freedom: with three
    seeds the spread of the differences is itself a guess, and one standard error of it let
    a challenger through that lost on retraining (dev task cancer-mlp)."""
    table = T_QUANTILES_90
    if df in table:
        return table[df]
    known = [d for d in table if d < df]
    return table[max(known)] if known else table[1]


def _paired_differences(a: Candidate, b: Candidate) -> list[float]:
    """a - b on each seed both ran (empty when the seeds are not known)."""
    if len(a.seeds_used) != a.seeds or len(b.seeds_used) != b.seeds:
        return []
    on_b = dict(zip(b.seeds_used, b.values, strict=True))
    if len(on_b) != b.seeds:
        return []  # a seed ran twice (a retried replicate): not a clean pairing
    return [v - on_b[s] for s, v in zip(a.seeds_used, a.values, strict=True) if s in on_b]


def top_numbers(
    runs: Sequence[Run], k: int, maximize: bool, reference: int | None = None
) -> list[int]:
    """The candidates the replicates re-run: the reference (when it completed, k leaves room
    for a challenger and it is not hopeless against the best run: re-runs would only confirm
    it lost), then the best other original trials by value, k in all."""
    originals = [r for r in runs if r.replicate_of is None and math.isfinite(r.value)]
    ranked = sorted(originals, key=lambda r: (-r.value if maximize else r.value, r.number))
    best = ranked[0].value if ranked else math.nan
    first = [
        r.number
        for r in originals
        if r.number == reference and k > 1 and not hopeless(r.value, best, maximize)
    ]
    return (first + [r.number for r in ranked if r.number not in first])[:k]


def hopeless(value: float, best: float, maximize: bool, factor: float = HOPELESS_FACTOR) -> bool:
    """`value` is more than `factor` times `best` as an error: the value itself when
    minimising a non-negative loss, 1 - value when maximising a score in [0, 1]. Never for
    values that are not error-like (a negative loss, a score outside [0, 1])."""
    values = (value, best)
    if maximize and not all(0.0 <= v <= 1.0 for v in values):
        return False
    if not maximize and min(values) < 0:
        return False
    error, best_error = (1.0 - value, 1.0 - best) if maximize else (value, best)
    return best_error > 0 and error > factor * best_error
