"""FastAPI dependencies (settings, a DB session per request, the calling tenant) and the
small HTTP helpers handlers share: opaque cursors, study look-ups, the DB threads."""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from search import store
from service.answers import ReadCoalescer
from service.errors import InvalidRequest, NotFound, Unauthorized
from service.settings import Settings
from service.tokens import hash_token

T = TypeVar("T")
DEFAULT_TENANT = "default"
_bearer = HTTPBearer(auto_error=False, description="API token from `lrsearch token create`")

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)
MAX_INT32 = 2**31 - 1  # trial numbers and cursor positions are 32-bit columns
MAX_CURSOR_CHARS = 512

# Ids are checked before a handler runs: nothing shaped like a path ("../x", "a/b", NUL)
# reaches a query or the file system, and such an id is a 422 naming the parameter.
StudyId = Annotated[
    str, PathParam(pattern=ID_PATTERN, max_length=64, description="A study id from POST /studies")
]
DatasetId = Annotated[
    str,
    PathParam(pattern=ID_PATTERN, max_length=64, description="A dataset id from POST /datasets"),
]
ModelId = Annotated[
    str,
    PathParam(pattern=ID_PATTERN, max_length=64, description="A model id from POST /models"),
]
TrialNumber = Annotated[int, PathParam(ge=0, le=MAX_INT32, description="Trial number, from 0")]
Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_CHARS, description="`next_cursor` of the previous page"),
]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the tenant whose data is visible, and the key rate limits count on."""

    tenant_id: str
    rate_key: str


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with (async: no thread hop for a field read)."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) afterwards."""
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_caller(request: Request, settings: SettingsDep, credentials: BearerDep) -> Caller:
    """Resolve the bearer token to its tenant; without auth everyone is tenant "default".

    Async, with its own short session in one thread hop only when the database must answer
    (a token look-up, the first default-tenant call): the hot read routes then cost one hop.
    """
    if not settings.auth:
        tenant_id: str | None = getattr(request.app.state, "default_tenant_id", None)
        if tenant_id is None:
            tenant_id = await run_in_threadpool(_default_tenant_id, request)
        return Caller(tenant_id=tenant_id, rate_key=f"tenant:{tenant_id}")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("a Bearer token is required")
    return await run_in_threadpool(_token_caller, request, credentials.credentials)


def _token_caller(request: Request, secret: str) -> Caller:
    digest = hash_token(secret)
    with request.app.state.sessions() as session:
        token = session.scalar(select(store.ApiToken).where(store.ApiToken.token_hash == digest))
    if token is None or token.revoked_at is not None:
        raise Unauthorized("the token is unknown or revoked")
    if not hmac.compare_digest(token.token_hash, digest):
        raise Unauthorized("the token is unknown or revoked")
    return Caller(tenant_id=token.tenant_id, rate_key=f"token:{token.id}")


def _default_tenant_id(request: Request) -> str:
    """The single-user tenant, created on first use and cached on the app."""
    with request.app.state.sessions() as session:
        tenant_id = store.get_or_create_tenant(session, DEFAULT_TENANT).id
    request.app.state.default_tenant_id = tenant_id
    return tenant_id


TenantDep = Annotated[Caller, Depends(get_caller)]


def encode_cursor(position: Any) -> str:
    """An opaque pagination cursor (url-safe base64 of JSON)."""
    raw = json.dumps(position, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> Any:
    """The position inside a cursor; a tampered cursor is a 422 on field `cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidRequest("cursor", "not a cursor returned by this API") from exc


def study_or_404(session: Session, study_id: str, tenant_id: str) -> store.Study:
    """The caller's study; another tenant's id looks exactly like an unknown one.

    An id that is not id-shaped cannot exist and never reaches the query (PostgreSQL refuses
    NUL in text), whichever route passed it.
    """
    _check_study_id(study_id)
    study = store.get_study(session, study_id, tenant_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    return study


def _check_study_id(study_id: str) -> None:
    if not _ID_RE.fullmatch(study_id):
        raise NotFound(f"no study {study_id[:80]!r}")


def versioned_study_or_404(
    session: Session, study_id: str, tenant_id: str
) -> tuple[store.Study, store.TrialsVersion]:
    """Like `study_or_404`, with the study's TrialsVersion read in the same statement."""
    _check_study_id(study_id)
    found = store.study_with_trials_version(session, study_id, tenant_id)
    if found is None:
        raise NotFound(f"no study {study_id}")
    return found


DB_THREADS = 4


async def in_db_thread(state: State, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking database work in one of DB_THREADS threads of this process.

    Why a small pool of its own: with 32 requests in flight, Starlette's default 40 threads
    all compete for the GIL and the event loop waits behind them at every socket call (p99
    several times p50); a few threads keep PostgreSQL busy and the loop responsive.
    """
    limiter: anyio.CapacityLimiter | None = getattr(state, "db_limiter", None)
    if limiter is None:
        limiter = state.db_limiter = anyio.CapacityLimiter(DB_THREADS)
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


async def shared_read(state: State, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a DB thread, shared with identical requests in flight (see ReadCoalescer):
    the key must name everything the answer depends on, the tenant included."""
    reads: ReadCoalescer = state.reads
    return await reads.read(key, lambda: in_db_thread(state, fn, *args))
