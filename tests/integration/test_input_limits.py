"""Hostile input cannot cost an answer or a process much: a flood of bad fields gets a short 422
(the first 50 errors and a count), invalid specs use up the rate limit, and an upload is
refused when its normalised arrays would pass the stored-size limit. SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search.errors import MAX_LISTED_ERRORS, SpecError
from search.spec_payload import MAX_SPEC_ITEMS, parse_payload
from service.client import ApiError

SHORT_ANSWER = 20_000  # bytes: 50 errors with long messages fit well below this


def refused(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, (response.status_code, response.text[:500])
    assert len(response.content) < SHORT_ANSWER, len(response.content)
    return dict(response.json())


@pytest.mark.parametrize(
    ("spec", "field", "n_bad"),
    [
        ({"strategies": [f"nope{i}" for i in range(3000)]}, "strategies.0", 3000),
        ({f"extra{i}": 1 for i in range(5000)}, "extra0", 5000),
        ({"ranges": {f"r{i}": {"low": 1, "high": 2} for i in range(3000)}}, "ranges.r0", 3000),
    ],
    ids=["strategies", "extra-keys", "ranges"],
)
def test_thousands_of_bad_fields_list_the_first_50_and_count_the_rest(
    app_client: TestClient, spec: dict[str, Any], field: str, n_bad: int
) -> None:
    response = app_client.post("/v1/studies", json=spec)
    body = refused(response)
    assert len(body["errors"]) == MAX_LISTED_ERRORS
    assert body["more_errors"] == n_bad - MAX_LISTED_ERRORS
    assert body["errors"][0]["field"] == field
    shown = ApiError.from_response(response).message().splitlines()
    assert len(shown) == 1 + MAX_LISTED_ERRORS + 1
    assert shown[-1] == f"  ... and {n_bad - MAX_LISTED_ERRORS} more"


def test_a_few_bad_fields_are_all_listed_with_no_more(app_client: TestClient) -> None:
    body = refused(app_client.post("/v1/studies", json={"n_trials": 0, "strategies": ["x"]}))
    assert {e["field"] for e in body["errors"]} == {"n_trials", "strategies.0"}
    assert body["more_errors"] == 0


def test_a_spec_flood_past_the_item_budget_costs_one_short_error_and_little_memory(
    app_client: TestClient,
) -> None:
    """300,000 unknown strategies (3.2 MB) returned a 60 MB 422 and grew the API by 500 MB."""
    raw = json.dumps({"strategies": [f"s{i}" for i in range(300_000)]}).encode()
    tracemalloc.start()
    try:
        response = app_client.post(
            "/v1/studies", content=raw, headers={"content-type": "application/json"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    body = refused(response)
    assert [e["field"] for e in body["errors"]] == ["strategies"]
    assert f"at most {MAX_SPEC_ITEMS}" in body["errors"][0]["message"]
    assert "300000" in body["errors"][0]["message"]
    # Parsing the 3.2 MB body itself takes ~40 MB of Python objects; validating adds little.
    assert peak < 100 * 2**20, peak


def test_plugin_args_are_not_counted_in_the_item_budget() -> None:
    payload = {"task": {"plugin": "p", "plugin_args": {"values": [0] * (MAX_SPEC_ITEMS + 1)}}}
    assert parse_payload(payload).task.plugin_args == payload["task"]["plugin_args"]
    with pytest.raises(SpecError) as caught:
        parse_payload({"task": {"nested": [[0] * 100] * (MAX_SPEC_ITEMS // 100 + 1)}})
    assert caught.value.errors[0].field == "task.nested"


def test_invalid_specs_count_against_the_rate_limit(client_factory: Any) -> None:
    with client_factory(rate_limit_per_minute=3) as client:
        for _ in range(3):
            refused(client.post("/v1/studies", json={"strategies": ["nope"] * 500}))
        response = client.post("/v1/studies", json={"n_trials": 3})
        assert response.status_code == 429, response.text
        assert response.json()["type"].endswith("rate-limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60


# --- stored size of uploads ------------------------------------------------------------------


def compressible_npz(rows: int, features: int) -> bytes:
    """Zeros as uint8, compressed: a few KB that normalise to rows * features * 4 bytes."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        x_train=np.zeros((rows, features), dtype=np.uint8),
        y_train=np.arange(rows) % 2,
        x_val=np.zeros((rows // 4, features), dtype=np.uint8),
        y_val=np.arange(rows // 4) % 2,
    )
    return buf.getvalue()


def test_an_upload_that_would_expand_past_the_stored_limit_is_refused_naming_file(
    client_factory: Any, tmp_path: Any
) -> None:
    data = compressible_npz(2000, 500)  # ~5 MB of float32 features once normalised
    assert len(data) < 64 * 1024
    with client_factory(max_upload_bytes=64 * 1024, max_stored_bytes=2 * 2**20) as client:
        response = client.post("/v1/datasets", files={"file": ("z.npz", data)})
        body = refused(response)
        (error,) = body["errors"]
        assert error["field"] == "file"
        assert (
            str(2 * 2**20) in error["message"] and "LRSEARCH_MAX_STORED_BYTES" in error["message"]
        )
        expected = 2500 * 500 * 4 + 2500 * 8  # float32 features, int64 class ids
        assert str(expected) in error["message"]
        stored = tmp_path / "data" / "datasets"
        assert not stored.exists() or not any(stored.iterdir())
        assert client.get("/v1/datasets").json()["items"] == []
        small = compressible_npz(200, 50)  # 50 KB normalised: under the limit
        response = client.post("/v1/datasets", files={"file": ("s.npz", small)})
        assert response.status_code == 201, response.text
        assert response.json()["size_bytes"] <= 2 * 2**20


def test_the_stored_limit_defaults_to_four_times_the_upload_limit() -> None:
    from service.settings import Settings

    assert Settings(max_upload_bytes=1000).stored_bytes_limit == 4000
    assert Settings(max_upload_bytes=1000, max_stored_bytes=1500).stored_bytes_limit == 1500


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/models"])
def test_a_file_part_without_a_file_name_is_a_clear_422_on_file(
    app_client: TestClient, path: str
) -> None:
    """`filename=""` (a browser's form with no file chosen) arrives as a text field."""
    refused = app_client.post(path, files={"file": ("", b"a,b\n1,2\n", "text/csv")})
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["field"] == "file" and error["message"].startswith("no file was sent")
    assert "UploadFile" not in refused.text


def test_a_404_echoes_at_most_80_characters_of_a_plot_name(app_client: TestClient) -> None:
    study_id = app_client.post("/v1/studies", json={"n_trials": 2}).json()["id"]
    missing = app_client.get(f"/v1/studies/{study_id}/plots/{'x' * 10_000}.png")
    assert missing.status_code == 404, missing.text
    assert "x" * 80 in missing.json()["detail"] and "x" * 81 not in missing.text
