"""Study plots as PNG over the real API and real databases (SQLite and PostgreSQL).

Finished trials are written with Optuna's public API (`study.add_trial`) with the user attrs a
worker leaves, then drawn through `GET /v1/studies/{id}/plots/{name}.png` and decoded again.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from search import store
from search.lr_range import RangePlan, RangeResult, read
from search.plots import (
    PLOT_NAMES,
    PlotOptions,
    PlotTrial,
    best_so_far,
    draw,
    group_by_strategy,
    render,
)
from search.strategies import RunShape
from service.routes.plots import _run_shape, load_finished

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = ("constant", "exponential", "cosine")
STRATEGY_DIST = CategoricalDistribution(list(STRATEGIES))
LR_DIST = FloatDistribution(1e-4, 1e-1, log=True)


def create(client: TestClient, headers: dict[str, str] | None = None, **spec: Any) -> str:
    spec.setdefault("n_trials", 50)
    spec.setdefault("task", {"epochs": 4})
    response = client.post("/v1/studies", json=spec, headers=headers or {})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@contextmanager
def optuna_study(db_url: str, study_id: str) -> Iterator[optuna.Study]:
    storage = store.optuna_storage(db_url)
    try:
        yield optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage)
    finally:
        storage.engine.dispose()


def finished(i: int, state: TrialState = TrialState.COMPLETE, epochs: int = 4) -> Any:
    """Trial i as a worker leaves it: lr per epoch, history, strategy; value 1/(i+2)."""
    strategy = STRATEGIES[i % len(STRATEGIES)]
    lr0 = 0.01 * (1 + i % 5)
    value = 1.0 / (i + 2)
    attrs = {
        "strategy": strategy,
        "params": {"initial_lr": lr0},
        "lr": [lr0 * 0.7**e for e in range(epochs)],
        "history": {
            "loss": [1.0 - 0.1 * e for e in range(epochs)],
            "val_loss": [1.2 - 0.1 * e + value for e in range(epochs)],
        },
        "epochs_run": epochs,
        "seconds": 0.5,
    }
    return optuna.trial.create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"strategy": strategy, f"{strategy}.initial_lr": lr0},
        distributions={"strategy": STRATEGY_DIST, f"{strategy}.initial_lr": LR_DIST},
        user_attrs=attrs,
        intermediate_values={e: 1.2 - 0.1 * e + value for e in range(epochs)},
    )


def add_trials(db_url: str, study_id: str, n: int) -> None:
    """n complete trials plus one pruned and one failed (never drawn as values)."""
    with optuna_study(db_url, study_id) as study:
        for i in range(n):
            study.add_trial(finished(i))
        study.add_trial(finished(n, TrialState.PRUNED))
        study.add_trial(finished(n + 1, TrialState.FAIL))


def add_range_test(db_url: str, study_id: str) -> RangeResult:
    """The range test as the worker stores it: a study system attribute."""
    plan = RangePlan(40)
    rates = [plan.rate(i) for i in range(40)]
    found = read(rates, [2.0 / (1 + 1e3 * r) + 40 * r * r for r in rates])
    storage = store.optuna_storage(db_url)
    try:
        optuna_id = storage.get_study_id_from_name(f"lrsearch-{study_id}")
        storage.set_study_system_attr(optuna_id, store.LR_RANGE, found.as_attrs())
    finally:
        storage.engine.dispose()
    return found


def png_pixels(response: Any) -> np.ndarray:
    """Assert a PNG answer and decode it."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(mpimg.imread(io.BytesIO(response.content), format="png"))


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return dict(response.json())


@pytest.mark.parametrize("name", PLOT_NAMES)
def test_each_plot_is_a_non_blank_png(app_client: TestClient, db_url: str, name: str) -> None:
    study_id = create(app_client, name="plotted")
    add_trials(db_url, study_id, 9)
    add_range_test(db_url, study_id)
    pixels = png_pixels(app_client.get(f"/v1/studies/{study_id}/plots/{name}.png"))
    assert pixels.shape[:2] == (450, 800)
    assert float(pixels[..., :3].var()) > 0.001  # drawn, not a blank canvas


