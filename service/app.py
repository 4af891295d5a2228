"""The FastAPI application: routers under /v1, one error mapping, DB set up at startup."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import optuna
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search import store
from service.answers import AnswerCache, ReadCoalescer
from service.errors import install_error_handlers, problem_response
from service.guards import RequestGuard
from service.routes import datasets, health, models, plots, studies, tasks, trials
from service.settings import Settings

JSON_BODY_LIMIT = 4 * 1024 * 1024  # a keras_json model may be up to 1M characters
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and small fields around the file
UPLOAD_PATH = "/v1/datasets"
MODEL_UPLOAD_PATH = "/v1/models"


class BodyLimit:
    """Refuse oversized bodies with a 413 problem: by Content-Length before reading, and by
    counting bytes while reading (chunked uploads). Uploads get their path's limit in
    `upload_limits` (or `upload_limit` for dataset uploads), all else `default_limit`."""

    def __init__(
        self,
        app: ASGIApp,
        default_limit: int,
        upload_limit: int,
        upload_limits: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.upload_limits = {UPLOAD_PATH: upload_limit, **(upload_limits or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limits.get(scope["path"], self.default_limit)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = problem_response(413, f"the request body is larger than {limit} bytes")
            await response(scope, receive, send)
            return
        await self.app(scope, _counting(receive, limit), send)


def _counting(receive: Receive, limit: int) -> Receive:
    """A receive that raises 413 (an HTTPException FastAPI passes through) past the limit."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise StarletteHTTPException(413, f"the request body is larger than {limit} bytes")
        return message

    return limited


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Migrate, then open the engine and Optuna storage the handlers share."""
    settings: Settings = app.state.settings
    (settings.data_dir / "datasets").mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    await run_in_threadpool(store.upgrade, settings.database_url)
    engine = store.make_engine(settings.database_url)
    app.state.engine = engine
    app.state.sessions = store.session_factory(engine)
    # Read-only routes: autocommit, so a request costs its statements only (no BEGIN and
    # ROLLBACK round trips); each statement still reads committed data, as before.
    app.state.read_sessions = store.session_factory(
        engine.execution_options(isolation_level="AUTOCOMMIT")
    )
    app.state.optuna_storage = await run_in_threadpool(store.optuna_storage, settings.database_url)
    # Everything loaded so far (Optuna, SQLAlchemy, pydantic models...) lives as long as the
    # process: keep it out of the garbage collector's full passes, which otherwise walk it
    # all and stall every request in flight for 60-70 ms a few times a minute under load.
    gc.freeze()
    # Under load, the objects of the requests in flight survive each young collection and
    # pile up in the oldest generation, whose full passes then stalled all 32 requests of
    # benchmarks/api_latency.py by ~30 ms once per ~1000 requests (p99 45 ms vs p50 9 ms).
    # Rarer young collections promote far fewer of them: measured over 30,000 requests, no
    # request above 22 ms and RSS flat (208 MiB). Cycles are still collected, only later.
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        app.state.optuna_storage.engine.dispose()
        engine.dispose()


#: Collector thresholds for the API process (Python's default: 700, 10, 10).
GC_THRESHOLDS = (7000, 20, 100)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for these settings (read from the environment when omitted)."""
    settings = settings or Settings()
    app = FastAPI(
        title="lrsearch",
        summary="Find the best learning-rate strategy for a Keras model.",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.answers = AnswerCache()
    app.state.reads = ReadCoalescer()
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(studies.router, prefix="/v1")
    app.include_router(trials.router, prefix="/v1")
    app.include_router(plots.router, prefix="/v1")
    app.include_router(tasks.router, prefix="/v1")
    app.include_router(datasets.router, prefix="/v1", form_limits={"max_files": 1, "max_fields": 8})
    app.include_router(models.router, prefix="/v1", form_limits={"max_files": 1, "max_fields": 4})
    # Added before BodyLimit, so it runs after it: a declared oversized body is a 413 at once,
    # then an untrusted Host, a foreign Origin or a missing token is refused before the body
    # is read.
    app.add_middleware(RequestGuard, auth=settings.auth, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(
        BodyLimit,
        default_limit=JSON_BODY_LIMIT,
        upload_limit=settings.max_upload_bytes + FORM_OVERHEAD,
        upload_limits={MODEL_UPLOAD_PATH: settings.max_model_bytes + FORM_OVERHEAD},
    )
    return app
