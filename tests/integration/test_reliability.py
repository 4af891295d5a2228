"""Nothing is lost and nothing is counted twice when processes die, restart or lose the database.

Real processes (`python -m service.cli api|worker`) against real PostgreSQL: the shared
server for most scenarios, and a cluster this test initialises and stops itself for the
outage. The scenarios live in tests/faults.py (benchmarks/reliability.py runs them too);
each returns an Outcome whose `problems` list every missed expectation, shown with the logs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests import faults
from tests.conftest import LOCAL_BASE_URL

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.serial]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[faults.Stage]:
    """A fresh database on the shared PostgreSQL, a data folder, and cleanup of processes."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(faults.shared_pg_database())
        except Exception as exc:
            message = f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        yield stack.enter_context(faults.stage_on(url, tmp_path))


def check(outcome: faults.Outcome, the_stage: faults.Stage) -> None:
    message = (
        f"{outcome.name}: problems={outcome.problems} lost={outcome.lost} "
        f"double_counted={outcome.double_counted} server_errors={outcome.server_errors}"
        f"\ndetails={outcome.details}\n{the_stage.group.logs()}"
    )
    assert outcome.ok, message


def test_kill9_mid_trial_is_failed_retried_once_and_resumed(stage: faults.Stage) -> None:
    outcome = faults.kill9_mid_trial(stage)
    check(outcome, stage)
    assert outcome.details["resumed_from_epoch"] >= 2
    assert outcome.details["retry_epochs_run"] == faults.KILL_EPOCHS


def test_sigterm_finishes_the_epoch_releases_the_trial_and_exits_0(
    stage: faults.Stage,
) -> None:
    outcome = faults.sigterm_mid_trial(stage)
    check(outcome, stage)
    assert outcome.details["exit_code"] == 0


def test_api_restarts_lose_nothing_and_clients_poll_through(stage: faults.Stage) -> None:
    outcome = faults.api_restart(stage)
    check(outcome, stage)
    assert outcome.details["api_starts"] == 3


def test_failing_trials_fail_alone_and_the_worker_lives_on(stage: faults.Stage) -> None:
    check(faults.failing_trials(stage), stage)


def test_database_outage_gives_503s_and_everything_recovers(tmp_path: Path) -> None:
    reason = faults.own_cluster_unavailable()
    if reason:
        pytest.skip(f"cannot run a private PostgreSQL cluster here: {reason}")
    cluster = faults.PgCluster().start()
    try:
        url = cluster.create_database("lrsearch")
        with faults.stage_on(url, tmp_path) as the_stage:
            outcome = faults.database_outage(the_stage, cluster)
            check(outcome, the_stage)
            assert outcome.details["during_outage"] == {"study": 503, "readyz": 503, "healthz": 200}
    finally:
        cluster.destroy()


# --- in one process: what is hard to provoke from outside -----------------------------------


