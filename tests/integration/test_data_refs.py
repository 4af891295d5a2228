"""Datasets registered by path (`POST /v1/datasets/by-reference`) on SQLite and PostgreSQL:
the path rules (inside a data root, no '..', no absolute path elsewhere, no symlink out),
what each format's headers give, and that nothing is copied or deleted."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from search.data.tfrecord_count import masked_crc32c
from tests import hostile
from tests.conftest import ClientFactory

TFRECORD = {
    "format": "tfrecord",
    "features": {"x": {"dtype": "float32", "shape": [4]}, "y": {"dtype": "int64"}},
    "label": "y",
    "task": "classification",
    "n_classes": 2,
}


def write_records(path: Path, n: int, size: int = 20) -> Path:
    """A file in TFRecord framing (length, its masked CRC-32C, payload, its CRC). The API
    walks the framing and checks the lengths' CRCs, so the payloads are placeholders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    length, payload = struct.pack("<Q", size), b"r" * size
    record = b"".join(
        (length, _crc(length), payload, _crc(payload)),
    )
    with path.open("wb") as f:
        for _ in range(n):
            f.write(record)
    return path


def _crc(data: bytes) -> bytes:
    return struct.pack("<I", masked_crc32c(data))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    write_records(folder / "shards" / "train-0.tfrecord", 60)
    write_records(folder / "shards" / "train-1.tfrecord", 40)
    write_records(folder / "shards" / "val.tfrecord", 25)
    rng = np.random.default_rng(0)
    np.savez(
        folder / "arrays.npz",
        x_train=rng.normal(size=(50, 3, 2)).astype(np.float32),
        y_train=rng.integers(0, 3, 50),
        x_val=rng.normal(size=(12, 3, 2)),
        y_val=rng.integers(0, 3, 12),
    )
    lines = ["a,b,label", *(f"{i},{i * 2},{i % 2}" for i in range(50))]
    (folder / "table.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "outside").mkdir()
    write_records(tmp_path / "outside" / "secret.tfrecord", 30)
    return folder


@pytest.fixture
def api(client_factory: ClientFactory, root: Path) -> Any:
    with client_factory(data_roots=[root]) as client:
        yield client


def register(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/datasets/by-reference", json=body)


def refused(client: TestClient, body: dict[str, Any]) -> tuple[str, str]:
    response = register(client, body)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    return error["field"], error["message"]


def test_tfrecord_shards_are_counted_and_a_study_uses_them(api: TestClient, root: Path) -> None:
    body = {
        **TFRECORD,
        "train": "shards/train-*.tfrecord",
        "val": "shards/val.tfrecord",
        "name": "shards",
    }
    response = register(api, body)
    assert response.status_code == 201, response.text
    ds = response.json()
    assert (ds["format"], ds["name"], ds["n_train"], ds["n_val"]) == ("tfrecord", "shards", 100, 25)
    assert ds["input_shape"] == [4] and ds["task"] == "classification" and ds["n_classes"] == 2
    assert ds["reference"]["train"] == [
        str(root / "shards" / f"train-{i}.tfrecord") for i in (0, 1)
    ]
    assert ds["size_bytes"] == sum(p.stat().st_size for p in (root / "shards").iterdir())
    study = api.post("/v1/studies", json={"task": {"dataset": ds["id"], "batch_size": 10}})
    assert study.status_code == 201, study.text
    too_long = {
        "task": {"dataset": ds["id"], "batch_size": 10, "epochs": 2},
        "strategies": ["cosine"],
        "ranges": {"decay_steps": {"low": 1, "high": 21}},
    }
    [error] = api.post("/v1/studies", json=too_long).json()["errors"]
    assert "20 steps" in error["message"]  # 2 epochs x 100 rows / 10: the run is known
    standardized = {"task": {"dataset": ds["id"], "preprocess": {"standardize": True}}}
    [error] = api.post("/v1/studies", json=standardized).json()["errors"]
    assert error["field"] == "task.preprocess" and "by path" in error["message"]
    api.post(f"/v1/studies/{study.json()['id']}/cancel")
    assert api.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert (root / "shards" / "train-0.tfrecord").is_file()  # never ours to delete


def test_without_val_files_every_fifth_record_is_validation(api: TestClient) -> None:
    ds = register(api, {**TFRECORD, "train": ["shards/train-0.tfrecord"]}).json()
    assert (ds["n_train"], ds["n_val"]) == (48, 12) and ds["reference"]["split_every"] == 5


def test_paths_must_stay_inside_a_root(api: TestClient, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "secret.tfrecord"
    (root / "link-out.tfrecord").symlink_to(outside)
    (root / "dir-link").symlink_to(tmp_path / "outside")
    (root / "link-in.tfrecord").symlink_to(root / "shards" / "val.tfrecord")

    def why(train: str | list[str], **extra: Any) -> str:
        field, message = refused(api, {**TFRECORD, "train": train, **extra})
        assert field == extra.get("field_expected", "train")
        return message

    assert "'..' is not allowed" in why("shards/../../outside/secret.tfrecord")
    assert "'..' is not allowed" in why(f"{root}/../outside/secret.tfrecord")
    assert "not under a data root" in why(str(outside))
    assert "not under a data root" in why("/etc/passwd")
    assert "symlink whose target leaves" in why("link-out.tfrecord")
    assert "symlink whose target leaves" in why("dir-link/secret.tfrecord")
    assert "symlink whose target leaves" in why("*.tfrecord")  # a pattern matching it too
    assert "no such file" in why("shards/missing.tfrecord")
    assert "not a regular file" in why("shards")
    field, message = refused(api, {**TFRECORD, "train": "shards/val.tfrecord", "val": "../x"})
    assert field == "val" and "'..'" in message
    linked = register(api, {**TFRECORD, "train": "link-in.tfrecord"})  # stays inside: fine
    assert linked.status_code == 201 and linked.json()["n_train"] == 20
    assert linked.json()["reference"]["train"] == [str(root / "shards" / "val.tfrecord")]


def test_no_roots_configured_is_a_clear_422(client_factory: ClientFactory) -> None:
    with client_factory() as client:
        field, message = refused(client, {**TFRECORD, "train": "/tmp/x.tfrecord"})
    assert field == "train" and "LRSEARCH_DATA_ROOTS" in message


def test_npz_headers_and_labels_only(api: TestClient, root: Path) -> None:
    ds = register(api, {"format": "npz", "train": "arrays.npz"}).json()
    assert (ds["n_train"], ds["n_val"], ds["input_shape"]) == (50, 12, [3, 2])
    assert ds["task"] == "classification" and ds["n_classes"] == 3
    np.savez_compressed(
        root / "packed.npz",
        x_train=np.zeros((20, 2)),
        y_train=np.arange(20) % 2,
        x_val=np.zeros((5, 2)),
        y_val=np.arange(5) % 2,
    )
    field, message = refused(api, {"format": "npz", "train": "packed.npz"})
    assert field == "train" and "compressed" in message
    assert "patterns are only allowed" in refused(api, {"format": "npz", "train": "*.npz"})[1]


def test_csv_needs_its_target_and_task(api: TestClient) -> None:
    body = {
        "format": "csv",
        "train": "table.csv",
        "target": "label",
        "task": "classification",
        "n_classes": 2,
    }
    ds = register(api, body).json()
    assert (ds["n_train"], ds["n_val"], ds["input_shape"]) == (40, 10, [2])
    missing = api.post(
        "/v1/datasets/by-reference", json={"format": "csv", "train": "table.csv"}
    ).json()
    assert missing["status"] == 422 and "needs target, task" in missing["errors"][0]["message"]
    assert "not in the header" in refused(api, {**body, "target": "nope"})[1]


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow installed")
def test_parquet_without_pyarrow_is_refused_clearly(api: TestClient, root: Path) -> None:
    (root / "t.parquet").write_bytes(b"PAR1")
    body = {"format": "parquet", "train": "t.parquet", "target": "y", "task": "regression"}
    field, message = refused(api, body)
    assert field == "train" and "Parquet needs pyarrow" in message


def test_a_sparse_file_of_zeros_is_not_counted_as_tfrecords(api: TestClient, root: Path) -> None:
    """64 MiB of zeros walked as 4 M empty records (201, hours for a glob of them); each
    length's CRC-32C is checked now, so the first record refuses it."""
    with (root / "shards" / "zeros0.tfrecord").open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    field, message = refused(api, {**TFRECORD, "train": "shards/zeros*.tfrecord"})
    assert field == "train" and "zeros0.tfrecord" in message
    assert "record 0 at byte 0" in message and "CRC-32C" in message


def test_an_npz_whose_labels_are_not_one_value_per_row_is_refused_unread(
    api: TestClient, root: Path
) -> None:
    """A sparse 1.5 GB y_train of shape (10, 37.5 M) was read whole and registered as a
    37.5 M-output regression; its .npy header refuses it now."""
    hostile.stored_npz(
        root / "wide.npz",
        {
            "x_train": (hostile.npy_header((10, 3)), 120),
            "y_train": (hostile.npy_header((10, 37_500_000)), 10 * 37_500_000 * 4),
            "x_val": (hostile.npy_header((4, 3)), 48),
            "y_val": (hostile.npy_header((4, 37_500_000)), 4 * 37_500_000 * 4),
        },
    )
    field, message = refused(api, {"format": "npz", "train": "wide.npz"})
    assert field == "train" and "y_train has 37500000 outputs per row" in message
