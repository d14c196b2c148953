"""Fixtures for hub unit tests: a hub app on a fresh database (SQLite, then PostgreSQL), and
users with tokens."""

from __future__ import annotations

import hashlib

import pytest

fastapi = pytest.importorskip("fastapi")

from _postgres import db_url  # noqa: E402,F401
from fastapi.testclient import TestClient  # noqa: E402

from quantgrid.hub.server import create_app  # noqa: E402
from quantgrid.hub.server.auth import add_user  # noqa: E402
from quantgrid.hub.settings import HubSettings  # noqa: E402


@pytest.fixture
def settings(tmp_path, monkeypatch, db_url) -> HubSettings:  # noqa: F811 (the fixture imported above)
    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE", "QUANTGRID_HUB_PORT"):
        monkeypatch.delenv(var, raising=False)
    return HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False, max_upload_bytes=64 * 1024,
                            db_url=db_url)


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def users(app) -> dict[str, dict[str, str]]:
    """alice, bob (contributors) and root (admin): name -> Authorization header."""
    db = app.state.db
    return {name: {"Authorization": f"Bearer {add_user(db, name, admin=name == 'root')}"}
            for name in ("alice", "bob", "root")}


def upload_headers(auth: dict, data: bytes, key: str | None = None) -> dict[str, str]:
    h = {**auth, "X-Content-SHA256": hashlib.sha256(data).hexdigest(), "Content-Type": "application/zip"}
    if key is not None:
        h["Idempotency-Key"] = key
    return h


@pytest.fixture
def hub(tiny_base, tmp_path, monkeypatch):
    """(settings, app, client, tokens) of a hub on the tiny base that validates for real, with its
    worker off (tests run the jobs one at a time), and users alice and bob."""
    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE"):
        monkeypatch.delenv(var, raising=False)
    settings = HubSettings.load(storage_dir=tmp_path / "hub", worker_enabled=False, benchmark_size=16,
                                recipe={"base_model": tiny_base}, max_upload_bytes=8 << 20)
    app = create_app(settings)
    with TestClient(app) as client:
        tokens = {n: {"Authorization": f"Bearer {add_user(app.state.db, n)}"} for n in ("alice", "bob")}
        yield settings, app, client, tokens
