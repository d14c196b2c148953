"""FastAPI dependencies every router uses: settings, database, blob store, the caller.

    from quantgrid.hub.server.deps import CurrentUser, OptionalUser, get_db, get_settings

    @router.get("/v1/things")
    def things(user: CurrentUser, db: Database = Depends(get_db)): ...

``CurrentUser`` authenticates the bearer token (401 otherwise) and charges the caller's
rate-limit bucket; ``OptionalUser`` serves anonymous callers too (rate-limited by IP). Both
read headers only: a request's body is never touched before its caller is known.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from quantgrid.errors import AuthError
from quantgrid.hub.server.auth import Principal, authenticate
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.storage import BlobStore
from quantgrid.hub.settings import HubSettings


def get_settings(request: Request) -> HubSettings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _client_key(request: Request) -> str:
    return f"ip:{request.client.host if request.client else 'unknown'}"


async def authenticate_charged(request: Request, token: str | None) -> Principal:
    """The token's user, charging the rate limit: a failed login counts against the IP, a request
    against the user. Every way in (bearer header, the web pages' cookie and login form) uses it."""
    limiter = request.app.state.limiter
    try:
        user = await run_in_threadpool(authenticate, request.app.state.db, token)
    except AuthError:
        await run_in_threadpool(limiter.hit, _client_key(request))
        raise
    await run_in_threadpool(limiter.hit, f"user:{user.id}")
    return user


async def current_user(request: Request) -> Principal:
    user = await authenticate_charged(request, _bearer(request))
    request.state.user = user
    return user


async def optional_user(request: Request) -> Principal | None:
    if _bearer(request) is None:
        await run_in_threadpool(request.app.state.limiter.hit, _client_key(request))
        return None
    return await current_user(request)


def authenticated(request: Request) -> bool:
    return getattr(request.state, "user", None) is not None


def has_unread_body(request: Request) -> bool:
    """True if the request has a body that was not read to its end (so the connection is dirty)."""
    if getattr(request.state, "body_read", False):
        return not getattr(request.state, "body_complete", False)
    length = request.headers.get("content-length", "")
    return (length.isdigit() and int(length) > 0) or "chunked" in request.headers.get("transfer-encoding", "")


async def read_chunks(request: Request, timeout_s: float):
    """The body's chunks, with a read timeout: a client silent for ``timeout_s`` gets 408."""
    from quantgrid.hub.server.uploads import UploadTimeout

    request.state.body_read = True
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout_s)
        except StopAsyncIteration:
            request.state.body_complete = True
            return
        except asyncio.TimeoutError:
            raise UploadTimeout(f"the upload sent nothing for {timeout_s:g} s and was cut off",
                                hint="check the connection and push again") from None
        yield chunk


async def drain_body(request: Request) -> bool:
    """Read and drop an unread body (up to the upload limit, with the read timeout) before
    answering early, so a client still streaming sees the answer instead of a closed socket.
    False if it was not drained (too large, timed out, client gone): then close the connection."""
    if not has_unread_body(request):
        return True
    if getattr(request.state, "body_read", False):
        return False  # stopped halfway (timeout, too large): the rest is not worth waiting for
    settings = request.app.state.settings
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > settings.max_upload_bytes:
        return False
    try:
        async for _ in read_chunks(request, settings.upload_read_timeout_seconds):
            pass
    except Exception:  # timed out, the client went away, or the body was already consumed
        return False
    return True


def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        from quantgrid.errors import PermissionDenied

        raise PermissionDenied("this needs an admin token", hint="ask the hub admin")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
OptionalUser = Annotated[Principal | None, Depends(optional_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
