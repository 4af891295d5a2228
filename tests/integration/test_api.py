"""The HTTP API over real databases (SQLite and PostgreSQL), real Optuna storage, no mocks.

Finished trials are written with Optuna's public API (`study.add_trial`) into the same
database, exactly as a worker leaves them, then read back through the API.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from sqlalchemy import event

from search import store
from search.store.optuna_private import trial_id
from service import tokens
from tests.conftest import at_the_same_moment

optuna.logging.set_verbosity(optuna.logging.WARNING)

PROBLEM = "application/problem+json"
STRATEGY_DIST = CategoricalDistribution(["constant", "cosine"])
LR_DIST = FloatDistribution(1e-4, 1e-1, log=True)


# --- helpers ---------------------------------------------------------------------------------


def create(client: TestClient, headers: dict[str, str] | None = None, **spec: Any) -> str:
    spec.setdefault("n_trials", 10)
    spec.setdefault("task", {"epochs": 3})
    response = client.post("/v1/studies", json=spec, headers=headers or {})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def problem(response: Any, status: int) -> dict[str, Any]:
    """Assert an RFC 7807 problem with this status and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= set(body)
    return dict(body)


def fields(response: Any) -> set[str]:
    return {e["field"] for e in problem(response, 422)["errors"]}


@contextmanager
def optuna_study(db_url: str, study_id: str) -> Iterator[optuna.Study]:
    """The Optuna study behind an API study, through Optuna's own public API."""
    storage = store.optuna_storage(db_url)
    try:
        yield optuna.load_study(study_name=f"lrsearch-{study_id}", storage=storage)
    finally:
        storage.engine.dispose()


def trial(
    state: TrialState = TrialState.COMPLETE,
    value: float | None = None,
    lr: float = 0.01,
    system_attrs: dict[str, Any] | None = None,
    **extra_attrs: Any,
) -> optuna.trial.FrozenTrial:
    """A trial with the user attrs the worker stores."""
    epochs = 3
    attrs: dict[str, Any] = {
        "strategy": "constant",
        "params": {"initial_lr": lr},
        "history": {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, value or 0.6]},
        "lr": [lr] * epochs,
        "epochs_run": epochs,
        "seconds": 1.25,
        "export": {
            "schedule": None,
            "callbacks": [],
            "initial_lr": lr,
            "python": f"optimizer = keras.optimizers.Adam(learning_rate={lr})",
            "optimizer": {"class_name": "Adam", "config": {"learning_rate": lr}},
        },
    }
    attrs.update(extra_attrs)
    return optuna.trial.create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"strategy": "constant", "constant.initial_lr": lr},
        distributions={"strategy": STRATEGY_DIST, "constant.initial_lr": LR_DIST},
        user_attrs=attrs,
        system_attrs=system_attrs or {},
        intermediate_values={0: 1.1, 1: 0.8} if state != TrialState.WAITING else {},
    )


def add_mixed_trials(db_url: str, study_id: str) -> None:
    """#0 complete .5, #1 complete .2, #2 pruned, #3 failed (retried by #5), #4 failed,
    #5 waiting retry of #3, #6 complete .9."""
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(value=0.5, lr=0.01))
        study.add_trial(trial(value=0.2, lr=0.003))
        study.add_trial(trial(TrialState.PRUNED))
        study.add_trial(trial(TrialState.FAIL, fail_reason="worker lost; retried"))
        study.add_trial(trial(TrialState.FAIL, fail_reason="ValueError: boom"))
        study.add_trial(
            trial(TrialState.WAITING, system_attrs={"failed_trial": 3, "retry_history": [3]})
        )
        study.add_trial(trial(value=0.9, lr=0.05))


def npz_bytes(n_train: int = 40, n_val: int = 12, features: int = 4, **extra: Any) -> bytes:
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        "x_train": rng.normal(size=(n_train, features)),
        "y_train": np.arange(n_train) % 3,
        "x_val": rng.normal(size=(n_val, features)),
        "y_val": np.arange(n_val) % 3,
    }
    arrays.update(extra)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def csv_bytes(rows: int = 60, text_column: bool = False) -> bytes:
    lines = ["a,b,colour,label" if text_column else "a,b,label"]
    for i in range(rows):
        extra = f",{['red', 'blue'][i % 2]}" if text_column else ""
        lines.append(f"{i * 0.1:.2f},{(i % 7) * 1.5:.2f}{extra},{i % 2}")
    return ("\n".join(lines) + "\n").encode()


