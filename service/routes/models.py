"""Model files: `.keras` uploads, checked without TensorFlow (search.model_files), stored
under the data directory as `models/{id}.keras`, used by `task.model: {kind: keras_file}`.

The upload streams to a temporary file beside its final place (never into memory), is
checked there, and is renamed into place only once accepted; the file name the client sent
is only a label.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel
from sqlalchemy.orm import Session

from search import store
from search.errors import ModelError
from search.model_files import KerasFileInfo, check_keras_file
from search.text import PRINTABLE_MESSAGE, printable
from service.deps import ModelId, SessionDep, SettingsDep, TenantDep
from service.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    problem_responses,
)
from service.settings import Settings

router = APIRouter(tags=["models"])
_CHUNK = 1024 * 1024
#: The most a .keras archive may inflate to, as a multiple of the upload limit.
INFLATE_FACTOR = 4


class ModelOut(BaseModel):
    """An uploaded model file (never its path on disk)."""

    id: str
    name: str
    class_name: str
    keras_version: str | None
    input_shape: list[int | None] | None
    est_params: int
    size_bytes: int
    created_at: str


class ModelList(BaseModel):
    """The caller's model files, newest first."""

    items: list[ModelOut]


@router.post(
    "/models", status_code=201, response_model=ModelOut, responses=problem_responses(413, 429)
)
def upload_model(
    session: SessionDep,
    settings: SettingsDep,
    caller: TenantDep,
    file: Annotated[UploadFile, File(description="A .keras file saved by model.save()")],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> dict[str, Any]:
    """Check the file (allow-listed classes, sizes, parameter budget), then store it."""
    if store.count_models(session, caller.tenant_id) >= settings.max_models:
        raise TooManyRequests(
            f"at most {settings.max_models} model files per tenant; delete one first",
            slug="quota-exceeded",
        )
    if name is not None and not printable(name):
        raise InvalidRequest("name", PRINTABLE_MESSAGE)
    folder = settings.data_dir / "models"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _receive(file.file, folder, settings.max_model_bytes)
    try:
        info = _check(tmp, settings)
        row = _store(session, settings, caller.tenant_id, tmp, info, name or _label(file))
    finally:
        tmp.unlink(missing_ok=True)
    return model_json(row)


@router.get("/models", response_model=ModelList)
def list_models(session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """The caller's model files, newest first."""
    return {"items": [model_json(m) for m in store.list_models(session, caller.tenant_id)]}


@router.get("/models/{model_id}", response_model=ModelOut, responses=problem_responses(404))
def get_model(model_id: ModelId, session: SessionDep, caller: TenantDep) -> dict[str, Any]:
    """One model file's record."""
    return model_json(_model_or_404(session, model_id, caller.tenant_id))


@router.delete("/models/{model_id}", status_code=204, responses=problem_responses(404, 409))
def delete_model(
    model_id: ModelId, session: SessionDep, settings: SettingsDep, caller: TenantDep
) -> Response:
    """Delete a model file no queued or running study trains."""
    store.lock_tenant(session, caller.tenant_id)  # no study is queued on it meanwhile
    row = _model_or_404(session, model_id, caller.tenant_id)
    users = store.active_studies_using_model(session, caller.tenant_id, model_id)
    if users:
        raise Conflict(f"{users} queued or running studies use model {model_id}")
    path = settings.data_dir / row.path
    session.delete(row)
    session.commit()
    path.unlink(missing_ok=True)
    return Response(status_code=204)


def model_json(row: store.StoredModel) -> dict[str, Any]:
    """A model file as the API shows it."""
    return {
        "id": row.id,
        "name": row.name,
        "class_name": row.class_name,
        "keras_version": row.keras_version,
        "input_shape": None if row.input_shape is None else list(row.input_shape),
        "est_params": row.est_params,
        "size_bytes": row.size_bytes,
        "created_at": row.created_at.isoformat(),
    }


def _receive(stream: IO[bytes], folder: Path, limit: int) -> Path:
    """The upload, copied in chunks to a temporary file (413 past the limit)."""
    fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".keras", dir=folder)
    path, size = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the file is larger than {limit} bytes")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _check(path: Path, settings: Settings) -> KerasFileInfo:
    if path.stat().st_size == 0:
        raise InvalidRequest("file", "the file is empty")
    try:
        return check_keras_file(
            path,
            max_uncompressed=INFLATE_FACTOR * settings.max_model_bytes,
            max_params=settings.max_model_params,
        )
    except ModelError as exc:
        raise InvalidRequest("file", str(exc)) from None


def _store(
    session: Session,
    settings: Settings,
    tenant_id: str,
    tmp: Path,
    info: KerasFileInfo,
    label: str,
) -> store.StoredModel:
    """Rename the checked file into place, then write the row (the file goes if it fails)."""
    model_id = store.new_id()
    relative = f"models/{model_id}.keras"
    path = settings.data_dir / relative
    os.replace(tmp, path)
    row = store.StoredModel(
        id=model_id,
        tenant_id=tenant_id,
        name=label,
        path=relative,
        class_name=info.class_name[:64],
        keras_version=None if info.keras_version is None else info.keras_version[:32],
        input_shape=info.input_shape,
        est_params=info.est_params,
        size_bytes=info.size_bytes,
    )
    session.add(row)
    try:
        session.commit()
    except Exception:
        session.rollback()
        path.unlink(missing_ok=True)
        raise
    return row


def _label(file: UploadFile) -> str:
    stem = Path(file.filename or "model").stem
    return "".join(c for c in stem if c.isprintable())[:200] or "model"


def _model_or_404(session: Session, model_id: str, tenant_id: str) -> store.StoredModel:
    row = store.get_model(session, model_id, tenant_id)
    if row is None:
        raise NotFound(f"no model {model_id}")
    return row
