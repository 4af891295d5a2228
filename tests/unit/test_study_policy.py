"""The search policy: sampler settings, the decay-aware pruner's two rules, the seeded trials."""

from __future__ import annotations

import json
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.selection import REPLICATE_OF
from search.space import default_trials, suggest
from search.spec import parse_spec
from search.store.optuna_private import study_storage, trial_id
from search.strategies import RunShape, get_strategy
from search.study_policy import DecayAwarePruner, SparingReplicates, make_pruner, make_sampler

RUN = RunShape(epochs=10, steps_per_epoch=23)


def study_with(curves: list[list[float]], direction: str = "minimize") -> optuna.Study:
    """An in-memory study whose completed trials reported these per-epoch values."""
    study = optuna.create_study(direction=direction)
    for curve in curves:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=curve[-1],
                intermediate_values=dict(enumerate(curve)),
            )
        )
    return study


def running(values: list[float]) -> optuna.trial.FrozenTrial:
    return create_trial(state=TrialState.RUNNING, intermediate_values=dict(enumerate(values)))


GOOD = [[0.8, 0.3, 0.2, 0.15, 0.12, 0.11, 0.1, 0.1, 0.09, 0.09]]
PEERS = [
    [0.8, 0.3, 0.2, 0.15, 0.12, 0.11, 0.1, 0.1, 0.09, 0.09],
    [0.9, 0.4, 0.3, 0.25, 0.2, 0.18, 0.16, 0.15, 0.14, 0.13],
    [1.0, 0.5, 0.4, 0.35, 0.3, 0.28, 0.26, 0.25, 0.24, 0.23],
    [1.1, 0.6, 0.5, 0.45, 0.4, 0.38, 0.36, 0.35, 0.34, 0.33],
]

#: Behind the others all along, never 4 times the best: only the median rule may prune it.
SLOW = [1.0, 0.55, 0.45, 0.35, 0.29, 0.27, 0.25]


def test_tpe_is_multivariate_grouped_and_lies_for_parallel_workers() -> None:
    sampler = make_sampler(parse_spec({"n_trials": 40}), seed=1)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._group and sampler._constant_liar
    assert sampler._n_startup_trials == 8
    assert make_sampler(parse_spec({"n_trials": 6}), 1)._n_startup_trials == 2  # type: ignore[attr-defined]
    random = make_sampler(parse_spec({"sampler": "random"}), 1)
    assert isinstance(random, optuna.samplers.RandomSampler)


def test_median_names_the_decay_aware_pruner_timed_by_the_run_length() -> None:
    wrapper = make_pruner(parse_spec({"task": {"epochs": 10}}))
    assert isinstance(wrapper, SparingReplicates)
    pruner = wrapper.inner
    assert isinstance(pruner, DecayAwarePruner)
    assert (pruner.early_step, pruner.warmup_steps) == (1, 5)
    long = make_pruner(parse_spec({"task": {"epochs": 100}}))
    assert isinstance(long, SparingReplicates)
    long = long.inner
    assert isinstance(long, DecayAwarePruner)
    assert (long.early_step, long.warmup_steps) == (10, 50)
    assert isinstance(make_pruner(parse_spec({"pruner": "none"})), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="factor"):
        DecayAwarePruner(factor=1.0)


def test_a_hopeless_trial_is_pruned_after_two_epochs() -> None:
    pruner = DecayAwarePruner.for_epochs(10)
    study = study_with(GOOD * 2)
    assert not pruner.prune(study, running([2.3]))  # one epoch is never judged
    assert pruner.prune(study, running([2.3, 2.2]))  # 2.2 > 4 x 0.3
    assert not pruner.prune(study, running([1.2, 1.1]))  # 3.7 times worse: not hopeless


def test_below_median_is_judged_only_from_half_of_the_run() -> None:
    """A decaying schedule that is behind mid-run survives until half of the run has passed."""
    pruner = DecayAwarePruner.for_epochs(10)
    study = study_with(PEERS)
    for step in range(1, 5):
        assert not pruner.prune(study, running(SLOW[: step + 1])), step
    assert pruner.prune(study, running(SLOW[:6]))  # 0.27 > median 0.23 at epoch 6
    assert not pruner.prune(study, running([1.0, 0.4, 0.3, 0.2, 0.15, 0.12]))


