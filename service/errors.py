"""The one mapping from errors to RFC 9457 (ex-7807) problem documents.

Handlers raise domain errors (`SpecError`, `DatasetError`) or a `Problem`; nothing else
builds error responses, so every error body has the same shape:
`{type, title, status, detail}` plus `errors: [{field, message}]` for 422.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from search.errors import DatasetError, FieldError, SpecError

PROBLEM_MEDIA_TYPE = "application/problem+json"
_LOCATIONS = ("body", "query", "path", "header", "cookie")
log = logging.getLogger("lrsearch.api")


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

    def __init__(self, detail: str, *, slug: str, retry_after_s: int = 60) -> None:
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
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build the problem document; the only place error bodies are shaped."""
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": f"urn:lrsearch:problem:{slug or _slug(title)}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if status == 422:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
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
        out.append(FieldError(".".join(loc) or "body", str(err.get("msg", "invalid"))))
    return out


async def _on_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        exc.status, exc.detail, slug=exc.slug, errors=exc.errors, headers=exc.headers
    )


async def _on_spec_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return problem_response(
        422, "the study spec is invalid", slug="invalid-spec", errors=exc.errors
    )


async def _on_dataset_error(_request: Request, exc: Exception) -> JSONResponse:
    message = str(exc) or "the dataset cannot be used"
    return problem_response(
        422, message, slug="invalid-dataset", errors=[FieldError("file", message)]
    )


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_field_errors(exc)
    return problem_response(422, "the request is invalid", slug="invalid-request", errors=errors)


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    errors = [FieldError("body", detail)] if exc.status_code == 422 else []
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, detail, errors=errors, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Log the traceback; tell the client nothing about internals."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "an unexpected error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on the app."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(SpecError, _on_spec_error)
    app.add_exception_handler(DatasetError, _on_dataset_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
