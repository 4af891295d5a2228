"""/best compares the reference with its challenger seed by seed, reading each replicate's
seed from the database (the seeds' shared luck cancels in the pairs)."""

from __future__ import annotations

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from search import selection, store

# reference (trial 0) and challenger (trial 1): on every seed the challenger is better by
# 0.01, while the seeds move both by 0.08 (unpaired, that is within the noise)
RUNS = [  # (number, value, replicate_of, seed)
    (0, 0.95, None, None),
    (1, 0.94, None, None),
    (2, 0.91, 0, 11),
    (3, 0.90, 1, 11),
    (4, 0.99, 0, 22),
    (5, 0.98, 1, 22),
]


def _add_runs(db_url: str, study_id: str, with_seeds: bool) -> None:
    storage = store.optuna_storage(db_url)
    study = optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage)
    for number, value, replicate_of, seed in RUNS:
        lr = 0.001 if (replicate_of if replicate_of is not None else number) == 0 else 0.003
        system: dict[str, object] = {}
        if replicate_of is not None:
            system[selection.REPLICATE_OF] = replicate_of
            if with_seeds:
                system[selection.INIT_SEED] = seed
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params={"strategy": "constant", "constant.initial_lr": lr},
                distributions={
                    "strategy": CategoricalDistribution(["constant"]),
                    "constant.initial_lr": FloatDistribution(1e-4, 1e-1, log=True),
                },
                user_attrs={
                    "strategy": "constant",
                    "params": {"initial_lr": lr},
                    "lr": [lr],
                    "history": {"val_loss": [value]},
                    "epochs_run": 1,
                    "export": {"schedule": None, "callbacks": [], "initial_lr": lr},
                    **({selection.REFERENCE: True} if number == 0 else {}),
                },
                system_attrs=system,
                intermediate_values={0: value},
            )
        )


@pytest.mark.parametrize(("with_seeds", "chosen"), [(True, 1), (False, 0)])
def test_best_pairs_runs_on_the_same_seed(
    app_client: TestClient, db_url: str, with_seeds: bool, chosen: int
) -> None:
    created = app_client.post("/v1/studies", json={"name": "paired", "n_trials": 6})
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    _add_runs(db_url, study_id, with_seeds)
    best = app_client.get(f"/v1/studies/{study_id}/best").json()
    assert best["trial_number"] == chosen
    assert best["selection"]["seeds"] == 3
    assert "seed for seed" in best["selection"]["rule"]  # says the rule that chose
