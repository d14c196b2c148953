"""Engine, sessions and migrations. SQLite by default (WAL + busy timeout); PostgreSQL by URL.

    db = Database(settings.database_url)   # runs Alembic migrations to head
    with db.write() as s:                  # BEGIN IMMEDIATE on SQLite: no lock-upgrade deadlocks
        s.add(...)
    with db.read() as s:
        s.scalars(select(...))
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from quantgrid.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_MIGRATE_LOCK = threading.Lock()


def _sqlite_pragmas(engine: Engine, *, durable: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # A committed submission survives power loss; bookkeeping that may be lost (rate-limit
        # buckets) commits without waiting for the disk.
        cur.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # A write transaction takes the write lock up front. A deferred one that reads then
        # writes fails at once with SQLITE_BUSY when another writer got there first.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """Owns the engine and two session factories (read / write). One per app, on ``app.state``."""

    def __init__(self, url: str, *, migrate: bool = True):
        try:
            parsed = make_url(url)
        except Exception as e:
            raise ConfigError(f"not a database URL: {url!r} ({e})",
                              hint="use sqlite:////abs/path/hub.db or postgresql+psycopg://user@host/db") from None
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict = {"future": True}
        if self.is_sqlite:
            db_path = parsed.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _sqlite_pragmas(self.engine)
            # Connections of their own, so the non-durable pragma never reaches durable writes.
            self._fast_engine = create_engine(url, **kwargs)
            _sqlite_pragmas(self._fast_engine, durable=False)
        else:
            self._fast_engine = self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False)
        self._fast_write = sessionmaker(self._fast_engine.execution_options(sqlite_immediate=True),
                                        expire_on_commit=False)
        if migrate:
            self.migrate()

    # ---- sessions ----
    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as s:
            yield s

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error.

        ``durable=False`` is for state that may be lost in a power cut (rate-limit buckets): the
        commit does not wait for the disk (SQLite ``synchronous=OFF``, PostgreSQL
        ``synchronous_commit=off``). It is still atomic and isolated."""
        with (self._write if durable else self._fast_write)() as s, s.begin():
            if not durable and not self.is_sqlite:
                s.execute(text("SET LOCAL synchronous_commit TO OFF"))
            yield s

    # ---- schema ----
    def alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (idempotent; runs at every start)."""
        from alembic import command

        cfg = self.alembic_config()
        # Alembic's context is a module global: one migration at a time per process. Across
        # processes (a hub and its workers starting together) the write lock taken up front
        # (SQLite BEGIN IMMEDIATE, a PostgreSQL advisory lock) makes the second one wait, then
        # find the schema at head.
        with _MIGRATE_LOCK, self.engine.execution_options(sqlite_immediate=True).connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(715517)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()

    def integrity_check(self) -> str:
        """``ok`` or SQLite's list of problems (PostgreSQL: always ``ok``)."""
        if not self.is_sqlite:
            return "ok"
        with self.engine.connect() as conn:
            rows = conn.execute(text("PRAGMA integrity_check")).scalars().all()
        return "\n".join(str(r) for r in rows)

    def dispose(self) -> None:
        self.engine.dispose()
        self._fast_engine.dispose()
