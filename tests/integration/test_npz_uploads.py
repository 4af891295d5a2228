"""POST /v1/datasets against NPZ zip bombs: a 4xx naming `file`, the total and the limit, and
the API's memory measured from its own process (the TestClient runs it in this one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import hostile
from tests.conftest import ClientFactory
from tests.hostile import GiB, MiB

MEMORY_BOUND = 128 * MiB


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return hostile.zip_bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz", GiB).read_bytes()


def _post(client: object, data: bytes) -> object:
    return client.post(  # type: ignore[attr-defined]
        "/v1/datasets", files={"file": ("d.npz", data, "application/octet-stream")}
    )


def test_a_zip_bomb_upload_is_refused_before_it_expands(
    client_factory: ClientFactory, bomb: bytes, tmp_path: Path
) -> None:
    limit = 256 * MiB
    with client_factory(max_decompressed_bytes=limit) as client:
        try:
            response, growth = hostile.peak_growth(lambda: _post(client, bomb))
        except RuntimeError as exc:
            pytest.skip(str(exc))
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["errors"][0]["field"] == "file"
        message = body["errors"][0]["message"]
        assert "decompresses to 1073742" in message and f"limit of {limit} bytes" in message
        assert growth < MEMORY_BOUND, f"the API's peak RSS grew {growth / MiB:.0f} MiB"
        assert not list((tmp_path / "data").glob("datasets/*.npz"))  # nothing stored
        valid = tmp_path / "ok.npz"
        hostile.write_zip(
            valid,
            [(f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in hostile.small_arrays().items()],
        )
        assert _post(client, valid.read_bytes()).status_code == 201  # still serving


def test_the_decompressed_limit_is_a_setting(client_factory: ClientFactory, tmp_path: Path) -> None:
    valid = tmp_path / "ok.npz"
    hostile.write_zip(
        valid,
        [(f"{k}.npy", [hostile.npy_bytes(a)], None) for k, a in hostile.small_arrays().items()],
    )
    with client_factory(max_decompressed_bytes=1000) as client:
        response = _post(client, valid.read_bytes())
        assert response.status_code == 422, response.text
        error = response.json()["errors"][0]
        assert error["field"] == "file" and "over the limit of 1000 bytes" in error["message"]
