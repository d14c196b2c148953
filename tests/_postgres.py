"""PostgreSQL for the hub's tests: the server `scripts/postgres.sh start` runs (its URL in
``QUANTGRID_TEST_POSTGRES_URL``), and a fresh database per test.

    from _postgres import db_url  # noqa: F401  (the fixture: "sqlite:///..." then "postgresql+psycopg://...")

Without the URL the PostgreSQL variants are skipped on a developer's machine; under CI
(``CI=true``) a missing URL is a failure, so CI can never pass without having run them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_ENV = "QUANTGRID_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def require_postgres() -> str:
    url = admin_url()
    if url:
        return url
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{POSTGRES_ENV} is not set under CI: .ci/run starts PostgreSQL with scripts/postgres.sh")
    pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (eval \"$(bash scripts/postgres.sh start)\")")


@contextlib.contextmanager
def fresh_database(server_url: str | None = None) -> Iterator[str]:
    """A new, empty database on ``server_url`` (default: the test server); dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(server_url or require_postgres())
    name = f"qg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def database_url(backend: str, tmp_path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        with fresh_database() as url:
            yield url


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> Iterator[str]:
    """A database URL for each backend the hub supports (an empty database each time)."""
    with database_url(request.param, tmp_path) as url:
        yield url
