"""``create_app(settings)``: the hub's FastAPI app. State lives on ``app.state``, never in globals.

* One error handler turns every exception into ``QuantGridError.to_dict()`` JSON with the
  class's HTTP status (an error with a ``retry_after`` adds ``Retry-After``; 401 adds
  ``WWW-Authenticate: Bearer``); anything unexpected is a logged 500 with the same shape, so
  clients always get ``{"error": {"code", "message", "hint"}}``.
* An error answered before a request's body was read: for an authenticated caller the body
  is drained first (bounded by the upload limit and read timeout), so their client sees the
  answer; for anyone else the hub answers at once with ``Connection: close`` and reads nothing.
* The routers are imported by name below.
* At startup: migrations to head, garbage from a crash removed (``gc.collect``), and (unless
  ``worker_enabled`` is false) a job-worker thread started; it stops with the app.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from quantgrid import __version__
from quantgrid.errors import (
    HTTP_ERRORS,
    AuthError,
    HubError,
    PayloadTooLarge,
    QuantGridError,
    ServerError,
    Unprocessable,
)
from quantgrid.hub.server import human_eval, registry, releases, routes, web
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.deps import authenticated, drain_body, has_unread_body
from quantgrid.hub.server.ratelimit import RateLimiter
from quantgrid.hub.server.storage import open_blob_store
from quantgrid.hub.settings import HubSettings

log = logging.getLogger(__name__)

ROUTERS = (routes.router, releases.router, registry.router, human_eval.router, web.router)

API_DESCRIPTION = """\
The quantgrid hub: contributors push LoRA adapter submissions, the hub validates them with a
proof-of-loss test, merges accepted ones into weekly releases and ranks contributors.

Authenticate with `Authorization: Bearer <token>` (`quantgrid hub user add NAME` prints one).
Every error has the body `{"error": {"code": ..., "message": ..., "hint": ...}}`.
"""


def _error_response(exc: Exception, request: Request | None = None) -> JSONResponse:
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
    if getattr(err, "retry_after", None) is not None:
        headers["Retry-After"] = str(max(1, int(err.retry_after)))
    if isinstance(err, AuthError):
        presented = request is not None and request.headers.get("authorization", "").lower().startswith("bearer ")
        headers["WWW-Authenticate"] = 'Bearer realm="quantgrid"' + (', error="invalid_token"' if presented else "")
    return JSONResponse(err.to_dict(), status_code=err.http_status, headers=headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ClientDisconnect):  # nobody is listening: no log, no drain
        return _error_response(HubError("client disconnected"), request)
    close = False
    if has_unread_body(request):
        if authenticated(request) and not isinstance(exc, PayloadTooLarge):
            close = not await drain_body(request)
        else:
            close = True  # anonymous or refused at the headers: read nothing, hang up after answering
    response = _error_response(exc, request)
    if close:
        response.headers["Connection"] = "close"
    return response


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
        _startup_clean(app)
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
    app.state.blobs = open_blob_store(settings)
    app.state.limiter = RateLimiter(app.state.db, settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.state.uploads_in_flight = 0
    for exc_type in (QuantGridError, RequestValidationError, StarletteHTTPException, ClientDisconnect, Exception):
        app.add_exception_handler(exc_type, _handle)
    for router in ROUTERS:
        app.include_router(router)
    return app


def _startup_clean(app: FastAPI) -> None:
    """Remove what a crash left (temp files, staging dirs, unreferenced blobs past the grace)."""
    from quantgrid.hub.server.gc import collect
    from quantgrid.hub.server.jobs import requeue_expired

    try:
        requeue_expired(app.state.db)  # jobs of this host's dead workers go back to the queue first
        collect(app.state.settings, app.state.db, app.state.blobs)
    except QuantGridError as e:  # e.g. storage unreachable: serve anyway, pushes will say why
        log.warning("startup cleanup skipped: %s", e.message)


def _error_model():
    from quantgrid.hub.schemas import ErrorBody

    return ErrorBody
