"""A best that holds up: replicate slots, the candidates they re-run, and the choice by mean."""

from __future__ import annotations

import math

import pytest

from search.selection import (
    Run,
    candidates,
    candidates_to_rerun,
    choose,
    hopeless,
    replicate_seed,
    replicate_slots,
    top_numbers,
)


def test_small_studies_only_explore_and_larger_ones_keep_a_quarter() -> None:
    assert [replicate_slots(n) for n in (1, 4, 7)] == [0, 0, 0]
    assert replicate_slots(8) == 2 and replicate_slots(16) == 4 and replicate_slots(40) == 10
    assert replicate_slots(16, share=0.0) == 0 and replicate_slots(16, share=0.5) == 8
    assert candidates_to_rerun(4) == 2 and candidates_to_rerun(1) == 1


def test_replicate_seeds_differ_from_the_study_seed_and_each_other() -> None:
    seeds = {replicate_seed(3, k) for k in (1, 2, 3)}
    assert len(seeds) == 3 and 3 not in seeds
    assert replicate_seed(None, 1) == replicate_seed(0, 1)


def test_a_lucky_single_run_loses_to_a_candidate_that_holds_up_on_other_seeds() -> None:
    runs = [
        Run(0, 0.30),
        Run(1, 0.10),  # lucky: its re-runs are worse
        Run(2, 0.12),
        Run(5, 0.25, replicate_of=1),
        Run(6, 0.13, replicate_of=2),
        Run(7, 0.24, replicate_of=1),
        Run(8, 0.14, replicate_of=2),
    ]
    best = choose(runs, maximize=False)
    assert best is not None and best.number == 2 and best.seeds == 3
    assert best.mean == pytest.approx((0.12 + 0.13 + 0.14) / 3)
    assert best.sd == pytest.approx(0.01)


def test_without_replicates_the_best_single_run_is_chosen_in_either_direction() -> None:
    runs = [Run(0, 0.3), Run(1, 0.1), Run(2, 0.2)]
    lowest, highest = choose(runs, maximize=False), choose(runs, maximize=True)
    assert lowest is not None and lowest.number == 1 and lowest.sd is None
    assert highest is not None and highest.number == 0
    assert choose([], maximize=False) is None


def test_non_finite_values_and_orphan_replicates_are_ignored() -> None:
    runs = [Run(0, math.nan), Run(1, 0.2), Run(2, 0.1, replicate_of=0)]
    assert [(c.number, c.values) for c in candidates(runs)] == [(1, (0.2,))]


def test_top_candidates_are_originals_ranked_by_value() -> None:
    runs = [Run(0, 0.5), Run(1, 0.2), Run(2, 0.3), Run(3, 0.1, replicate_of=1)]
    assert top_numbers(runs, 2, maximize=False) == [1, 2]
    assert top_numbers(runs, 2, maximize=True) == [0, 2]


def test_the_reference_is_rerun_first_when_a_challenger_fits_beside_it() -> None:
    runs = [Run(0, 0.5), Run(1, 0.2), Run(2, 0.3)]
    assert top_numbers(runs, 2, maximize=False, reference=0) == [0, 1]
    assert top_numbers(runs, 1, maximize=False, reference=0) == [1]  # no room: the best
    assert top_numbers(runs, 2, maximize=False, reference=7) == [1, 2]  # it did not finish


def test_a_hopeless_reference_gives_its_reruns_to_the_next_challenger() -> None:
    runs = [Run(0, 0.5), Run(1, 0.1), Run(2, 0.3)]  # the reference 5x the best's error
    assert top_numbers(runs, 2, maximize=False, reference=0) == [1, 2]
    close = [Run(0, 0.35), Run(1, 0.1), Run(2, 0.3)]  # 3.5x: still re-run beside the best
    assert top_numbers(close, 2, maximize=False, reference=0) == [0, 1]
    scores = [Run(0, 0.5), Run(1, 0.9), Run(2, 0.85)]  # accuracy: errors 0.5 vs 0.1
    assert top_numbers(scores, 2, maximize=True, reference=0) == [1, 2]


def test_hopeless_only_judges_error_like_values() -> None:
    assert hopeless(0.5, 0.1, maximize=False)
    assert not hopeless(0.4, 0.1, maximize=False)  # exactly 4x is not beyond it
    assert not hopeless(-5.0, -20.0, maximize=False)  # a negative loss: no error scale
    assert not hopeless(2.0, 40.0, maximize=True)  # a score outside [0, 1]
    assert not hopeless(0.5, 0.0, maximize=False)  # a perfect best: no ratio to judge