def test_an_oom_like_error_fails_one_trial_and_the_study_goes_on(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorFlow's ResourceExhaustedError (what a too-big model raises) in one trial."""
    import tensorflow as tf

    from search.training.trainer import Trainer
    from search.worker import Worker, WorkerConfig
    from service.app import create_app
    from service.settings import Settings

    real_run = Trainer.run

    def run(self: Trainer, trial: optuna.Trial, *args: Any, **kwargs: Any) -> float:
        if trial.number == 1:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return real_run(self, trial, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run", run)
    from fastapi.testclient import TestClient

    settings = Settings(database_url=pg_url, data_dir=tmp_path / "data")
    with TestClient(create_app(settings), base_url=LOCAL_BASE_URL) as client:
        created = client.post("/v1/studies", json=faults.tiny_spec(3, 2))
        study_id = created.json()["id"]
        worker = Worker(
            WorkerConfig(
                pg_url, tmp_path / "data", heartbeat_interval=1, grace_period=10, poll_s=0.2
            )
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            body = _wait(
                lambda: (
                    (b := client.get(f"/v1/studies/{study_id}").json())["status"]
                    in ("completed", "failed")
                    and b
                ),
                180,
            )
            assert thread.is_alive()
        finally:
            worker.stop.set()
            thread.join(120)
        trials = client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert body["status"] == "completed", body
    assert body["progress"] == {**body["progress"], "complete": 2, "failed": 1, "retried": 0}
    oom = next(t for t in trials if t["number"] == 1)
    assert oom["state"] == "fail" and "ResourceExhausted" in oom["fail_reason"]
    assert not thread.is_alive()


def test_a_one_trial_study_with_two_default_starts_completes(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Well-known starting points are queued only up to the budget: a queued trial that no
    slot will ever run would keep the study from completing."""
    from fastapi.testclient import TestClient

    from search.worker import Worker, WorkerConfig
    from service.app import create_app
    from service.settings import Settings

    with TestClient(
        create_app(Settings(database_url=sqlite_url, data_dir=tmp_path / "data")),
        base_url=LOCAL_BASE_URL,
    ) as client:
        spec = faults.tiny_spec(1, 1, strategies=["constant", "cosine"])
        study_id = client.post("/v1/studies", json=spec).json()["id"]
        worker = Worker(WorkerConfig(sqlite_url, tmp_path / "data", poll_s=0.2, max_trials=1))
        worker.run()
        worker.stop.set()
        body = client.get(f"/v1/studies/{study_id}").json()
        trials = client.get(f"/v1/studies/{study_id}/trials").json()["items"]
    assert body["status"] == "completed", body
    assert [t["state"] for t in trials] == ["complete"]


def _wait(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_a_resumed_plateau_trial_continues_its_counters_and_rate(tmp_path: Path) -> None:
    """Stopped after 3 epochs and retried, ReduceLROnPlateau goes on where it was: the rates
    recorded over the whole run are exactly Keras's rule replayed on the whole history (had
    its wait counter restarted, the cut would come 3 epochs late), and the restored weights
    start the retry well below a fresh model's first loss."""
    from search.checkpoints import CheckpointHandle, CheckpointStore
    from search.data import load_digits
    from search.errors import TrialStopped
    from search.spec import parse_spec
    from search.strategies import get_strategy
    from search.training.trainer import Trainer

    digits = load_digits()
    spec = parse_spec(faults.tiny_spec(1, 9, strategies=["plateau"]))
    params = {
        "strategy": "plateau",
        "plateau.initial_lr": 1e-7,
        "plateau.factor": 0.5,
        "plateau.patience": 3,
        "plateau.min_lr": 1e-9,
        "plateau.cooldown": 0,
    }
    learning = {"strategy": "plateau", **{**params, "plateau.initial_lr": 3e-2}}
    for reuse in (True, False):
        trainer = Trainer(reuse=reuse)
        for chosen in (params, learning):
            handle = CheckpointHandle(CheckpointStore(tmp_path / f"{reuse}-{id(chosen)}"), "s", 0)
            study = optuna.create_study(pruner=optuna.pruners.NopPruner())
            study.enqueue_trial(chosen)
            first = study.ask()
            with pytest.raises(TrialStopped):
                trainer.run(first, spec, digits, _stop_after(3), handle)
            study.tell(first, state=optuna.trial.TrialState.FAIL)
            saved = handle.load()
            assert saved is not None and saved.epoch == 3
            study.enqueue_trial(chosen)
            retry = study.ask()
            study.tell(retry, trainer.run(retry, spec, digits, None, handle))
            attrs = study.trials[-1].user_attrs
            assert attrs["resumed_from_epoch"] == 3 and attrs["epochs_run"] == 9
            assert sorted(study.trials[-1].intermediate_values) == list(range(9))
            if chosen is params:
                plateau: Any = get_strategy("plateau")
                replay = plateau.lr_curve_from_history(
                    attrs["params"], attrs["history"]["val_loss"], maximize=False
                )
                assert attrs["lr"] == pytest.approx(replay, rel=1e-5), reuse
                assert min(attrs["lr"]) < attrs["lr"][0]
            else:
                fresh_first_loss = study.trials[0].user_attrs["history"]["loss"][0]
                assert attrs["history"]["loss"][3] < 0.8 * fresh_first_loss, reuse


def _stop_after(epochs: int) -> Callable[[], bool]:
    """A stop check (asked once per finished epoch) that says stop after `epochs` epochs."""
    asked = [0]

    def should_stop() -> bool:
        asked[0] += 1
        return asked[0] >= epochs

    return should_stop


def test_kill9_mid_population_retries_every_member_once_and_loses_none(
    stage: faults.Stage,
) -> None:
    outcome = faults.kill9_mid_population(stage)
    check(outcome, stage)
    assert outcome.details["members_running_at_kill"] == faults.POPULATION


def test_sigterm_mid_population_releases_every_member_and_exits_0(stage: faults.Stage) -> None:
    outcome = faults.sigterm_mid_population(stage)
    check(outcome, stage)
    assert outcome.details["exit_code"] == 0
