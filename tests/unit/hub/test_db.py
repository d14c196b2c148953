"""Migrations, SQLite pragmas, and the schema matching the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from quantgrid.hub.server.db import Database
from quantgrid.hub.server.models import Base


def test_migrations_build_exactly_the_models(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"models changed without a migration: {diff}"
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "tokens", "submissions", "adapters", "votes", "releases", "jobs", "idempotency_keys",
            "blobs", "alembic_version"} <= tables


def test_migrate_is_idempotent_and_sqlite_is_wal_with_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    Database(url).dispose()
    db = Database(url)  # second start: migrations find the schema at head
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    assert db.integrity_check() == "ok"


def test_write_rolls_back_on_error(tmp_path):
    from quantgrid.hub.server.models import User

    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        with db.write() as s:
            s.add(User(name="ghost"))
            s.flush()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with db.read() as s:
        assert s.query(User).count() == 0
