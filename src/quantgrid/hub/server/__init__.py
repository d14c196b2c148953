"""The hub server: ``create_app(settings)`` builds the FastAPI app (see ``app.py``).

Modules: ``models`` (tables), ``db`` (engine, sessions, migrations), ``auth`` (users, hashed
tokens), ``storage`` (content-addressed blobs), ``jobs`` (DB job queue + worker),
``submissions`` (idempotent create, lifecycle, verdict), ``leaderboard`` (ranking, votes),
``ratelimit``, ``deps`` (FastAPI dependencies), ``routes`` (the /v1 API).
"""

from __future__ import annotations


def create_app(settings):
    """Build the hub's FastAPI app for ``settings`` (a HubSettings)."""
    from quantgrid.hub.server.app import create_app as _create_app

    return _create_app(settings)


__all__ = ["create_app"]