def test_k_chooses_how_many_trials_the_curves_show(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    add_trials(db_url, study_id, 6)
    one = app_client.get(f"/v1/studies/{study_id}/plots/lr.png", params={"k": 1})
    five = app_client.get(f"/v1/studies/{study_id}/plots/lr.png", params={"k": 5})
    assert not np.array_equal(png_pixels(one), png_pixels(five))
    problem(app_client.get(f"/v1/studies/{study_id}/plots/lr.png", params={"k": 0}), 422)
    problem(app_client.get(f"/v1/studies/{study_id}/plots/lr.png", params={"k": 21}), 422)


def test_plot_problems(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    body = problem(app_client.get(f"/v1/studies/{study_id}/plots/lr.png"), 409)
    assert "no trial has finished" in body["detail"]
    with optuna_study(db_url, study_id) as study:  # a pruned trial is not a finished value
        study.add_trial(finished(0, TrialState.PRUNED))
    problem(app_client.get(f"/v1/studies/{study_id}/plots/history.png"), 409)

    body = problem(app_client.get(f"/v1/studies/{study_id}/plots/bogus.png"), 404)
    assert all(name in body["detail"] for name in PLOT_NAMES)
    problem(app_client.get("/v1/studies/0123456789abcdef/plots/lr.png"), 404)


def test_the_range_plot_draws_the_stored_range_test(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    body = problem(app_client.get(f"/v1/studies/{study_id}/plots/range.png"), 409)
    assert "no learning-rate range test" in body["detail"]
    add_range_test(db_url, study_id)  # before any trial finished: the test runs first
    pixels = png_pixels(app_client.get(f"/v1/studies/{study_id}/plots/range.png"))
    assert float(pixels[..., :3].var()) > 0.001


def test_the_lr_plot_knows_the_trials_run_shape(
    app_client: TestClient, db_url: str, tmp_path: Path
) -> None:
    study_id = create(app_client, task={"epochs": 4, "batch_size": 100})
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            study = store.get_study(session, study_id)
            assert study is not None
            run = _run_shape(session, study, study.tenant_id, tmp_path / "data")
            assert run == RunShape(4, 15)  # digits: 1437 training rows, batches of 100
            study.spec = {**study.spec, "task": {**study.spec["task"], "dataset": "gone"}}
            assert _run_shape(session, study, study.tenant_id, tmp_path / "data") is None
    finally:
        engine.dispose()


def test_another_tenants_study_looks_absent(auth_client: Any) -> None:
    client = auth_client.client
    study_id = create(client, headers=auth_client.headers("a"))
    add_trials(auth_client.database_url, study_id, 3)
    url = f"/v1/studies/{study_id}/plots/history.png"
    png_pixels(client.get(url, headers=auth_client.headers("a")))
    problem(client.get(url, headers=auth_client.headers("b")), 404)
    problem(client.get(url), 401)


def test_a_huge_study_is_read_as_best_plus_evenly_spaced_windows(
    app_client: TestClient, db_url: str
) -> None:
    study_id = create(app_client, n_trials=100)
    add_trials(db_url, study_id, 60)
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            study = store.get_study(session, study_id)
            assert study is not None
            everything = load_finished(session, study)
            bounded = load_finished(session, study, full_cap=20, best_cap=5, windows=3)
    finally:
        engine.dispose()
    assert not everything.sampled and len(everything.sample) == 60 and everything.total == 60
    assert bounded.sampled and bounded.total == 60
    assert [r.number for r in bounded.best] == [59, 58, 57, 56, 55]  # value 1/(i+2): best last
    numbers = [r.number for r in bounded.sample]
    assert len(numbers) == 15 and numbers == sorted(numbers)
    assert numbers[0] == 0 and numbers[-1] >= 40  # windows spread over the whole study
    assert len(bounded.union()) == len({*numbers, 55, 56, 57, 58, 59})


def test_best_so_far_and_groups_follow_the_direction() -> None:
    assert best_so_far([3.0, 1.0, 2.0, 0.5], "minimize") == [3.0, 1.0, 1.0, 0.5]
    assert best_so_far([0.1, 0.5, 0.3], "maximize") == [0.1, 0.5, 0.5]
    trials = [
        PlotTrial(0, 0.9, "a"),
        PlotTrial(1, 0.2, "b"),
        PlotTrial(2, float("nan"), "b"),
        PlotTrial(3, None, "c"),
        PlotTrial(4, 0.4, "b"),
    ]
    assert group_by_strategy(trials, "minimize") == {"b": [0.2, 0.4], "a": [0.9]}
    assert list(group_by_strategy(trials, "maximize")) == ["a", "b"]


def test_curves_fall_back_to_intermediate_values_and_keep_gaps() -> None:
    attrs = {"strategy": "cosine", "lr": [0.1, None, 0.05], "history": {"loss": [1.0]}}
    trial = PlotTrial.from_attrs(3, 0.5, attrs, "val_loss", [(1, 0.7), (0, 0.9)])
    assert trial.curve == [0.9, 0.7]
    assert trial.lr[0] == 0.1 and np.isnan(trial.lr[1])
    assert (
        PlotTrial.from_attrs(4, None, {}, "val_loss", params={"strategy": "step"}).strategy
        == "step"
    )


_NO_TF_SCRIPT = textwrap.dedent(
    """
    import sys
    from search.lr_range import read
    from search.plots import PLOT_NAMES, PlotOptions, PlotTrial, render
    from search.strategies import RunShape
    trials = [PlotTrial(i, 1.0 / (i + 1), "constant", [0.01] * 3, [1.0, 0.8, 0.7],
                        {"initial_lr": 0.01}) for i in range(4)]
    rates = [1e-6 * 1.5 ** i for i in range(40)]
    options = PlotOptions(run=RunShape(3, 10), lr_range=read(rates, [1 / (1 + r) for r in rates]))
    for name in PLOT_NAMES:
        assert render(name, trials, options).startswith(b"\\x89PNG")
    heavy = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "service")]
    assert not heavy, heavy[:5]
    print("ok")
    """
)


def test_plots_never_import_tensorflow_or_the_service() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _NO_TF_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("name", ["bad $\\frac{$ math", "$\\invalidcommand$", "$\\hspace{1e9}x$"])
def test_a_study_name_is_drawn_as_text_not_parsed_as_tex(name: str) -> None:
    """matplotlib reads text between dollar signs as maths: a name with a broken formula
    made every plot a 500; the heading is drawn verbatim."""
    trials = [PlotTrial(0, 0.5, "constant", curve=[0.9, 0.5]), PlotTrial(1, 0.4, "cosine")]
    figure = draw("history", trials, PlotOptions(title=name))
    assert figure._suptitle.get_text() == name
    png = render("history", trials, PlotOptions(title=name))
    assert mpimg.imread(io.BytesIO(png)).std() > 0