def test_an_overfitting_trial_is_judged_by_its_latest_epoch_when_the_objective_is_last() -> None:
    """Good early, then rising above the median: its best epoch is one it will not keep."""
    overfitting = [0.8, 0.3, 0.15, 0.12, 0.14, 0.26]  # best 0.12; at epoch 6 0.26 > 0.23
    study = study_with(PEERS)
    assert DecayAwarePruner.for_epochs(10, judge_last=True).prune(study, running(overfitting))
    assert not DecayAwarePruner.for_epochs(10).prune(study, running(overfitting))
    last = make_pruner(parse_spec({"task": {"epochs": 10}}))
    best = make_pruner(parse_spec({"task": {"epochs": 10}, "objective": {"aggregate": "best"}}))
    assert isinstance(last, SparingReplicates) and isinstance(best, SparingReplicates)
    assert last.inner.judge_last and not best.inner.judge_last  # type: ignore[attr-defined]


def test_the_median_rule_waits_for_enough_completed_trials() -> None:
    pruner = DecayAwarePruner.for_epochs(10)
    study = study_with(PEERS[:3])
    assert not pruner.prune(study, running(SLOW[:6]))
    assert not pruner.prune(study_with(GOOD), running([2.3, 2.2]))  # one peer is too few


def test_a_replicate_is_never_pruned_however_bad() -> None:
    pruner = make_pruner(parse_spec({"task": {"epochs": 10}}))
    study = study_with(GOOD + GOOD)
    hopeless = running([9.0, 9.0, 9.0, 9.0, 9.0, 9.0])
    assert pruner.prune(study, hopeless)
    hopeless.system_attrs[REPLICATE_OF] = 0
    assert not pruner.prune(study, hopeless)


def test_maximised_scores_compare_errors() -> None:
    pruner = DecayAwarePruner.for_epochs(10)
    study = study_with([[0.6, 0.9, 0.95], [0.5, 0.85, 0.9]], direction="maximize")
    assert pruner.prune(study, running([0.1, 0.2]))  # error 0.8 > 4 x 0.1
    assert not pruner.prune(study, running([0.5, 0.8]))  # error 0.2
    odd = study_with([[-5.0, -1.0], [-6.0, -2.0]])  # not an error: the rule stays out
    assert not pruner.prune(odd, running([-1.0, 40.0]))


def _lrs(seeded: list[dict[str, Any]]) -> list[float | None]:
    return [next((v for k, v in p.items() if k.endswith(".initial_lr")), None) for p in seeded]


def test_default_trials_lie_in_the_space_and_run_as_enqueued() -> None:
    spec = parse_spec({"task": {"epochs": RUN.epochs}, "n_trials": 20})
    seeded = default_trials(spec, RUN, budget=15)
    assert [p["strategy"] for p in seeded] == ["constant", "linear", "cosine"]  # a quarter
    assert _lrs(seeded) == [pytest.approx(1e-3), pytest.approx(3e-3), pytest.approx(1e-2)]
    assert seeded[2]["cosine.warmup_steps"] == int(RUN.total_steps * 0.2)
    assert seeded[2]["cosine.warmup_steps"] + seeded[2]["cosine.decay_steps"] == RUN.total_steps
    study = optuna.create_study()
    for params in seeded:
        study.enqueue_trial(params)
    for params in seeded:
        strategy_id, clean = suggest(study.ask(), spec, RUN)
        assert {f"{strategy_id}.{k}": v for k, v in clean.items()} == {
            k: v for k, v in params.items() if k != "strategy"
        }
        get_strategy(strategy_id).check(clean, RUN)


def test_seeded_points_take_at_most_a_quarter_and_large_studies_try_every_family() -> None:
    small = default_trials(parse_spec({"n_trials": 4}), RUN, budget=4)
    assert [p["strategy"] for p in small] == ["constant"]
    spec = parse_spec({"n_trials": 60})
    large = default_trials(spec, RUN, budget=45)
    seeded = [p for p in large if len(p) > 1]
    assert len(seeded) <= 45 // 4
    families = [p["strategy"] for p in large]
    assert set(families) == set(spec.strategies)  # every requested family gets a trial
    assert [p for p in large if len(p) == 1] == [
        {"strategy": s} for s in spec.strategies if s not in {p["strategy"] for p in seeded}
    ]


