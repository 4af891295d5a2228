"""Checks that must run before a route answers or reads a request's body.

* With auth off (one user on loopback), any web page the user visits could call the API:
  - a request whose `Host` is a domain name other than `localhost` and LRSEARCH_ALLOWED_HOSTS
    is refused (403), reads included: a page can rebind its own name to 127.0.0.1 (DNS
    rebinding) and would then read and write as a same-origin page (service.hosts);
  - a write whose `Origin` header names another site is refused (403). Browsers always send
    `Origin` on cross-site POSTs; the CLI, the client and curl send none.
* With auth on, the token is checked first: an anonymous caller gets its 401 before the API
  reads (up to) a whole upload.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import _token_caller
from service.errors import Problem, problem_response
from service.hosts import normalise_allowed, trusted_host, untrusted_host_detail

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestGuard:
    """Refuse a request before it is answered or its body read: with auth off, an untrusted
    `Host` (any method) or a write from a foreign `Origin`; with auth on, a write with a
    missing, unknown or revoked token."""

    def __init__(self, app: ASGIApp, auth: bool, allowed_hosts: Collection[str] = ()) -> None:
        self.app = app
        self.auth = auth
        self.allowed_hosts = normalise_allowed(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal: _Refusal | None = None
        if not self.auth:
            refusal = _untrusted_host(headers, self.allowed_hosts)
        if refusal is None and scope["method"] not in READ_METHODS:
            if self.auth:
                refusal = await _unauthenticated(scope, headers)
            else:
                refusal = _foreign_origin(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _untrusted_host(headers: Headers, allowed: frozenset[str]) -> _Refusal | None:
    host = headers.get("host")
    if trusted_host(host, allowed):
        return None
    return _Refusal(403, untrusted_host_detail(host or ""), slug="untrusted-host")


def _foreign_origin(headers: Headers) -> _Refusal | None:
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "").lower()
    if origin.lower() != "null" and host and urlsplit(origin).netloc.lower() == host:
        return None
    return _Refusal(
        403,
        f"cross-site write refused: the request's Origin ({origin[:200]}) is not this "
        f"server ({host or 'unknown host'}); with auth off only same-origin pages, the CLI "
        "and clients that send no Origin may write",
        slug="cross-site-request",
    )


async def _unauthenticated(scope: Scope, headers: Headers) -> _Refusal | None:
    scheme, _, secret = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return _Refusal(401, "a Bearer token is required", slug="unauthorized", bearer=True)
    try:
        await run_in_threadpool(_token_caller, Request(scope), secret.strip())
    except Problem as exc:
        return _Refusal(exc.status, exc.detail, slug=exc.slug, bearer=exc.status == 401)
    return None


class _Refusal(Problem):
    """A problem answered from the middleware (no exception handler runs out here)."""

    def __init__(self, status: int, detail: str, *, slug: str, bearer: bool = False) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"} if bearer else None)
        self.status, self.slug = status, slug

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            self.status, self.detail, slug=self.slug, headers=self.headers or None
        )
        await response(scope, receive, send)
