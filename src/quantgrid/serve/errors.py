"""The server's one error path: every failure answers in the shape of the API it hit.

OpenAI routes (everything but ``/api/*``) answer ``{"error": {"message", "type", "param",
"code", "hint"}}`` so the SDKs raise their usual typed exceptions; Ollama routes answer
``{"error": "message (hint)"}`` as Ollama does. Validation failures are 400 (FastAPI's
default would be 422), unknown routes 404, unhandled exceptions 500.

Bodies are read by :func:`json_body` rather than FastAPI's body parameters: Ollama reads a
body as JSON whatever its Content-Type (the plain ``curl -d '{...}'`` of its docs sends a
form type), and a parse or validation error must reach the same handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from quantgrid.errors import ConfigError, NotFound, PayloadTooLarge, QuantGridError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=pydantic.BaseModel)
MAX_BODY_BYTES = 16 * 1024 * 1024
CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never received


class UnsupportedParameter(ConfigError):
    """A request field quantgrid does not implement; answered 400 naming the field."""

    code = "unsupported_parameter"

    def __init__(self, param: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.param = param


class InvalidRequest(ConfigError):
    code = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.param = param


def is_ollama(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def error_response(request: Request, status: int, message: str, code: str | None,
                   param: str | None = None, hint: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    if is_ollama(request):
        text = f"{param}: {message}" if param and param not in message else message
        return JSONResponse({"error": text + (f" ({hint})" if hint else "")}, status_code=status, headers=headers)
    kind = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code, "hint": hint}},
                        status_code=status, headers=headers)


def _loc(loc: tuple) -> str:
    out = ""
    for p in loc:
        if p == "body":
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QuantGridError)
    async def _qg(request: Request, exc: QuantGridError):
        code = "model_not_found" if isinstance(exc, NotFound) else exc.code
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return error_response(request, exc.http_status, exc.message, code, getattr(exc, "param", None),
                              exc.hint, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = _loc(tuple(first.get("loc", ())))
        msg = first.get("msg", "malformed body")
        if first.get("type") == "json_invalid":
            where, msg = "", f"the body is not valid JSON ({first.get('ctx', {}).get('error', msg)})"
        elif first.get("type") == "extra_forbidden":
            msg = f"Unrecognized request argument supplied: {where}"
        text = f"invalid request: {where + ': ' if where else ''}{msg}"
        return error_response(request, 400, text, "invalid_request", where or None,
                              "see docs/serving-guide.md for the fields each route takes")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            msg = f"no route {request.method} {request.url.path}"
            return error_response(request, 404, msg, "not_found", None, "see GET /v1/models, or the serving guide")
        if exc.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}"
            return error_response(request, 405, msg, "method_not_allowed")
        return error_response(request, exc.status_code, str(exc.detail), None, None, None,
                              dict(exc.headers or {}) or None)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect):
        # The client left before its body arrived: nothing to answer, nothing went wrong here.
        log.debug("client left during the body of %s", request.url.path)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, f"internal error: {type(exc).__name__}", "server_error")


def json_body(model: type[M]) -> Callable[[Request], Any]:
    """A dependency reading the body as JSON into ``model``, whatever the Content-Type."""

    async def read(request: Request) -> M:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}",
                                  hint="send a shorter prompt")
        if not raw.strip():
            raise InvalidRequest("the body is empty; send a JSON object", hint="see docs/serving-guide.md")
        try:
            return model.model_validate_json(raw)
        except pydantic.ValidationError as e:
            raise RequestValidationError(e.errors(include_url=False)) from None

    read.__name__ = f"read_{model.__name__}"
    return read
