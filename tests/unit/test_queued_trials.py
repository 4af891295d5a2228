"""A queued trial (a seeded default or a retry) is run by one worker only, on SQLite too."""

from __future__ import annotations

import threading

import optuna

from search import store

ROUNDS = 20


def test_two_workers_never_pop_the_same_queued_trial(db_url: str) -> None:
    """Both ask at once while two trials are queued: each must get its own. On SQLite
    Optuna's `SELECT ... FOR UPDATE` is no lock, so without BEGIN IMMEDIATE both workers
    read the same trial as WAITING and both ran it (about 4 rounds in 10)."""
    store.upgrade(db_url)
    storages = [store.optuna_storage(db_url) for _ in range(2)]
    name = f"queued-{store.new_id()}"
    optuna.create_study(storage=storages[0], study_name=name)
    studies = [optuna.load_study(study_name=name, storage=s) for s in storages]
    same: list[int] = []
    try:
        for round_ in range(ROUNDS):
            for x in (1.0, 2.0):
                studies[0].enqueue_trial({"x": x + round_})
            numbers: dict[int, int] = {}
            barrier = threading.Barrier(2)

            def worker(i: int, barrier: threading.Barrier, numbers: dict[int, int]) -> None:
                barrier.wait()
                trial = studies[i].ask()
                numbers[i] = trial.number
                trial.suggest_float("x", 0, 100)
                studies[i].tell(trial, 0.0, skip_if_finished=True)

            threads = [
                threading.Thread(target=worker, args=(i, barrier, numbers)) for i in range(2)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if numbers[0] == numbers[1]:
                same.append(numbers[0])
        assert same == []
        trials = studies[0].get_trials(deepcopy=False)
        assert len(trials) == 2 * ROUNDS  # nothing created beside the queued trials
        assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    finally:
        for s in storages:
            s.engine.dispose()