def upload(
    client: TestClient, data: bytes, filename: str = "d.npz", headers: Any = None, **form: str
) -> Any:
    return client.post(
        "/v1/datasets",
        files={"file": (filename, data, "application/octet-stream")},
        data=form,
        headers=headers or {},
    )


# --- studies ---------------------------------------------------------------------------------


def test_create_get_list_study(app_client: TestClient) -> None:
    response = app_client.post("/v1/studies", json={"name": "first", "n_trials": 7})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert set(body["links"]) >= {"self", "trials", "best", "cancel"}
    assert response.headers["location"] == f"/v1/studies/{body['id']}"

    detail = app_client.get(f"/v1/studies/{body['id']}").json()
    assert detail["name"] == "first" and detail["status"] == "queued"
    assert detail["spec"]["n_trials"] == 7
    assert detail["spec"]["objective"]["direction"] == "minimize"
    assert detail["progress"] == {
        "complete": 0,
        "pruned": 0,
        "failed": 0,
        "retried": 0,
        "running": 0,
        "waiting": 0,
        "remaining": 7,
    }
    assert detail["best_value"] is None and detail["best_trial"] is None
    assert detail["created_at"].endswith("+00:00") and detail["finished_at"] is None

    listed = app_client.get("/v1/studies").json()
    assert [s["id"] for s in listed["items"]] == [body["id"]]
    assert listed["next_cursor"] is None


def test_list_pages_with_cursor_and_status_filter(app_client: TestClient) -> None:
    ids = [create(app_client, name=f"s{i}") for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = app_client.get("/v1/studies", params=params).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once

    app_client.post(f"/v1/studies/{ids[0]}/cancel")
    cancelled = app_client.get("/v1/studies", params={"status": "cancelled"}).json()["items"]
    assert [s["id"] for s in cancelled] == [ids[0]]
    assert fields(app_client.get("/v1/studies", params={"status": "bogus"})) == {"status"}
    assert fields(app_client.get("/v1/studies", params={"cursor": "!!not-a-cursor"})) == {"cursor"}
    assert fields(app_client.get("/v1/studies", params={"limit": 0})) == {"limit"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"strategies": ["constant", "warp_drive"]}, "strategies.1"),
        ({"ranges": {"initial_lr": {"low": 0.1, "high": 0.001}}}, "ranges.initial_lr"),
        ({"ranges": {"initial_lr": {"low": 0, "high": 0.1}}}, "ranges.initial_lr"),
        (
            {"strategies": ["exponential"], "ranges": {"decay_rate": {"low": 0.5, "high": 2}}},
            "ranges.decay_rate",
        ),
        ({"n_trials": 1_000_000_000}, "n_trials"),
        ({"task": {"epochs": "ten"}}, "task.epochs"),
        ({"task": {"batch_size": [64]}}, "task.batch_size"),
        ({"sampler": 3}, "sampler"),
    ],
)
def test_each_bad_field_is_named(app_client: TestClient, spec: dict[str, Any], field: str) -> None:
    body = problem(app_client.post("/v1/studies", json=spec), 422)
    assert field in {e["field"] for e in body["errors"]}, body
    assert all(e["message"] for e in body["errors"])


def test_every_bad_field_is_listed_at_once(app_client: TestClient) -> None:
    spec = {
        "strategies": ["nope"],
        "n_trials": 1e9,
        "task": {"epochs": "ten", "optimizer": "adagrad"},
        "unknown_key": 1,
    }
    got = fields(app_client.post("/v1/studies", json=spec))
    assert {"strategies.0", "n_trials", "task.epochs", "task.optimizer", "unknown_key"} <= got
    assert app_client.get("/v1/studies").json()["items"] == []


