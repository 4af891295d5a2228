"""Datasets: uploads, validated by the readers and stored as normalised NPZ under a server
id; and datasets by path, files on shared storage under LRSEARCH_DATA_ROOTS, registered
after their paths are checked (search.data.references) and their headers read.

No user-supplied file name of an upload ever reaches the file system: the stored path is
`datasets/{id}.npz` with a random id; the upload's name is only kept as a label. A dataset
by path is never copied, nor deleted with its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel
from sqlalchemy.orm import Session

from search import store
from search.data.ref_headers import RefInfo, read_headers
from search.data.references import ReferenceRequest, resolve_files
from search.errors import DatasetError
from search.text import PRINTABLE_MESSAGE, printable
from service.deps import DatasetId, SessionDep, SettingsDep, TenantDep
from service.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    problem_responses,
)
from service.settings import Settings

router = APIRouter(tags=["datasets"])

_CHUNK = 1024 * 1024
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
CSV_SEED = 0
CSV_VAL_FRACTION = 0.2


class DatasetOut(BaseModel):
    """An uploaded dataset's shapes and task (never its path on disk)."""

    id: str
    name: str
    format: str
    task: str
    n_classes: int | None
    n_train: int
    n_val: int
    input_shape: list[int]
    size_bytes: int
    created_at: str
    reference: dict[str, Any] | None = None  # a dataset by path: its format and files


class DatasetList(BaseModel):
    """The caller's datasets, newest first."""

    items: list[DatasetOut]


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetOut,
    responses=problem_responses(413, 429),
)
def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
    file: Annotated[UploadFile, File(description="An .npz (x_train, y_train, ...) or a .csv")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    target: Annotated[str | None, Form(max_length=200, description="CSV target column")] = None,
) -> dict[str, Any]:
    """Check the file with the same readers the workers use, then store it as NPZ."""
    if store.count_datasets(session, caller.tenant_id) >= settings.max_datasets:
        raise TooManyRequests(
            f"at most {settings.max_datasets} datasets per tenant; delete one first",
            slug="quota-exceeded",
        )
    data = _read_limited(file.file, settings.max_upload_bytes)
    if name is not None and not printable(name):
        raise InvalidRequest("name", PRINTABLE_MESSAGE)
    if target is not None and not printable(target):
        raise InvalidRequest("target", PRINTABLE_MESSAGE)
    label = name or _label_from_filename(file.filename)
    fmt = _detect_format(file.filename or "", data)
    dataset = _parse(data, fmt, target, label, settings.max_decompressed_bytes)
    _check_stored_size(dataset.nbytes, settings.stored_bytes_limit)
    row = _store(session, settings, caller.tenant_id, dataset, fmt, label)
    return dataset_json(row)


@router.post(
    "/datasets/by-reference",
    status_code=201,
    response_model=DatasetOut,
    responses=problem_responses(429),
)
def register_dataset(
    request: ReferenceRequest,
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
) -> dict[str, Any]:
    """Register files on shared storage under LRSEARCH_DATA_ROOTS (nothing is copied; only
    headers are read here, the workers stream the data)."""
    if store.count_datasets(session, caller.tenant_id) >= settings.max_datasets:
        raise TooManyRequests(
            f"at most {settings.max_datasets} datasets per tenant; delete one first",
            slug="quota-exceeded",
        )
    if request.name is not None and not printable(request.name):
        raise InvalidRequest("name", PRINTABLE_MESSAGE)
    info = _referenced(request, settings)
    label = request.name or Path(request.train[0]).name[:200] or "dataset"
    row = store.StoredDataset(
        id=store.new_id(),
        tenant_id=caller.tenant_id,
        name=label,
        format=request.format,
        path="",
        n_train=info.n_train,
        n_val=info.n_val,
        input_shape=info.input_shape,
        task=info.task,
        n_classes=info.n_classes,
        size_bytes=info.size_bytes,
        source=info.source,
    )
    session.add(row)
    session.commit()
    return dataset_json(row)


def _referenced(request: ReferenceRequest, settings: Settings) -> RefInfo:
    """The files resolved inside the roots, then their headers; errors name the field."""
    glob_ok = request.format == "tfrecord"
    try:
        train = resolve_files(request.train, settings.data_roots, glob_ok=glob_ok)
    except DatasetError as exc:
        raise InvalidRequest("train", str(exc)) from None
    try:
        val = resolve_files(request.val, settings.data_roots, glob_ok=glob_ok)
    except DatasetError as exc:
        raise InvalidRequest("val", str(exc)) from None
    try:
        return read_headers(request, train, val)
    except (DatasetError, OSError) as exc:
        raise InvalidRequest("train", str(exc)) from None