def test_default_trials_follow_the_optimizer_the_strategies_and_the_ranges() -> None:
    sgd = default_trials(parse_spec({"task": {"optimizer": "sgd"}}), RUN, budget=15)
    assert _lrs(sgd)[:3] == [1e-2, pytest.approx(3e-2), pytest.approx(0.1)]
    few = default_trials(parse_spec({"strategies": ["constant", "step"]}), RUN, budget=15)
    assert few == [{"strategy": "constant", "constant.initial_lr": 1e-3}, {"strategy": "step"}]
    narrow = parse_spec({"ranges": {"initial_lr": {"low": 1e-4, "high": 5e-3, "log": True}}})
    assert _lrs(default_trials(narrow, RUN, budget=15)) == [
        1e-3,
        pytest.approx(3e-3),
        pytest.approx(3e-3),  # cosine at 1e-2 is out: wsd instead
    ]
    searched = parse_spec({"ranges": {"initial_lr": {"low": 5e-3, "high": 0.5, "log": True}}})
    moved = default_trials(parse_spec({}), RUN, searched=searched, budget=15)
    assert _lrs(moved) == [1e-3, pytest.approx(1e-2), pytest.approx(3e-2)]  # the reference
    # stays (the user's space), seeds outside the searched range make way for the next ones


def test_the_pruner_reuses_its_read_of_the_peers_until_refresh() -> None:
    """Per epoch the pruner must not re-read the study; a new peer counts after refresh_s or
    for the next trial."""
    study = study_with(GOOD)  # one peer: too few for the hopeless rule
    cached = DecayAwarePruner(early_step=1, warmup_steps=5, refresh_s=3600)
    fresh = DecayAwarePruner(early_step=1, warmup_steps=5, refresh_s=0)
    assert not cached.prune(study, running([2.3, 2.2]))
    assert not fresh.prune(study, running([2.3, 2.2]))
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE, value=0.1, intermediate_values=dict(enumerate(GOOD[0]))
        )
    )
    assert not cached.prune(study, running([2.3, 2.2]))  # still its first read
    assert fresh.prune(study, running([2.3, 2.2]))  # sees two peers now
    next_trial = create_trial(state=TrialState.RUNNING, intermediate_values={0: 2.3, 1: 2.2})
    next_trial.number = 99
    assert cached.prune(study, next_trial)  # another trial: read again


def _space_study(tmp_path: Any, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """An SQLite study with 10 finished trials over two strategies and one running trial."""
    spec = parse_spec({"strategies": ["exponential", "constant"], "n_trials": 40})
    storage = f"sqlite:///{tmp_path}/study-{type(sampler).__name__}.db"
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=3))
    for i in range(11):
        trial = study.ask()
        suggest(trial, spec, RUN)
        if i < 10:
            study.tell(trial, 1.0 / (1 + i))
    return optuna.load_study(study_name=study.study_name, storage=storage, sampler=sampler)


def test_the_snapshot_sampler_samples_only_the_chosen_strategy_from_one_read(
    tmp_path: Any,
) -> None:
    """Optuna's grouped TPE samples all nine strategies' groups per trial, each after reading
    the study again; ours samples `strategy`, then only that strategy's group, from the
    trial's one read (what it shares with other workers' constant liar says so too)."""
    spec = parse_spec({"strategies": ["exponential", "constant"], "n_trials": 40, "seed": 5})
    stock = optuna.samplers.TPESampler(
        seed=5, n_startup_trials=8, multivariate=True, group=True, constant_liar=True
    )
    reads, shared = [], []
    for sampler in (make_sampler(spec, seed=5), stock):
        study = _space_study(tmp_path, sampler)
        calls: list[Any] = []
        storage: Any = study_storage(study)
        original = storage.get_all_trials

        def counting(
            *args: Any, _orig: Any = original, _calls: list[Any] = calls, **kw: Any
        ) -> Any:
            _calls.append(kw.get("states"))
            return _orig(*args, **kw)

        storage.get_all_trials = counting
        relative = []
        for _ in range(3):
            trial = study.ask()
            strategy_id, _params = suggest(trial, spec, RUN)
            attrs = storage.get_trial_system_attrs(trial_id(trial))
            keys = set(json.loads(attrs["tpe:relative_params:0"]))
            relative.append((strategy_id, keys))
        reads.append(len(calls))
        shared.append(relative)
    ours, theirs = shared
    for strategy_id, keys in ours:
        assert keys == {"strategy"} | {k for k in keys if k.startswith(f"{strategy_id}.")}
        assert len(keys) > 1  # the chosen strategy's parameters are sampled jointly
    assert any(
        any(not k.startswith(f"{s}.") and k != "strategy" for k in keys) for s, keys in theirs
    )  # Optuna's also sampled the unused strategy's group
    # per ask: the waiting-queue check and one read of all trials, vs one more per group
    assert reads[0] <= 2 * 3 < reads[1], reads
