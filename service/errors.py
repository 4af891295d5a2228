"""The one mapping from errors to RFC 9457 (ex-7807) problem documents.

Handlers raise domain errors (`SpecError`, `DatasetError`, `QuotaExceeded`) or a `Problem`;
nothing else builds error responses, so every error body has the same shape:
`{type, title, status, detail}` plus `errors: [{field, message}]` (the first
MAX_LISTED_ERRORS) and `more_errors` (how many more) for 422.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import optuna
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from search import store
from search.errors import MAX_LISTED_ERRORS, DatasetError, FieldError, QuotaExceeded, SpecError

PROBLEM_MEDIA_TYPE = "application/problem+json"
_LOCATIONS = ("body", "query", "path", "header", "cookie")
DB_RETRY_AFTER_S = 5
QUOTA_RETRY_AFTER_S = 60  # a quota frees up when a study ends: a minute is a fair guess
log = logging.getLogger("lrsearch.api")

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:lrsearch:problem:<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": f"422 only: the first {MAX_LISTED_ERRORS} bad fields, as dotted "
            "paths, and why",
            "maxItems": MAX_LISTED_ERRORS,
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "more_errors": {
            "type": "integer",
            "minimum": 0,
            "description": "422 only: how many bad fields were found beyond those listed",
        },
    },
}
_WHY: dict[int, str] = {
    400: "The body cannot be parsed",
    401: "Missing, unknown or revoked bearer token",
    404: "No such resource for this tenant",
    409: "The resource's state forbids this",
    413: "The body is larger than the limit",
    422: "A field is invalid; `errors` names the first 50, `more_errors` counts the rest",
    429: "Rate limit or quota reached; see Retry-After",
    503: "The database is unreachable; retry after Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting these statuses as problem documents (RFC 9457).

    Why: clients and schema-driven tests (schemathesis) see every error a route can give,
    with the media type it really has.
    """
    return {
        status: {
            "description": _WHY.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


COMMON_PROBLEMS = (400, 401, 422, 503)
"""Problems any /v1 operation can give; operations with a path parameter add 404."""


class Problem(Exception):
    """An HTTP problem a handler raises on purpose; subclasses fix the status."""

    status: int = 500
    slug: str = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}


class InvalidRequest(Problem):
    """A request field is invalid (e.g. a cursor or an unknown dataset)."""

    status = 422
    slug = "invalid-request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors=[FieldError(field, message)])


class Unauthorized(Problem):
    """Missing, unknown or revoked bearer token."""

    status = 401
    slug = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(Problem):
    """No such resource for this tenant (other tenants' ids look absent too)."""

    status = 404
    slug = "not-found"


class Conflict(Problem):
    """The resource's state forbids the operation."""

    status = 409
    slug = "conflict"


class PayloadTooLarge(Problem):
    """An upload is bigger than the configured limit."""

    status = 413
    slug = "payload-too-large"


class TooManyRequests(Problem):
    """A rate limit or quota is exhausted; Retry-After says when to try again."""

    status = 429
    slug = "too-many-requests"

    def __init__(self, detail: str, *, slug: str, retry_after_s: int = QUOTA_RETRY_AFTER_S) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})
        self.slug = slug


class Unavailable(Problem):
    """A dependency (the database) cannot be reached."""

    status = 503
    slug = "unavailable"


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: Sequence[FieldError] = (),
    more_errors: int = 0,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build the problem document; the only place error bodies are shaped (a 422 lists at
    most MAX_LISTED_ERRORS errors and counts the rest, `more_errors` beyond `errors` too)."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"urn:lrsearch:problem:{slug or _slug(title)}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if status == 422:
        listed = errors[:MAX_LISTED_ERRORS]
        body["errors"] = [{"field": e.field, "message": e.message} for e in listed]
        body["more_errors"] = more_errors + len(errors) - len(listed)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-").replace("'", "")