def test_malformed_bodies_are_422_problems(app_client: TestClient) -> None:
    response = app_client.post(
        "/v1/studies", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert fields(response) == {"body"}
    assert fields(app_client.post("/v1/studies", json=[1, 2])) == {"body"}


def test_unknown_dataset_is_422_on_task_dataset(app_client: TestClient) -> None:
    response = app_client.post("/v1/studies", json={"task": {"dataset": "a" * 32}})
    assert fields(response) == {"task.dataset"}


def test_ranges_that_do_not_fit_the_run_are_422(app_client: TestClient) -> None:
    spec = {
        "strategies": ["exponential"],
        "task": {"epochs": 2, "batch_size": 64},
        "ranges": {"decay_steps": {"low": 1, "high": 100_000}},
    }
    assert "ranges.decay_steps" in fields(app_client.post("/v1/studies", json=spec))


def test_unknown_ids_are_404(app_client: TestClient) -> None:
    missing = "0" * 32
    for method, path in [
        ("GET", f"/v1/studies/{missing}"),
        ("POST", f"/v1/studies/{missing}/cancel"),
        ("DELETE", f"/v1/studies/{missing}"),
        ("GET", f"/v1/studies/{missing}/trials"),
        ("GET", f"/v1/studies/{missing}/trials/0"),
        ("GET", f"/v1/studies/{missing}/best"),
        ("GET", f"/v1/datasets/{missing}"),
        ("DELETE", f"/v1/datasets/{missing}"),
    ]:
        problem(app_client.request(method, path), 404)
    study_id = create(app_client)
    problem(app_client.get(f"/v1/studies/{study_id}/trials/99"), 404)


def test_best_is_409_before_any_trial_finished(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    assert problem(app_client.get(f"/v1/studies/{study_id}/best"), 409)["detail"] == (
        "no trial has finished yet"
    )
    with optuna_study(db_url, study_id) as study:
        study.add_trial(trial(TrialState.PRUNED))
        study.add_trial(trial(TrialState.FAIL))
    problem(app_client.get(f"/v1/studies/{study_id}/best"), 409)


def test_progress_counts_retries_apart_from_failures(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client, n_trials=10)
    add_mixed_trials(db_url, study_id)
    detail = app_client.get(f"/v1/studies/{study_id}").json()
    assert detail["progress"] == {
        "complete": 3,
        "pruned": 1,
        "failed": 1,
        "retried": 1,
        "running": 0,
        "waiting": 1,
        "remaining": 4,
    }
    assert detail["best_value"] == pytest.approx(0.2)
    assert detail["best_trial"] == 1


def test_trials_listing_detail_and_best(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    add_mixed_trials(db_url, study_id)
    base = f"/v1/studies/{study_id}"

    items = app_client.get(f"{base}/trials").json()["items"]
    assert [t["number"] for t in items] == list(range(7))
    assert [t["state"] for t in items] == [
        "complete",
        "complete",
        "pruned",
        "fail",
        "fail",
        "waiting",
        "complete",
    ]
    completes = app_client.get(f"{base}/trials", params={"state": "complete"}).json()["items"]
    assert [t["number"] for t in completes] == [0, 1, 6]
    fails = app_client.get(f"{base}/trials", params={"state": "fail"}).json()["items"]
    assert [t["fail_reason"] for t in fails] == ["worker lost; retried", "ValueError: boom"]

    one = app_client.get(f"{base}/trials/1").json()
    assert one["value"] == pytest.approx(0.2)
    assert one["strategy"] == "constant"
    assert one["params"] == {"initial_lr": 0.003}
    assert one["lr"] == [0.003] * 3
    assert one["history"]["val_loss"][-1] == pytest.approx(0.2)
    assert one["epochs_run"] == 3 and one["seconds"] == pytest.approx(1.25)
    assert one["intermediate_values"] == [{"step": 0, "value": 1.1}, {"step": 1, "value": 0.8}]
    assert one["datetime_start"] and one["datetime_complete"]

    best = app_client.get(f"{base}/best").json()
    assert best["trial_number"] == 1 and best["value"] == pytest.approx(0.2)
    assert best["strategy"] == "constant" and best["params"] == {"initial_lr": 0.003}
    export = best["export"]
    assert export["schedule"] is None and export["callbacks"] == []
    assert export["optimizer"]["class_name"] == "Adam"
    assert "learning_rate=0.003" in export["python"]


def test_trials_by_value_page_with_keyset_cursors(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    add_mixed_trials(db_url, study_id)
    base = f"/v1/studies/{study_id}/trials"

    full = [t["number"] for t in app_client.get(base, params={"order": "value"}).json()["items"]]
    assert full[:3] == [1, 0, 6]  # best first, then trials without a value by number
    assert sorted(full[3:]) == full[3:] == [2, 3, 4, 5]
    for order, expected in (("value", full), ("number", list(range(7)))):
        assert _walk(app_client, base, order, limit=2) == expected

    first = app_client.get(base, params={"order": "number", "limit": 2}).json()["next_cursor"]
    assert fields(app_client.get(base, params={"order": "value", "cursor": first})) == {"cursor"}


def _walk(client: TestClient, base: str, order: str, limit: int) -> list[int]:
    numbers: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"order": order, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = client.get(base, params=params).json()
        numbers += [t["number"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return numbers


def test_maximized_metric_ranks_highest_first(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client, objective={"metric": "val_accuracy"})
    with optuna_study(db_url, study_id) as study:
        for value in (0.8, 0.95, 0.6):
            study.add_trial(trial(value=value))
    assert app_client.get(f"/v1/studies/{study_id}/best").json()["trial_number"] == 1
    ordered = app_client.get(f"/v1/studies/{study_id}/trials", params={"order": "value"}).json()
    assert [t["number"] for t in ordered["items"]] == [1, 0, 2]


def test_non_finite_metrics_are_served_as_null(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    with optuna_study(db_url, study_id) as study:
        study.add_trial(
            trial(
                TrialState.FAIL,
                history={"loss": [1.0, math.nan, math.inf]},
                fail_reason="TrialDiverged: loss is NaN",
            )
        )
    one = app_client.get(f"/v1/studies/{study_id}/trials/0").json()
    assert one["history"]["loss"] == [1.0, None, None]


def test_detail_and_pages_cost_the_same_queries_for_many_trials(
    app_client: TestClient, db_url: str
) -> None:
    """No endpoint loads every trial: statement counts do not grow with the trial count."""
    small, large = create(app_client), create(app_client, n_trials=100)
    with optuna_study(db_url, small) as study:
        for i in range(2):
            study.add_trial(trial(value=0.5 + i))
    with optuna_study(db_url, large) as study:
        for i in range(60):
            study.add_trial(trial(value=0.5 + i / 100))
    for suffix in ("", "/best", "/trials?limit=5", "/trials?order=value&limit=5"):
        assert count_statements(app_client, f"/v1/studies/{small}{suffix}") == count_statements(
            app_client, f"/v1/studies/{large}{suffix}"
        ), suffix


def count_statements(client: TestClient, path: str) -> int:
    """SQL statements the API runs to answer one GET of path."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    count = 0

    def on_execute(*_args: Any) -> None:
        nonlocal count
        count += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        assert client.get(path).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    return count


def test_cancel_then_cancel_again_is_409(app_client: TestClient) -> None:
    study_id = create(app_client)
    response = app_client.post(f"/v1/studies/{study_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    assert "cancelled" in problem(app_client.post(f"/v1/studies/{study_id}/cancel"), 409)["detail"]


def test_delete_removes_the_row_and_the_optuna_study(app_client: TestClient, db_url: str) -> None:
    study_id = create(app_client)
    add_mixed_trials(db_url, study_id)
    assert app_client.delete(f"/v1/studies/{study_id}").status_code == 204
    problem(app_client.get(f"/v1/studies/{study_id}"), 404)
    storage = store.optuna_storage(db_url)
    try:
        assert f"lrsearch-{study_id}" not in optuna.get_all_study_names(storage)
    finally:
        storage.engine.dispose()


# --- datasets --------------------------------------------------------------------------------


def test_npz_upload_used_by_a_study_then_deleted(app_client: TestClient, tmp_path: Path) -> None:
    response = upload(app_client, npz_bytes(), filename="../../escape.npz", name="blobs")
    assert response.status_code == 201, response.text
    ds = response.json()
    assert ds["name"] == "blobs" and ds["format"] == "npz"
    assert (ds["n_train"], ds["n_val"], ds["input_shape"]) == (40, 12, [4])
    assert ds["task"] == "classification" and ds["n_classes"] == 3
    stored = tmp_path / "data" / "datasets" / f"{ds['id']}.npz"
    assert stored.is_file() and ds["size_bytes"] == stored.stat().st_size
    assert not (tmp_path / "escape.npz").exists()

    assert app_client.get(f"/v1/datasets/{ds['id']}").json() == ds
    assert [d["id"] for d in app_client.get("/v1/datasets").json()["items"]] == [ds["id"]]

    study_id = create(app_client, task={"dataset": ds["id"], "epochs": 2})
    problem(app_client.delete(f"/v1/datasets/{ds['id']}"), 409)
    app_client.post(f"/v1/studies/{study_id}/cancel")
    assert app_client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert not stored.exists()
    problem(app_client.get(f"/v1/datasets/{ds['id']}"), 404)


def test_a_dataset_deleted_while_a_study_is_created_on_it_is_never_both(
    app_client: TestClient,
) -> None:
    """A study creation and a deletion of its dataset at the same moment: one of them is
    refused (both under the tenant's lock). Before, both could succeed, and the study
    queued on a deleted upload failed every trial."""
    for _ in range(10):
        ds = upload(app_client, npz_bytes()).json()["id"]
        spec = {"n_trials": 2, "task": {"dataset": ds, "epochs": 1}}
        created, deleted = at_the_same_moment(
            lambda spec=spec: app_client.post("/v1/studies", json=spec),
            lambda ds=ds: app_client.delete(f"/v1/datasets/{ds}"),
        )
        if created.status_code == 201:
            problem(deleted, 409)
            assert app_client.get(f"/v1/datasets/{ds}").status_code == 200
            app_client.post(f"/v1/studies/{created.json()['id']}/cancel")
            assert app_client.delete(f"/v1/datasets/{ds}").status_code == 204
        else:
            assert deleted.status_code == 204, deleted.text
            assert fields(created) == {"task.dataset"}


def test_csv_upload_needs_a_target(app_client: TestClient) -> None:
    response = upload(app_client, csv_bytes(), filename="table.csv", target="label")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "csv" and body["name"] == "table"
    assert body["n_train"] + body["n_val"] == 60 and body["input_shape"] == [2]
    assert fields(upload(app_client, csv_bytes(), filename="table.csv")) == {"target"}


@pytest.mark.parametrize(
    ("data", "filename", "form"),
    [
        (npz_bytes(x_train=np.array([{"a": 1}] * 40, dtype=object)), "pickled.npz", {}),
        (npz_bytes()[:200], "truncated.npz", {}),
        (csv_bytes(text_column=True), "text.csv", {"target": "label"}),
        (csv_bytes(), "table.csv", {"target": "no_such_column"}),
        (b"", "empty.npz", {}),
    ],
    ids=["pickled-npz", "truncated-npz", "csv-text-column", "csv-unknown-target", "empty"],
)
def test_bad_files_are_422_on_field_file(
    app_client: TestClient, data: bytes, filename: str, form: dict[str, str]
) -> None:
    body = problem(upload(app_client, data, filename=filename, **form), 422)
    assert [e["field"] for e in body["errors"]] == ["file"]
    assert body["errors"][0]["message"]
    assert app_client.get("/v1/datasets").json()["items"] == []


def test_oversized_upload_is_413(client_factory: Any) -> None:
    with client_factory(max_upload_bytes=2_000) as client:
        problem(upload(client, npz_bytes(n_train=400)), 413)
        big_body = b"x" * 200_000  # larger than the limit plus form overhead
        problem(upload(client, big_body, filename="big.csv", target="label"), 413)
        boundary = "lrsearch-test-boundary"
        multipart = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.npz"'
                "\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + big_body
            + f"\r\n--{boundary}--\r\n".encode()
        )
        chunked = client.post(  # no Content-Length: counted while reading
            "/v1/datasets",
            content=(multipart[i : i + 8192] for i in range(0, len(multipart), 8192)),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert "content-length" not in chunked.request.headers
        problem(chunked, 413)
        assert client.get("/v1/datasets").json()["items"] == []
        problem(client.post("/v1/studies", json={"name": "x" * 5_000_000}), 413)


def test_dataset_quota_is_429(client_factory: Any) -> None:
    with client_factory(max_datasets=1) as client:
        assert upload(client, npz_bytes()).status_code == 201
        problem(upload(client, npz_bytes()), 429)


# --- auth and tenants ------------------------------------------------------------------------


def test_auth_rejects_missing_wrong_and_revoked_tokens(auth_client: Any) -> None:
    client = auth_client.client
    response = client.get("/v1/studies")
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    problem(client.get("/v1/studies", headers={"Authorization": "Bearer lrs_wrong"}), 401)
    problem(client.get("/v1/studies", headers={"Authorization": "Basic Zm9vOmJhcg=="}), 401)
    assert client.get("/v1/studies", headers=auth_client.headers("a")).status_code == 200

    engine = store.make_engine(auth_client.database_url)
    try:
        with store.session_factory(engine)() as session:
            assert tokens.revoke_token(session, auth_client.token_a)
            assert not tokens.revoke_token(session, auth_client.token_a)
    finally:
        engine.dispose()
    problem(client.get("/v1/studies", headers=auth_client.headers("a")), 401)
    assert client.get("/v1/studies", headers=auth_client.headers("b")).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_other_tenants_ids_are_404_everywhere(auth_client: Any, db_url: str) -> None:
    client, alice, bob = auth_client.client, auth_client.headers("a"), auth_client.headers("b")
    study_id = create(client, headers=alice)
    add_mixed_trials(db_url, study_id)
    dataset_id = upload(client, npz_bytes(), headers=alice).json()["id"]

    for method, path in [
        ("GET", f"/v1/studies/{study_id}"),
        ("GET", f"/v1/studies/{study_id}/trials"),
        ("GET", f"/v1/studies/{study_id}/trials/0"),
        ("GET", f"/v1/studies/{study_id}/best"),
        ("POST", f"/v1/studies/{study_id}/cancel"),
        ("DELETE", f"/v1/studies/{study_id}"),
        ("GET", f"/v1/datasets/{dataset_id}"),
        ("DELETE", f"/v1/datasets/{dataset_id}"),
    ]:
        problem(client.request(method, path, headers=bob), 404)
    assert client.get("/v1/studies", headers=bob).json()["items"] == []
    assert client.get("/v1/datasets", headers=bob).json()["items"] == []
    spec = {"task": {"dataset": dataset_id}}
    assert fields(client.post("/v1/studies", json=spec, headers=bob)) == {"task.dataset"}
    assert client.get(f"/v1/studies/{study_id}", headers=alice).json()["status"] == "queued"


# --- quotas ----------------------------------------------------------------------------------


def test_running_study_quota_is_429(client_factory: Any) -> None:
    with client_factory(max_running_studies=2) as client:
        first = create(client)
        create(client)
        body = problem(client.post("/v1/studies", json={}), 429)
        assert body["type"].endswith("quota-exceeded")
        client.post(f"/v1/studies/{first}/cancel")
        create(client)


def test_creation_rate_limit_is_429_per_token(client_factory: Any, db_url: str) -> None:
    with client_factory(auth=True, rate_limit_per_minute=2) as client:
        engine = store.make_engine(db_url)
        with store.session_factory(engine)() as session:
            one, two = (tokens.create_token(session, "carol") for _ in range(2))
        engine.dispose()
        first = {"Authorization": f"Bearer {one}"}
        create(client, headers=first)
        create(client, headers=first)
        response = client.post("/v1/studies", json={}, headers=first)
        assert problem(response, 429)["type"].endswith("rate-limited")
        assert int(response.headers["retry-after"]) >= 1
        create(client, headers={"Authorization": f"Bearer {two}"})


# --- health and metrics ----------------------------------------------------------------------


def test_health_ready_and_metrics(app_client: TestClient, db_url: str) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    assert app_client.get("/readyz").status_code == 200
    study_id = create(app_client, n_trials=10)
    create(app_client, n_trials=4)
    add_mixed_trials(db_url, study_id)
    response = app_client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    lines = set(response.text.splitlines())
    assert 'lrsearch_trials{state="complete"} 3' in lines
    assert 'lrsearch_trials{state="fail"} 2' in lines
    assert 'lrsearch_studies{status="queued"} 2' in lines
    assert "lrsearch_queue_depth 14" in lines
    assert "# TYPE lrsearch_queue_depth gauge" in lines
    assert "lrsearch_runnable_trial_slots 14" in lines  # no trial is running
    assert "# TYPE lrsearch_runnable_trial_slots gauge" in lines


def test_readyz_is_503_when_the_database_is_unreachable(app_client: TestClient) -> None:
    app = app_client.app
    working = app.state.engine  # type: ignore[attr-defined]
    app.state.engine = store.make_engine("postgresql://postgres@127.0.0.1:1/nothing")  # type: ignore[attr-defined]
    try:
        problem(app_client.get("/readyz"), 503)
        assert app_client.get("/healthz").status_code == 200
    finally:
        app.state.engine.dispose()  # type: ignore[attr-defined]
        app.state.engine = working  # type: ignore[attr-defined]


def test_openapi_docs_are_served(app_client: TestClient) -> None:
    assert app_client.get("/docs").status_code == 200
    paths = app_client.get("/openapi.json").json()["paths"]
    assert {"/v1/studies", "/v1/studies/{study_id}/best", "/v1/datasets", "/metrics"} <= set(paths)


# --- store operations the workers rely on ------------------------------------------------------


def _study_row(db_url: str, n_trials: int) -> str:
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            tenant = store.get_or_create_tenant(session, "workers")
            study = store.Study(
                tenant_id=tenant.id,
                name="w",
                spec={},
                n_trials=n_trials,
                optuna_study_name=f"lrsearch-{store.new_id()}",
            )
            session.add(study)
            session.commit()
            return study.id
    finally:
        engine.dispose()


def _failed_trial(db_url: str, study_id: str) -> int:
    """A FAIL trial in the row's Optuna study (created if missing): what a slot is given
    back for."""
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            row = store.get_study(session, study_id)
            assert row is not None
            name = row.optuna_study_name
    finally:
        engine.dispose()
    storage = store.optuna_storage(db_url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
        return trial_id(study.get_trials(deepcopy=False)[-1])
    finally:
        storage.engine.dispose()


def test_claim_slot_never_over_claims_under_concurrency(db_url: str) -> None:
    store.upgrade(db_url)
    study_id = _study_row(db_url, n_trials=5)
    failed = _failed_trial(db_url, study_id)
    engine = store.make_engine(db_url)
    sessions = store.session_factory(engine)
    slots: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            with sessions() as session:
                slot = store.claim_slot(session, study_id)
            if slot is not None:
                with lock:
                    slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(slots) == [1, 2, 3, 4, 5]
        with sessions() as session:
            study = store.get_study(session, study_id)
            assert study is not None
            assert (study.status, study.trials_claimed) == ("running", 5)
            assert study.started_at is not None and study.started_at.tzinfo is not None
            assert store.runnable_studies(session, 10) == []
            assert store.release_slot(session, study_id, failed)
            assert [s.id for s in store.runnable_studies(session, 10)] == [study_id]
            assert store.claim_slot(session, study_id) == 5
    finally:
        engine.dispose()


def test_a_failed_trials_slot_is_given_back_once(db_url: str) -> None:
    """A release repeated (a retry after a lost commit acknowledgement, or two sweepers)
    must not hand out a slot twice: the study would run one trial over its budget."""
    store.upgrade(db_url)
    study_id = _study_row(db_url, n_trials=3)
    first, second = _failed_trial(db_url, study_id), _failed_trial(db_url, study_id)
    engine = store.make_engine(db_url)
    sessions = store.session_factory(engine)
    try:
        with sessions() as session:
            for _ in range(3):
                store.claim_slot(session, study_id)
        answers: list[bool] = []

        def release() -> None:
            with sessions() as session:
                answers.append(store.release_slot(session, study_id, first))

        threads = [threading.Thread(target=release) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) == [False, False, False, True]
        with sessions() as session:
            assert store.release_slot(session, study_id, second)
            assert not store.release_slot(session, study_id, second)
            study = store.get_study(session, study_id)
            assert study is not None
            assert study.trials_claimed == 1  # 3 claimed, 2 trials given back, once each
    finally:
        engine.dispose()


def test_finish_release_and_budget_are_guarded(db_url: str) -> None:
    store.upgrade(db_url)
    study_id = _study_row(db_url, n_trials=3)
    failed = _failed_trial(db_url, study_id)
    engine = store.make_engine(db_url)
    try:
        with store.session_factory(engine)() as session:
            store.release_slot(session, study_id, failed)  # never below zero
            assert store.claim_slot(session, study_id) == 1
            store.close_budget(session, study_id)  # timeout: no more slots
            assert store.claim_slot(session, study_id) is None
            assert store.finish_study(session, study_id, "cancelled")
            assert not store.finish_study(session, study_id, "completed", "late")
            study = store.get_study(session, study_id)
            assert study is not None
            session.refresh(study)
            assert (study.status, study.n_trials, study.error) == ("cancelled", 1, None)
            assert study.finished_at is not None
            assert store.claim_slot(session, study_id) is None
            with pytest.raises(ValueError):
                store.finish_study(session, study_id, "running")  # type: ignore[arg-type]
    finally:
        engine.dispose()
