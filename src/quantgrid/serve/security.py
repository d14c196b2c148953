"""API key and CORS.

With an API key configured, every ``/v1/*`` and ``/api/*`` request needs
``Authorization: Bearer KEY`` (compared in constant time); ``/health``, ``/metrics`` and
``GET /`` stay open for probes. CORS is off unless origins are configured.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request

from quantgrid.errors import AuthError


async def require_api_key(request: Request) -> None:
    secret = request.app.state.qg.settings.api_key
    if secret is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("this server needs an API key", hint="send the header 'Authorization: Bearer KEY'")
    if not hmac.compare_digest(token.strip().encode(), secret.get_secret_value().encode()):
        raise AuthError("the API key is not valid", hint="use the key the server was started with")


def install_cors(app: FastAPI, origins: list[str]) -> None:
    if not origins:
        return
    from fastapi.middleware.cors import CORSMiddleware

    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["*"], expose_headers=["X-QuantGrid-Backend", "X-QuantGrid-Adapter",
                                                            "X-QuantGrid-Arm", "X-Request-Id"],
                       allow_credentials="*" not in origins)
