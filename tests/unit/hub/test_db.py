"""Migrations (up, down, up again), the schema matching the models, SQLite pragmas — on SQLite
and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from quantgrid.hub.server.db import Database
from quantgrid.hub.server.models import Base

TABLES = {"users", "tokens", "submissions", "adapters", "votes", "releases", "jobs", "idempotency_keys",
          "blobs", "rate_buckets", "upload_slots"}


def _head(db: Database) -> str:
    return ScriptDirectory.from_config(db.alembic_config()).get_current_head()


def _drift(db: Database) -> list:
    with db.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_migrations_build_exactly_the_models(db_url):
    db = Database(db_url)
    try:
        assert _drift(db) == [], "models changed without a migration"
        assert TABLES | {"alembic_version"} <= set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()


def test_migrations_go_down_to_nothing_and_up_again(db_url):
    db = Database(db_url)
    try:
        with db.read() as s:
            from quantgrid.hub.server.models import User

            s.add(User(name="keep"))
            s.commit()
        cfg = db.alembic_config()
        with db.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")  # one step down: the newest tables go, the rest stay
            conn.commit()
        left = set(inspect(db.engine).get_table_names())
        assert "upload_slots" not in left and "users" in left
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["keep"]
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
            conn.commit()
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.migrate()
        assert _drift(db) == []
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head(db)
    finally:
        db.dispose()


def test_migrate_is_idempotent(db_url):
    Database(db_url).dispose()
    db = Database(db_url)  # second start: migrations find the schema at head
    try:
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head(db)
        assert db.integrity_check() == "ok"
    finally:
        db.dispose()


def test_sqlite_is_wal_with_busy_timeout(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_write_rolls_back_on_error(db_url):
    from quantgrid.hub.server.models import User

    db = Database(db_url)
    try:
        with pytest.raises(RuntimeError):
            with db.write() as s:
                s.add(User(name="ghost"))
                s.flush()
                raise RuntimeError("boom")
        with db.read() as s:
            assert s.query(User).count() == 0
    finally:
        db.dispose()
