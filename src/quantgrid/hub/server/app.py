"""``create_app(settings)``: the hub's FastAPI app. State lives on ``app.state``, never in globals.

* One error handler turns every exception into ``QuantGridError.to_dict()`` JSON with the
  class's HTTP status (429 adds ``Retry-After``); anything unexpected is a logged 500 with
  the same shape, so clients always get ``{"error": {"code", "message", "hint"}}``.
* Routers are listed in ``ROUTERS`` (``module:attribute``) and imported lazily; a module
  another engineer has not written yet is skipped with a log line.
* At startup: migrations to head, leftover upload temp files removed, and (unless
  ``worker_enabled`` is false) a job-worker thread started; it stops with the app.
"""

from __future__ import annotations

import importlib
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from quantgrid import __version__
from quantgrid.errors import (
    HTTP_ERRORS,
    HubError,
    PayloadTooLarge,
    QuantGridError,
    RateLimited,
    ServerError,
    Unprocessable,
)
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.ratelimit import RateLimiter
from quantgrid.hub.server.storage import BlobStore
from quantgrid.hub.settings import HubSettings

log = logging.getLogger(__name__)

ROUTERS = [
    "quantgrid.hub.server.routes:router",
    "quantgrid.hub.server.releases:router",  # /v1/releases* (release engine)
]

API_DESCRIPTION = """\
The quantgrid hub: contributors push LoRA adapter submissions, the hub validates them with a
proof-of-loss test, merges accepted ones into weekly releases and ranks contributors.

Authenticate with `Authorization: Bearer <token>` (`quantgrid hub user add NAME` prints one).
Every error has the body `{"error": {"code": ..., "message": ..., "hint": ...}}`.
"""


def _error_response(exc: Exception) -> JSONResponse:
    """The one place an exception becomes an HTTP response."""
    if isinstance(exc, QuantGridError):
        err = exc
    elif isinstance(exc, RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        err = Unprocessable("invalid request: " + "; ".join(parts), hint="see the API schema at /docs")
    elif isinstance(exc, StarletteHTTPException):
        cls = HTTP_ERRORS.get(exc.status_code, ServerError if exc.status_code >= 500 else HubError)
        err = cls(str(exc.detail))
        err.http_status = exc.status_code  # e.g. 405 keeps its status
    else:
        log.error("unhandled error", exc_info=exc)
        err = ServerError("internal server error", hint="the hub logged the details; tell its admin")
    headers = {}
    if isinstance(err, RateLimited) and err.retry_after is not None:
        headers["Retry-After"] = str(int(err.retry_after))
    return JSONResponse(err.to_dict(), status_code=err.http_status, headers=headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, PayloadTooLarge):
        await drain_body(request)
    return _error_response(exc)


async def drain_body(request: Request) -> None:
    """Read and drop an unread request body (up to the upload limit) before answering early.

    A client still streaming a large upload when the hub answers (bad token, a repeat push,
    rate limit) would otherwise hit a closed socket and never see the answer.
    """
    if request.method not in ("POST", "PUT", "PATCH") or getattr(request.state, "body_read", False):
        return
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > request.app.state.settings.max_upload_bytes:
        return
    request.state.body_read = True
    try:
        async for _ in request.stream():
            pass
    except Exception:  # the client went away, or the body was already consumed: nothing to drop
        pass


def _start_worker(app: FastAPI) -> None:
    from quantgrid.hub.server.jobs import run_worker

    stop = threading.Event()
    thread = threading.Thread(
        target=run_worker, args=(app.state.settings,), kwargs={"stop_event": stop, "db": app.state.db},
        name="hub-worker", daemon=True,
    )
    thread.start()
    app.state.worker_stop, app.state.worker_thread = stop, thread


def create_app(settings: HubSettings) -> FastAPI:
    settings.storage_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.worker_enabled:
            _start_worker(app)
        yield
        if settings.worker_enabled:
            app.state.worker_stop.set()
            app.state.worker_thread.join(timeout=10)
        app.state.db.dispose()

    app = FastAPI(title="quantgrid hub", version=__version__, description=API_DESCRIPTION, lifespan=lifespan,
                  responses={"default": {"description": "Error", "model": _error_model()}})
    app.state.settings = settings
    app.state.db = Database(settings.database_url)
    app.state.blobs = BlobStore(settings.blob_dir)
    app.state.blobs.clean_tmp()
    app.state.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    for exc_type in (QuantGridError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, _handle)
    for path in ROUTERS:
        module, _, attr = path.partition(":")
        try:
            router = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise  # the router exists but one of its imports is missing: a real bug
            log.info("router %s not present yet; skipped", path)
            continue
        app.include_router(router)
    return app


def _error_model():
    from quantgrid.hub.schemas import ErrorBody

    return ErrorBody
