"""How a study searches: the Optuna sampler and pruner a spec asks for, with sensible settings.

Why these defaults (measured in benchmarks/search_quality.py):

- TPE is multivariate with `group=True`: each strategy's parameters are modelled jointly and
  only from the trials of that strategy (the space is conditional on `strategy`), and
  `constant_liar` keeps parallel workers from sampling the same point. Optuna's constant liar
  reads every trial from the database once per parameter group; `SnapshotTPESampler` reads
  them once per trial instead (on PostgreSQL that was ~0.1 s of every trial).
- The default pruner (`median`) is `DecayAwarePruner`: it kills hopeless trials (several times
  worse than the best at the same epoch) after a couple of epochs, but judges a trial against
  the median only from half of the run, so a decaying schedule is not killed before its decay
  has happened. The completed trials it compares with are read once per trial and then at
  most every few seconds, not at every epoch.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Container, Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.selection import HOPELESS_FACTOR, REPLICATE_OF, hopeless
from search.spec import StudySpec
from search.store import optuna_private as private
from search.store.optuna_private import RELATIVE_PARAMS_KEY, SYSTEM_ATTR_MAX_LENGTH

#: Trials completed before the hopeless rule / the median rule may prune.
HOPELESS_MIN_COMPLETED = 2
MEDIAN_MIN_COMPLETED = 4
#: Share of the run after which the median rule judges (decays have mostly happened by then).
#: A quarter saved 10% of the epochs at the same choices on dev, but chose worse on held-out
#: tasks (benchmarks/RESULTS.md, ninth session), so half it stays.
MEDIAN_FROM = 0.5
#: The categorical parameter that picks the strategy (see search.space.suggest).
STRATEGY_PARAM = "strategy"
#: Seconds the pruner reuses its read of the completed trials.
PEERS_REFRESH_S = 5.0
#: Random trials (enqueued defaults included) before TPE models the space: at most this
#: many, and a third of the study (half was worse on the suite's dev tasks: RESULTS.md).
TPE_STARTUP_TRIALS = 8
#: Candidates TPE scores per sample: more makes it exploit the good region harder. 24 chose
#: worse on the suite's dev tasks; 256 better there but worse on its held-out tasks, twice
#: below the default rate (benchmarks/RESULTS.md, fifteenth session), so 96 stays.
TPE_EI_CANDIDATES = 96


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler named in the spec; TPE handles the conditional (per-strategy) space."""
    name = spec.sampler
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    with warnings.catch_warnings():  # `group` is "experimental" in Optuna; we rely on it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SnapshotTPESampler(
            seed=seed,
            n_startup_trials=min(TPE_STARTUP_TRIALS, max(2, spec.n_trials // 3)),
            n_ei_candidates=TPE_EI_CANDIDATES,
            multivariate=True,
            group=True,
            constant_liar=True,
        )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The pruner named in the spec; `median` is the decay-aware rule described above."""
    epochs = spec.task.epochs
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    inner: optuna.pruners.BasePruner
    if spec.pruner == "hyperband":
        inner = optuna.pruners.HyperbandPruner(
            min_resource=max(1, epochs // 3), max_resource=epochs
        )
    elif spec.pruner == "successive_halving":
        inner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 3))
    else:
        inner = DecayAwarePruner.for_epochs(epochs, judge_last=spec.objective.best_mode is None)
    return SparingReplicates(inner)


class SparingReplicates(optuna.pruners.BasePruner):
    """Never prunes a replicate (search.selection): its whole run is the measurement."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if REPLICATE_OF in trial.system_attrs:
            return False
        return self.inner.prune(study, trial)


class SnapshotTPESampler(optuna.samplers.TPESampler):
    """TPE that samples only what a trial uses, from one read of the study per trial.

    - `group=True` samples every parameter group at a trial's first suggestion: here the nine
      strategies' groups, of which the trial uses one. Groups are sampled independently of
      each other, so sampling the `strategy` group first and then only the chosen strategy's
      group gives the same distribution for every parameter used, at a fraction of the cost
      (and a running trial no longer "claims" points, for the constant liar, in groups it
      does not use).
    - `study.ask` drops Optuna's per-trial cache of all trials (running ones included); plain
      TPE with `constant_liar` bypasses it and reads the whole study again for each group.
      Here every read goes through that cache: running trials are seen as they were when this
      trial started sampling.
    """

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        strategy = search_space.get(STRATEGY_PARAM)
        groups = private.tpe_group_spaces(self)
        if strategy is None or groups is None:
            return super().sample_relative(study, trial, search_space)
        params = private.tpe_sample_relative(self, study, trial, {STRATEGY_PARAM: strategy})
        if STRATEGY_PARAM not in params:  # still random start-up: nothing relative to share
            return super().sample_relative(study, trial, search_space)
        prefix = f"{params[STRATEGY_PARAM]}."
        for group in groups:
            used = {
                name: dist
                for name, dist in sorted(group.items())
                if name.startswith(prefix) and name in search_space and not dist.single()
            }
            params.update(private.tpe_sample_relative(self, study, trial, used))
        if private.tpe_constant_liar(self):
            _share_relative_params(study, trial, params)
        return params

    def _sample(  # overrides TPE's private `_sample`: the one place all its reads go through
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return private.tpe_sample(self, _TrialCachedStudy(study), trial, search_space)


def _share_relative_params(study: optuna.Study, trial: FrozenTrial, params: dict[str, Any]) -> None:
    """What Optuna's TPE stores for other workers' constant liar, in its own format."""
    text = json.dumps(params)
    storage = private.study_storage(study)
    for i in range(0, len(text), SYSTEM_ATTR_MAX_LENGTH):
        storage.set_trial_system_attr(
            private.trial_id(trial),
            f"{RELATIVE_PARAMS_KEY}:{i // SYSTEM_ATTR_MAX_LENGTH}",
            text[i : i + SYSTEM_ATTR_MAX_LENGTH],
        )


class _TrialCachedStudy:
    """A study view whose `_get_trials` (the private read TPE calls) always answers from the
    per-trial cache."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        return private.cached_trials(self._study, deepcopy, states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


class DecayAwarePruner(optuna.pruners.BasePruner):
    """Two rules, each comparing a trial with the *completed* trials at the same epoch.

    Every trial of a study runs the same number of epochs, so the same epoch is the same
    fraction of every schedule.

    - hopeless, from `early_step`: the trial's best value so far, as an error (the value when
      minimising a non-negative loss, 1 - value when maximising a score in [0, 1]), is more
      than `factor` times the best completed trial's error at this epoch. A rate far too small
      or too large shows this after an epoch or two, whatever the schedule.
    - median, from `warmup_steps`: the trial's value is worse than the median of the
      completed trials at this epoch, only once half of the run has passed, when decaying
      schedules have done most of their decay. With `judge_last` (the objective is the last
      epoch's value, the default) the trial's value is its latest epoch's: a trial that has
      begun to overfit is judged by where it is heading, not by the best epoch it will not
      keep. Without it (objective.aggregate = best), its best value so far (Optuna's
      MedianPruner).
    """

    def __init__(
        self,
        *,
        early_step: int = 1,
        warmup_steps: int = 5,
        factor: float = HOPELESS_FACTOR,
        min_completed_hopeless: int = HOPELESS_MIN_COMPLETED,
        min_completed_median: int = MEDIAN_MIN_COMPLETED,
        refresh_s: float = PEERS_REFRESH_S,
        judge_last: bool = False,
    ) -> None:
        if factor <= 1:
            raise ValueError("factor must be above 1")
        self.early_step = early_step
        self.warmup_steps = warmup_steps
        self.factor = factor
        self.min_completed_hopeless = min_completed_hopeless
        self.min_completed_median = min_completed_median
        self.refresh_s = refresh_s
        self.judge_last = judge_last
        self._peers: tuple[tuple[int, int, int], float, list[FrozenTrial]] | None = None

    @classmethod
    def for_epochs(cls, epochs: int, judge_last: bool = False) -> DecayAwarePruner:
        """Hopeless from the second epoch (a tenth of long runs); median from half the run."""
        return cls(
            early_step=max(1, epochs // 10),
            warmup_steps=max(1, int(epochs * MEDIAN_FROM)),
            factor=HOPELESS_FACTOR,
            judge_last=judge_last,
        )

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < min(self.early_step, self.warmup_steps):
            return False
        own = _finite(trial.intermediate_values.values())
        if not own:
            return True  # only NaN so far: it diverged
        done = self._completed(study, trial.number)
        peers = _finite(t.intermediate_values.get(step, math.nan) for t in done)
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        mine = max(own) if maximize else min(own)
        early = step >= self.early_step and len(peers) >= self.min_completed_hopeless
        if early and self._hopeless(mine, peers, maximize):
            return True
        if step >= self.warmup_steps and len(peers) >= self.min_completed_median:
            median = _median(peers)
            latest = trial.intermediate_values.get(step, math.nan)
            now = latest if self.judge_last and math.isfinite(latest) else mine
            return now < median if maximize else now > median
        return False

    def _completed(self, study: optuna.Study, number: int) -> list[FrozenTrial]:
        """The study's completed trials, read at a trial's first judged epoch and then again
        only after `refresh_s`: short epochs would otherwise spend more time reading the
        study than training."""
        storage, optuna_id = private.study_storage(study), private.study_id(study)
        now, key = time.monotonic(), (id(storage), optuna_id, number)
        cached = self._peers
        if cached is None or cached[0] != key or now - cached[1] >= self.refresh_s:
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._peers = cached = (key, now, done)
        return cached[2]

    def _hopeless(self, mine: float, peers: list[float], maximize: bool) -> bool:
        """`factor` times the best peer's error; skipped when values are not error-like."""
        values = [mine, *peers]
        if maximize and not all(0.0 <= v <= 1.0 for v in values):
            return False
        if not maximize and min(values) < 0:
            return False
        return hopeless(mine, max(peers) if maximize else min(peers), maximize, self.factor)


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
