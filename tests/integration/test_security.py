"""Nobody reads what is not theirs: path-shaped ids, tokens at rest, tenants, limits.

What tests/integration/test_api.py already covers (401 for missing/wrong/revoked tokens, 404
for another tenant's study/trials/best/cancel/delete/dataset, per-token rate limit, running
study and dataset quotas) is not repeated; this adds what it misses. SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from search import store
from search.checkpoints import CheckpointStore
from service import tokens
from tests import faults

PROBLEM = "application/problem+json"


def problem(response: Any, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    return dict(response.json())


def npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=rng.normal(size=(30, 3)),
        y_train=np.arange(30) % 2,
        x_val=rng.normal(size=(10, 3)),
        y_val=np.arange(10) % 2,
    )
    return buf.getvalue()


def upload(client: TestClient, headers: dict[str, str] | None = None) -> str:
    response = client.post(
        "/v1/datasets", files={"file": ("d.npz", npz_bytes())}, headers=headers or {}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def create(client: TestClient, headers: dict[str, str] | None = None) -> str:
    response = client.post("/v1/studies", json={"n_trials": 3}, headers=headers or {})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# --- ids that look like paths ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "template"), faults.ID_ROUTES)
def test_path_shaped_ids_are_4xx_on_every_route_and_touch_no_file(
    app_client: TestClient, tmp_path: Path, method: str, template: str
) -> None:
    data_dir = tmp_path / "data"
    sentinels = [
        tmp_path / "sentinel",
        tmp_path / "sentinel.npz",
        data_dir / "sentinel.npz",
        data_dir / "datasets" / "sentinel.npz",
    ]
    for path in sentinels:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"keep me")
    checkpoint = data_dir / "checkpoints" / "sentinel" / "0.npz"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"keep me")
    for bad in faults.TRAVERSAL_IDS:
        response = app_client.request(method, template.replace("{id}", bad))
        problem(response, 404, 405, 422)
    assert all(p.read_bytes() == b"keep me" for p in [*sentinels, checkpoint])


def test_an_id_that_is_not_an_id_is_a_422_naming_the_parameter(app_client: TestClient) -> None:
    body = problem(app_client.get("/v1/studies/bad.id"), 422)
    assert [e["field"] for e in body["errors"]] == ["study_id"]
    body = problem(app_client.delete("/v1/datasets/x%00y"), 422)
    assert [e["field"] for e in body["errors"]] == ["dataset_id"]
    body = problem(app_client.get(f"/v1/studies/{'0' * 32}/trials/99999999999999999999"), 422)
    assert [e["field"] for e in body["errors"]] == ["number"]


def test_checkpoint_paths_refuse_anything_but_plain_ids(tmp_path: Path) -> None:
    checkpoints = CheckpointStore(tmp_path)
    for bad in ("..", "../x", "a/b", "", "a\x00", "x" * 65):
        with pytest.raises(ValueError):
            checkpoints.path(bad, 0)
        with pytest.raises(ValueError):
            checkpoints.remove_study(bad)
    for number in (-1, True, 1.5):
        with pytest.raises(ValueError):
            checkpoints.path("abc", number)  # type: ignore[arg-type]
    assert checkpoints.path("abc", 3) == tmp_path / "abc" / "3.npz"


def test_deleting_a_study_removes_only_its_checkpoints(
    app_client: TestClient, tmp_path: Path
) -> None:
    doomed, kept = create(app_client), create(app_client)
    root = tmp_path / "data" / "checkpoints"
    for study_id in (doomed, kept):
        (root / study_id).mkdir(parents=True)
        (root / study_id / "0.npz").write_bytes(b"x")
    assert app_client.delete(f"/v1/studies/{doomed}").status_code == 204
    assert not (root / doomed).exists()
    assert (root / kept / "0.npz").exists()


# --- tokens at rest and how they are compared ------------------------------------------------


def test_tokens_are_stored_only_as_sha256(auth_client: Any, db_url: str) -> None:
    """No column of any table holds a token or a recognisable part of one."""
    client, headers = auth_client.client, auth_client.headers("a")
    create(client, headers)
    upload(client, headers)
    secrets = [auth_client.token_a, auth_client.token_b]
    engine = store.make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.scalars(sa.text("SELECT token_hash FROM lrsearch_api_tokens")))
            assert stored == {hashlib.sha256(t.encode()).hexdigest() for t in secrets}
            dump = _dump_all_tables(conn)
    finally:
        engine.dispose()
    for token in secrets:
        assert token not in dump
        assert token.removeprefix(tokens.TOKEN_PREFIX)[:16] not in dump


def _dump_all_tables(conn: sa.Connection) -> str:
    meta = sa.MetaData()
    meta.reflect(conn)
    return "\n".join(
        repr(row) for table in meta.sorted_tables for row in conn.execute(sa.select(table))
    )


def test_token_check_uses_a_constant_time_comparison(
    auth_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("service.deps.hmac.compare_digest", spy)
    response = auth_client.client.get("/v1/studies", headers=auth_client.headers("a"))
    assert response.status_code == 200
    digest = hashlib.sha256(auth_client.token_a.encode()).hexdigest()
    assert calls == [(digest, digest)]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Bearer lrs_" + "A" * 43,
        "bearer  lrs_x",
        "Token abc",
        "Bearer " + "x" * 5000,
    ],
)
def test_malformed_or_unknown_tokens_are_401(auth_client: Any, authorization: str) -> None:
    response = auth_client.client.get("/v1/studies", headers={"Authorization": authorization})
    problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


# --- tenants ---------------------------------------------------------------------------------


def test_another_tenants_plots_trials_by_value_and_cursors_are_invisible(
    auth_client: Any,
) -> None:
    client, alice, bob = auth_client.client, auth_client.headers("a"), auth_client.headers("b")
    ids = [create(client, alice) for _ in range(3)]
    for path in (
        f"/v1/studies/{ids[0]}/plots/lr.png",
        f"/v1/studies/{ids[0]}/plots/history.png",
        f"/v1/studies/{ids[0]}/trials?order=value",
        f"/v1/studies/{ids[0]}/trials?state=complete",
    ):
        problem(client.get(path, headers=bob), 404)
    first = client.get("/v1/studies", params={"limit": 1}, headers=alice).json()
    assert first["next_cursor"]
    page = client.get("/v1/studies", params={"cursor": first["next_cursor"]}, headers=bob)
    assert page.status_code == 200 and page.json()["items"] == []
    # The 404 for another tenant's id is word for word the one for an id that never existed.
    theirs = problem(client.get(f"/v1/studies/{ids[0]}", headers=bob), 404)
    missing = problem(client.get(f"/v1/studies/{'f' * 32}", headers=bob), 404)
    assert theirs["detail"].replace(ids[0], "ID") == missing["detail"].replace("f" * 32, "ID")


def test_quotas_count_per_tenant_across_its_tokens(client_factory: Any, db_url: str) -> None:
    with client_factory(auth=True, max_running_studies=2, max_datasets=1) as client:
        engine = store.make_engine(db_url)
        with store.session_factory(engine)() as session:
            one, two, other = (
                tokens.create_token(session, name) for name in ("dora", "dora", "erin")
            )
        engine.dispose()
        first, second, third = ({"Authorization": f"Bearer {t}"} for t in (one, two, other))
        create(client, first)
        create(client, second)
        body = problem(client.post("/v1/studies", json={}, headers=first), 429)
        assert "2 queued or running studies per tenant" in body["detail"]
        assert body["type"].endswith("quota-exceeded")
        problem(client.post("/v1/studies", json={}, headers=second), 429)
        create(client, third)  # another tenant has its own quota

        upload(client, first)
        response = client.post(
            "/v1/datasets", files={"file": ("d.npz", npz_bytes())}, headers=second
        )
        body = problem(response, 429)
        assert "1 datasets per tenant" in body["detail"]
        assert response.headers["retry-after"]
        upload(client, third)


def test_rate_limit_message_says_what_the_limit_is(client_factory: Any) -> None:
    with client_factory(rate_limit_per_minute=1) as client:
        create(client)
        response = client.post("/v1/studies", json={})
        body = problem(response, 429)
        assert "1 studies per minute" in body["detail"] and body["type"].endswith("rate-limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # Once limited, even an invalid spec gets the 429 (refused specs count: see
        # tests/integration/test_input_limits.py).
        problem(client.post("/v1/studies", json={"n_trials": 0}), 429)