def validation_field_errors(exc: RequestValidationError) -> list[FieldError]:
    """FastAPI's errors as dotted paths without the leading location ("body", "query")."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        if err.get("type") == "json_invalid":
            loc = []
        message = str(err.get("msg", "invalid"))
        if "Expected UploadFile" in message:
            message = NO_FILE_MESSAGE
        out.append(FieldError(".".join(loc) or "body", message))
    return out


#: A multipart part with an empty file name (`filename=""`, what a browser sends when no file
#: was chosen) reaches FastAPI as a plain text field, which it reports as a type mismatch.
NO_FILE_MESSAGE = (
    'no file was sent: this part has no file name (filename=""); send a file as a '
    "multipart file part with its name"
)


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.detail, slug=exc.slug, errors=exc.errors, headers=exc.headers
    )


async def _on_spec_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return problem_response(
        422,
        "the study spec is invalid",
        slug="invalid-spec",
        errors=exc.errors,
        more_errors=exc.more,
    )


async def _on_dataset_error(_request: Request, exc: Exception) -> JSONResponse:
    message = str(exc) or "the dataset cannot be used"
    field = exc.field if isinstance(exc, DatasetError) else "file"
    return problem_response(
        422, message, slug="invalid-dataset", errors=[FieldError(field, message)]
    )


async def _on_quota_exceeded(_request: Request, exc: Exception) -> JSONResponse:
    return problem_response(
        429, str(exc), slug="quota-exceeded", headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)}
    )


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_field_errors(exc)
    return problem_response(422, "the request is invalid", slug="invalid-request", errors=errors)


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    errors = [FieldError("body", detail)] if exc.status_code == 422 else []
    unreadable = _unreadable_json(exc)
    if unreadable is not None:  # as malformed JSON is: a 422 naming the body and the reason
        return problem_response(
            422,
            f"the JSON body cannot be read: {unreadable}",
            slug="invalid-request",
            errors=[FieldError("body", unreadable)],
        )
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, detail, errors=errors, headers=headers)


def _unreadable_json(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not parse a JSON body that is valid JSON syntax (its 400 says only
    "There was an error parsing the body"; the parser's own error is the cause)."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return "it is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number has too many digits (at most 4300)"
    return f"{type(cause).__name__}: {str(cause)[:200]}"


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """An unreachable database is a 503 the client can retry; any other DB error is a 500."""
    if store.is_transient(exc):
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            exc.__class__.__name__,
        )
        return problem_response(
            503,
            "the database is unreachable; retry shortly",
            slug="unavailable",
            headers={"Retry-After": str(DB_RETRY_AFTER_S)},
        )
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Log the traceback; tell the client nothing about internals."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "an unexpected error occurred; it has been logged")


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problems every /v1 operation can give to an OpenAPI schema, in place.

    Why here: these come from dependencies and handlers shared by all routes (auth, request
    validation, the database), so no route should have to list them; FastAPI's own 422
    entry (a `detail` list as application/json) is replaced by the problem we really send.
    """
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        statuses = (*COMMON_PROBLEMS, 404) if "{" in path else COMMON_PROBLEMS
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status, doc in problem_responses(*statuses).items():
                current = responses.get(str(status))
                if current is None or _is_fastapi_validation_doc(current):
                    responses[str(status)] = doc
    return schema


def _is_fastapi_validation_doc(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("/HTTPValidationError")


def _install_openapi_problems(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on the app, and document them in its OpenAPI schema."""
    _install_openapi_problems(app)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(SpecError, _on_spec_error)
    app.add_exception_handler(DatasetError, _on_dataset_error)
    app.add_exception_handler(QuotaExceeded, _on_quota_exceeded)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    # Database errors get their own handler (not the catch-all) so a 503 is a plain response.
    app.add_exception_handler(sa.exc.SQLAlchemyError, _on_database_error)
    app.add_exception_handler(optuna.exceptions.StorageInternalError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