def test_the_reference_stays_unless_beaten_by_more_than_the_noise() -> None:
    close = [
        Run(0, 0.110),
        Run(1, 0.100),
        Run(4, 0.120, 0),
        Run(5, 0.115, 1),
        Run(6, 0.100, 0),
        Run(7, 0.098, 1),
    ]  # means 0.110 vs 0.1043, sds ~0.01
    kept = choose(close, maximize=False, reference=0)
    assert kept is not None and kept.number == 0
    assert choose(close, maximize=False) is not None
    assert choose(close, maximize=False).number == 1  # type: ignore[union-attr]
    clear = [
        Run(0, 0.140),
        Run(1, 0.080),
        Run(4, 0.150, 0),
        Run(5, 0.082, 1),
        Run(6, 0.145, 0),
        Run(7, 0.079, 1),
    ]
    beaten = choose(clear, maximize=False, reference=0)
    assert beaten is not None and beaten.number == 1
    up = [
        Run(0, 0.90),
        Run(1, 0.95),
        Run(4, 0.91, 0),
        Run(5, 0.96, 1),
        Run(6, 0.89, 0),
        Run(7, 0.94, 1),
    ]
    score = choose(up, maximize=True, reference=0)
    assert score is not None and score.number == 1  # accuracy: higher is better, clearly


def test_runs_on_common_seeds_are_compared_pair_by_pair() -> None:
    """Seed luck shared by both candidates cancels: a challenger better on every seed by a
    steady margin beats the reference even when the seeds' spread is far wider."""
    steady = [
        Run(0, 0.95),
        Run(1, 0.94),
        Run(4, 0.91, 0, seed=11),
        Run(5, 0.90, 1, seed=11),
        Run(6, 0.99, 0, seed=22),
        Run(7, 0.98, 1, seed=22),
    ]  # seeds move both by 0.08; the challenger is better by 0.01 on each
    chosen = choose(steady, maximize=False, reference=0)
    assert chosen is not None and chosen.number == 1
    unpaired = [Run(r.number, r.value, r.replicate_of) for r in steady]
    kept = choose(unpaired, maximize=False, reference=0)
    assert kept is not None and kept.number == 0  # without the seeds: within the noise
    erratic = [
        Run(0, 0.95),
        Run(1, 0.90),
        Run(4, 0.91, 0, seed=11),
        Run(5, 0.93, 1, seed=11),
        Run(6, 0.99, 0, seed=22),
        Run(7, 0.97, 1, seed=22),
    ]  # better on two seeds, worse on one: the differences' own spread keeps the reference
    kept = choose(erratic, maximize=False, reference=0)
    assert kept is not None and kept.number == 0


def test_a_seed_run_twice_is_not_paired() -> None:
    twice = [
        Run(0, 0.95),
        Run(1, 0.94),
        Run(4, 0.91, 0, seed=11),
        Run(5, 0.90, 1, seed=11),
        Run(6, 0.99, 0, seed=11),
        Run(7, 0.98, 1, seed=11),
    ]
    kept = choose(twice, maximize=False, reference=0)
    assert kept is not None and kept.number == 0  # falls back to the unpaired error


def test_paired_evidence_must_clear_students_t_not_one_standard_error() -> None:
    """Three seeds: the challenger better by 0.0068 and 0.0053, worse by 0.0016 (t = 1.35):
    past one standard error, short of t(0.90, 2 df) = 1.886, so the reference stays."""
    runs = [
        Run(0, 0.1035),
        Run(1, 0.0967),
        Run(12, 0.0965, 0, seed=11),
        Run(13, 0.0912, 1, seed=11),
        Run(14, 0.1034, 0, seed=22),
        Run(15, 0.1050, 1, seed=22),
    ]
    kept = choose(runs, maximize=False, reference=0)
    assert kept is not None and kept.number == 0
    clear = [  # better on every seed by 0.0057, 0.0135, 0.0199 (t = 3.2)
        Run(0, 0.9114),
        Run(1, 0.9057),
        Run(12, 0.9574, 0, seed=11),
        Run(13, 0.9439, 1, seed=11),
        Run(14, 0.9561, 0, seed=22),
        Run(15, 0.9362, 1, seed=22),
    ]
    switched = choose(clear, maximize=False, reference=0)
    assert switched is not None and switched.number == 1