@router.get("/datasets", response_model=DatasetList)
def list_datasets(session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """The caller's datasets, newest first (at most the per-tenant quota)."""
    return {"items": [dataset_json(d) for d in store.list_datasets(session, caller.tenant_id)]}


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, responses=problem_responses(404))
def get_dataset(dataset_id: DatasetId, session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """One dataset's shapes and task."""
    return dataset_json(_dataset_or_404(session, dataset_id, caller.tenant_id))


@router.delete("/datasets/{dataset_id}", status_code=204, responses=problem_responses(404, 409))
def delete_dataset(
    dataset_id: DatasetId, session: SessionDep, settings: SettingsDep, caller: TenantDep
) -> Response:
    """Delete a dataset no queued or running study trains on."""
    store.lock_tenant(session, caller.tenant_id)  # no study is queued on it meanwhile
    row = _dataset_or_404(session, dataset_id, caller.tenant_id)
    users = store.active_studies_using(session, caller.tenant_id, dataset_id)
    if users:
        raise Conflict(f"{users} queued or running studies use dataset {dataset_id}")
    path = settings.data_dir / row.path if row.source is None else None  # by path: not ours
    session.delete(row)
    session.commit()
    if path is not None:
        path.unlink(missing_ok=True)
    return Response(status_code=204)


def dataset_json(row: store.StoredDataset) -> dict[str, Any]:
    """A dataset as the API shows it (never its path on disk)."""
    return {
        "id": row.id,
        "name": row.name,
        "format": row.format,
        "task": row.task,
        "n_classes": row.n_classes,
        "n_train": row.n_train,
        "n_val": row.n_val,
        "input_shape": list(row.input_shape),
        "size_bytes": row.size_bytes,
        "created_at": row.created_at.isoformat(),
        "reference": None if row.source is None else _reference_json(row.source),
    }


def _reference_json(source: dict[str, Any]) -> dict[str, Any]:
    """What a dataset by path shows: its format, its files, how validation is split off."""
    keys = ("format", "train", "val", "split_every", "target", "label")
    return {k: source.get(k) for k in keys if source.get(k) is not None}


def _label_from_filename(filename: str | None) -> str:
    """The upload's file name as a label only: its stem, printable characters, 200 at most."""
    stem = Path(filename or "dataset").stem
    return "".join(c for c in stem if c.isprintable())[:200] or "dataset"


def _dataset_or_404(session: Session, dataset_id: str, tenant_id: str) -> store.StoredDataset:
    row = store.get_dataset(session, dataset_id, tenant_id)
    if row is None:
        raise NotFound(f"no dataset {dataset_id}")
    return row


def _read_limited(stream: IO[bytes], limit: int) -> bytes:
    """Read the upload in chunks and stop as soon as it passes the limit."""
    chunks, size = [], 0
    while chunk := stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _detect_format(filename: str, data: bytes) -> str:
    """NPZ by zip magic or extension, otherwise CSV."""
    if data.startswith(_ZIP_MAGIC) or filename.lower().endswith(".npz"):
        return "npz"
    return "csv"


def _parse(data: bytes, fmt: str, target: str | None, label: str, max_npz_bytes: int) -> Any:
    """Run the dataset readers; their DatasetError becomes a 422 on field `file`. An NPZ's
    decompressed size is bounded from its headers before anything is decompressed."""
    from search.data import read_csv, read_npz

    if not data:
        raise DatasetError("the file is empty")
    if fmt == "npz":
        return read_npz(data, name=label, max_bytes=max_npz_bytes)
    if not target:
        raise InvalidRequest("target", "a CSV upload needs the name of its target column")
    return read_csv(data, target=target, name=label, seed=CSV_SEED, val_fraction=CSV_VAL_FRACTION)


def _check_stored_size(size: int, limit: int) -> None:
    """The normalised arrays, not only the upload, must fit: compressed or narrow-typed data
    can expand manyfold (a 2.6 MB upload was stored as 269 MB)."""
    if size > limit:
        raise InvalidRequest(
            "file",
            f"normalised (float32 features) this dataset takes {size} bytes; at most {limit} "
            "are stored per dataset (LRSEARCH_MAX_STORED_BYTES)",
        )


def _store(
    session: Session, settings: Settings, tenant_id: str, dataset: Any, fmt: str, label: str
) -> store.StoredDataset:
    """Write the normalised NPZ, then the row; remove the file if the row fails."""
    from search.data import save_npz

    dataset_id = store.new_id()
    relative = f"datasets/{dataset_id}.npz"
    path = settings.data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(dataset, path)
    row = store.StoredDataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=label,
        format=fmt,
        path=relative,
        n_train=len(dataset.x_train),
        n_val=len(dataset.x_val),
        input_shape=[int(d) for d in dataset.input_shape],
        task=str(dataset.task),
        n_classes=None if dataset.n_classes is None else int(dataset.n_classes),
        size_bytes=path.stat().st_size,
    )
    session.add(row)
    try:
        session.commit()
    except Exception:
        session.rollback()
        path.unlink(missing_ok=True)
        raise
    return row
