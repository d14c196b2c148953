"""FastAPI dependencies every router uses: settings, database, blob store, the caller.

    from quantgrid.hub.server.deps import CurrentUser, OptionalUser, get_db, get_settings

    @router.get("/v1/things")
    def things(user: CurrentUser, db: Database = Depends(get_db)): ...

``CurrentUser`` authenticates the bearer token (401 otherwise) and charges the caller's
rate-limit bucket; ``OptionalUser`` serves anonymous callers too (rate-limited by IP).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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


def current_user(request: Request) -> Principal:
    limiter = request.app.state.limiter
    try:
        user = authenticate(request.app.state.db, _bearer(request))
    except AuthError:
        limiter.hit(_client_key(request))  # failed logins count against the caller's IP
        raise
    limiter.hit(f"user:{user.id}")
    return user


def optional_user(request: Request) -> Principal | None:
    if _bearer(request) is None:
        request.app.state.limiter.hit(_client_key(request))
        return None
    return current_user(request)


def admin_user(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        from quantgrid.errors import PermissionDenied

        raise PermissionDenied("this needs an admin token", hint="ask the hub admin")
    return user


CurrentUser = Annotated[Principal, Depends(current_user)]
OptionalUser = Annotated[Principal | None, Depends(optional_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]
